"""The compiled training step under FSDP2 (``Trainer(strategy="fsdp")``): compiled regions + a sharded update.

Why not the single-device capture (:mod:`trainer.compile.capture`): it traces the whole step with ``make_fx``
over plain tensors. Under FSDP2 the parameters are DTensor shards, and what makes them usable is FSDP2's
hooks: the all-gather before a unit's forward, the reshard after it, the all-gather again before its backward
and the reduce-scatter of its gradients after it, with ``set_requires_gradient_sync(False)`` keeping
unsharded gradients on non-final accumulation micro-steps. In torch 2.13 those hooks are
``torch._dynamo.disable``-d, so no tracer sees through them; a capture of our own with the collectives in
the graph (SimpleFSDP-style) would hold every full parameter at once, which is what FSDP exists to avoid.

So the step is compiled the way torchtitan compiles it, per region, with FSDP2's own hooks between regions:

* **forward + backward, per region** (``torch.compile`` with inductor): the ``forward`` of every FSDP unit
  below the root (the modules ``auto_wrap_policy``/``min_num_params`` made units: typically a transformer
  block) and the LightningModule's own ``forward``. A unit's ``__call__`` still runs FSDP2's pre/post hooks
  eagerly around its compiled ``forward``; AOT autograd compiles each region's backward, and FSDP2's
  backward hooks (all-gather, reduce-scatter) run between the compiled backward regions. Inside the
  LightningModule's ``forward`` every call to a unit is a graph break (the hooks), so the code between
  units (embeddings, heads, residual glue) is compiled in its own pieces. ``training_step`` itself (the loss
  and ``self.log``) stays eager, as do non-unit ``torch.nn`` containers between units.
  The compiled ``forward``s are installed on the modules for the training step only (and removed after it):
  validation, ``copy.deepcopy`` and pickling see the plain modules.
* **the optimizer update: ONE compiled graph over the local shards**: torch.optim's update for every
  parameter, traced by :func:`trainer.compile.capture.capture_update` over the parameters' local tensors
  (``DTensor._local_tensor``), the gradients' local tensors (reduce-scattered by FSDP2) and the local
  tensors of torch.optim's own state (``exp_avg``... are DTensors shaped like the parameters; ``step`` is a
  plain tensor), fused by the ``optimizer_fusion`` pass into one multi-tensor call and compiled by inductor.
  The update is elementwise, so running it over the shards is exactly the sharded torch.optim update; the
  state stays torch.optim's objects, so ``state_dict``, full or sharded (``torch.distributed.checkpoint``)
  checkpoints and resume are the eager FSDP path's, unchanged. ``lr`` is an input tensor (schedulers never
  recompile).
* everything else is the eager engine's, unchanged: the closure (training_step -> zero_grad -> backward),
  every hook, accumulation (the strategy's ``block_backward_sync`` = ``set_requires_gradient_sync(False)``
  on non-final micro-steps: no reduce-scatter there), and clipping (``clip_grad_norm_`` over the DTensor
  gradients: the global norm over all shards, one all-reduce) before the compiled update reads the clipped
  gradients.

``trainer.compile_report``: ``mode == "fsdp"``; ``graphs_built`` counts the inductor graphs (each compiled
region's forward, its backward when built, and the update graph), ``graph_keys`` names them, and
``compile_seconds`` is the time spent in AOT autograd + inductor (dynamo's bytecode tracing is not counted);
``recompiles`` counts a region compiled again after a finished step for inputs it already had a graph for
(a new batch shape is a new graph, not a recompile) and the update graph rebuilt for new hyperparameters.

``CompileConfig(passes=/disable=)``: of the passes only ``optimizer_fusion`` runs here (on the update graph;
``passes_applied`` names it when it changed the graph). Accumulation, gradient synchronisation
(FSDP2's reduce-scatter), fp16 loss scaling and clipping are the eager engine's machinery under FSDP
whatever the pass list says, so leaving those passes out changes nothing.

Fallback (one warning naming the cause; ``compile="strict"`` raises): ``detect_anomaly``; a failure while
compiling the first step (the batch reruns in the eager engine: both engines issue the same FSDP2
collectives, so a rank that falls back alone still matches its peers); a region compiled for more than
``CompileConfig.max_graphs`` batch shapes (after that step). An optimizer the update graph does not cover
(see ``CompiledEngine._update_reason``; also ``16-mixed``, whose GradScaler decides whether ``step()`` runs)
keeps the compiled regions and runs torch.optim's ``step()`` (``fallback_reason`` says so,
``update_compiled`` is False).

Accuracy and speed against the eager FSDP path: benchmarks/RESULTS.md ("Compiled FSDP").

Limits: the compiled regions are FSDP units and the glue between them, never one graph for the whole step
(FSDP2's hooks are graph breaks); a unit called inside a Python loop in ``forward`` (``for block in
self.blocks``) makes dynamo skip that ``forward``'s glue (``compile_report.fallback_reason`` names such regions);
clipping is the eager engine's (global norm, DTensor ops), not folded into the update; the gradients the hooks
see are FSDP2's DTensors, as in eager.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from trainer.compile.capture import Layout
from trainer.compile.passes import Variant
from trainer.compile.report import Tier
from trainer.hooks import is_overridden
from trainer.loops.optimization import _Closure

if TYPE_CHECKING:  # pragma: no cover
    from trainer.compile.engine import CompiledEngine
    from trainer.loops.optimization import AutomaticOptimization

MODE = Tier.FSDP


def _local(t: Tensor) -> Tensor:
    """A DTensor's local shard (the tensor its in-place ops write to); a plain tensor itself."""
    return getattr(t, "_local_tensor", t)


class _Region:
    """One module whose ``forward`` is compiled for the training step."""

    __slots__ = ("module", "name", "compiled", "graphs", "pieces", "sigs")

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        self.compiled: Optional[Callable] = None
        self.graphs = 0  # dynamo graphs built for it (0 after a step: it ran eagerly)
        self.pieces = 0  # graphs per batch shape (graph breaks at FSDP units split a forward), after step 1
        self.sigs: set = set()  # the input signatures (shapes, dtypes) of the graphs built for it


class ShardedStep:
    """The FSDP step of a :class:`~trainer.compile.engine.CompiledEngine` (installed by :func:`setup_sharded`)."""

    def __init__(self, engine: "CompiledEngine", optimizer: Any) -> None:
        self.engine = engine
        self.trainer = engine.trainer
        self.report = engine.report
        self.opt = optimizer
        self.regions: List[_Region] = []
        self.params: List[Tensor] = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        self.group_of: List[int] = [gi for gi, g in enumerate(optimizer.param_groups) for p in g["params"]
                                    if p.requires_grad]
        self.update_fn: Optional[Callable] = None
        self.layout: Optional[Layout] = None
        self._lr_cache: List[float] = []
        self._hp_cache: List[Tuple] = []
        self._in_backend = 0
        self._too_many: Optional[str] = None  # a region that hit CompileConfig.max_graphs
        self._ok_steps = 0
        self._update_ok = False  # the optimizer update runs as the compiled graph (else torch.optim's step())

    # ------------------------------------------------------------------ compiled regions (forward + backward)
    def _backend(self, region: _Region) -> Callable:
        """inductor, counted and timed for ``compile_report``: one graph per dynamo graph of the region (its
        forward and its backward; AOT autograd may compile the backward lazily, at the first backward, which
        ``inner`` times then)."""
        from torch._inductor import config as inductor_config
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner

        from trainer.compile.engine import isa_probe_memo
        from trainer.compile.reads_before_writes import realize_reads_before_writes

        report = self.report

        def inner(gm: Any, example: Any, **kwargs: Any) -> Any:
            if self._in_backend:
                return compile_fx_inner(gm, example, **kwargs)
            t0 = time.perf_counter()
            try:
                with isa_probe_memo(), realize_reads_before_writes():  # a backward compiled at the first backward
                    return compile_fx_inner(gm, example, **kwargs)
            finally:
                report.compile_seconds += time.perf_counter() - t0

        def backend(gm: Any, example: Any) -> Any:
            if region.graphs >= self.engine.config.max_graphs * max(1, region.pieces):
                # a new batch shape every few steps: each would compile again (seconds on CPU). This step runs
                # the traced graph uncompiled; after it the engine falls back to eager (run() checks the flag)
                self._too_many = region.name
                return gm.forward
            t0 = time.perf_counter()
            self._in_backend += 1
            region.graphs += 1
            report.graphs_built += 1
            report.graph_keys.append(f"{region.name}#{region.graphs}")
            # a new batch shape is a new graph; the same inputs compiled again after a finished step mean a
            # guard on something else failed (a module attribute, grad mode...): a recompile
            sig = tuple((tuple(t.shape), t.dtype) if isinstance(t, Tensor) else type(t) for t in example)
            if self._ok_steps and sig in region.sigs:
                report.recompiles += 1
            region.sigs.add(sig)
            try:
                # see engine._inductor_compile: round bf16/fp16 intermediates where eager rounds them
                with inductor_config.patch(emulate_precision_casts=True), isa_probe_memo(), \
                        realize_reads_before_writes():
                    return compile_fx(gm, example, inner_compile=inner)
            finally:
                self._in_backend -= 1
                report.compile_seconds += time.perf_counter() - t0

        return backend

    def _find_regions(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        module = self.trainer.lightning_module
        candidates: List[Tuple[str, nn.Module]] = [
            (name, m) for name, m in module.named_modules() if m is not module and isinstance(m, FSDPModule)]
        if is_overridden("forward", module, parent=_lightning_module_cls()):
            candidates.append((type(module).__name__ + ".forward", module))
        for name, m in candidates:
            if "forward" in m.__dict__:  # the user set an instance forward: leave it alone
                continue
            region = _Region(m, name or type(m).__name__)
            region.compiled = torch.compile(m.forward, backend=self._backend(region), dynamic=False)
            self.regions.append(region)

    @contextmanager
    def _compiled_forwards(self) -> Iterator[None]:
        """The compiled ``forward``s, installed for one training step (instance attributes shadow the class's
        ``forward``: FSDP2's hooks in ``__call__`` still run around them)."""
        regions = self.regions
        for r in regions:
            r.module.__dict__["forward"] = r.compiled
        try:
            yield
        finally:
            for r in regions:
                r.module.__dict__.pop("forward", None)

    # ------------------------------------------------------------------ the update over local shards
    def _states(self) -> Dict[str, List[Optional[Tensor]]]:
        """torch.optim's state tensors (created as its first ``step()`` would), each DTensor as its local shard.

        Read every step: ``load_state_dict`` (resume) and FSDP2's state-dict hooks replace these tensors."""
        from trainer.compile.engine import init_adam_state, place_adam_step

        opt = self.opt
        layout = self.layout
        assert layout is not None
        states: Dict[str, List[Optional[Tensor]]] = {key: [] for key in layout.state_keys}
        adam = layout.opt_kind == "adam"
        for p, gi in zip(self.params, self.group_of):
            group = opt.param_groups[gi]
            st = opt.state[p]
            if adam:
                init_adam_state(st, p, group)
                place_adam_step(st, p)
                for key in layout.state_keys:
                    t = st.get(key) if (key != "max_exp_avg_sq" or group["amsgrad"]) else None
                    states[key].append(None if t is None else _local(t))
            else:
                if group["momentum"] != 0 and st.get("momentum_buffer") is None:
                    # torch starts the buffer at a copy of the first gradient; 0*m + g == g (dampening is 0)
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                states["momentum_buffer"].append(_local(st["momentum_buffer"]) if group["momentum"] != 0 else None)
        return states

    def _setup_update(self) -> None:
        from trainer.compile.engine import _ADAM_KEYS, _SGD_KEYS

        opt = self.opt
        adam = not isinstance(opt, torch.optim.SGD)
        layout = Layout(param_names=[str(i) for i in range(len(self.params))],
                        params=[_local(p.detach()) for p in self.params], group_of=self.group_of, other_names=[],
                        others=[], buffer_names=[], buffers=[], opt_kind="adam" if adam else "sgd")
        layout.state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step") if adam else ("momentum_buffer",)
        for group in opt.param_groups:
            hp = {key: group[key] for key in (_ADAM_KEYS if adam else _SGD_KEYS)}
            if adam:
                hp["decoupled"] = isinstance(opt, torch.optim.AdamW)
            layout.hparams.append(hp)
            dev = _local(group["params"][0]).device if group["params"] else torch.device("cpu")
            layout.lrs.append(torch.tensor(float(group["lr"]), dtype=torch.float32, device=dev))
        self.layout = layout
        self._lr_cache = [float(g["lr"]) for g in opt.param_groups]
        self._hp_cache = [self._hp_key(g) for g in opt.param_groups]

    def _hp_key(self, group: Dict[str, Any]) -> Tuple:
        from trainer.compile.engine import _ADAM_KEYS, _SGD_KEYS

        return tuple(group[key] for key in (_SGD_KEYS if isinstance(self.opt, torch.optim.SGD) else _ADAM_KEYS))

    def _refresh_hparams(self) -> None:
        layout = self.layout
        assert layout is not None
        for i, g in enumerate(self.opt.param_groups):
            if g["lr"] != self._lr_cache[i]:
                layout.lrs[i].fill_(float(g["lr"]))
                self._lr_cache[i] = g["lr"]
            if self._hp_key(g) != self._hp_cache[i]:  # baked into the graph: build it again
                self._setup_update()
                self.update_fn = None
                self.report.recompiles += 1
                return

    def _build_update(self, params: List[Tensor], grads: List[Tensor], states: Dict[str, List[Optional[Tensor]]]) -> None:
        from trainer.compile.capture import capture_update
        from trainer.compile.engine import _inductor_compile
        from trainer.compile.passes import StepConfig, run_passes
        from trainer.optim import compiled_update_uses_ext

        layout = self.layout
        assert layout is not None
        layout.params, layout.states = params, states
        t0 = time.perf_counter()
        gm, example = capture_update(layout, grads)
        use_cpp = compiled_update_uses_ext({p.device.type for p in params})
        config = self.engine.config
        names = tuple(p for p in config.active_passes if p == "optimizer_fusion")
        applied: List[str] = []
        gm = run_passes(gm, example, StepConfig(variant=Variant.UPDATE, use_cpp=use_cpp), names, config.debug_dir,
                        tag="fsdp_update", applied=applied)
        self.update_fn = _inductor_compile(gm, example)
        self.report.compile_seconds += time.perf_counter() - t0
        self.report.graphs_built += 1
        self.report.graph_keys.append(str(Variant.UPDATE))
        self.report.passes_applied = applied  # the regions run no pass (FSDP2 and the eager closure do the rest)
        self.report.update_compiled = True

    def optimizer_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """``optimizer.step(closure)`` for the final micro-step: the closure (compiled regions, eager hooks,
        clipping) runs first, then the compiled update over this rank's shards."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        opt, params = self.opt, self.params
        grads = [p.grad for p in params]
        if any(g is None or g.is_sparse or g.dtype != p.dtype for g, p in zip(grads, params)):
            type(opt).step(opt)  # torch.optim skips params without a gradient: let it (state stays torch's)
            return loss
        if self.layout is None:
            self._setup_update()
        self._refresh_hparams()
        layout = self.layout
        assert layout is not None
        local_params = [_local(p.detach()) for p in params]
        local_grads = [_local(g) for g in grads]
        states = self._states()
        if self.update_fn is None:
            self._build_update(local_params, local_grads, states)
        flat_states = [t for key in layout.state_keys for t in states[key] if t is not None]
        with torch.no_grad():
            self.update_fn(*local_params, *local_grads, *flat_states, *layout.lrs)
        opt._opt_called = True  # LR schedulers check that optimizer.step ran
        return loss

    # ------------------------------------------------------------------ one batch
    def run(self, loop: "AutomaticOptimization", batch_idx: int, args: tuple,
            should_accumulate: bool) -> Optional[Dict[str, Any]]:
        trainer = self.trainer
        zero_grad = batch_idx % trainer.accumulate_grad_batches == 0
        closure = _Closure(loop, args, trainer.strategy._lightning_optimizers[0], zero_grad)
        loop._batch_idx = batch_idx
        try:
            with self._compiled_forwards():
                if should_accumulate:
                    with trainer.strategy.block_backward_sync():  # FSDP2: no reduce-scatter on micro-steps
                        closure()
                elif self._update_ok:
                    from trainer.compile.engine import optimizer_step_with

                    optimizer_step_with(loop, batch_idx, closure, self.opt, self.optimizer_step)
                else:
                    loop._optimizer_step(batch_idx, closure)
        except Exception as e:
            if self._ok_steps or not _is_compile_error(e):
                raise
            # the first step failed to compile, before any update: FSDP2 reshards, the eager engine reruns it
            _reshard(trainer)
            inner = getattr(e, "inner_exception", None) or e  # dynamo's BackendCompilerFailed wraps the cause
            first = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
            self.engine._fail(f"compiling the FSDP step failed: {type(inner).__name__}: {first}")
            return None
        if self._too_many is not None:
            self.engine._fail(f"the batch shapes keep changing (`{self._too_many}` compiled for"
                              f" {self.engine.config.max_graphs} shapes, the limit `CompileConfig.max_graphs`); each"
                              " new shape would compile again")
        elif not self._ok_steps:
            self._note_eager_regions()
            for r in self.regions:
                r.pieces = r.graphs
        self._ok_steps += 1
        self.report.steps_run += 1
        result = closure.result
        if result is None or result.loss is None:
            return {}
        return result.asdict()

    def _note_eager_regions(self) -> None:
        """Regions dynamo made no graph of run eagerly: say so (never silently slow)."""
        eager = [r.name for r in self.regions if not r.graphs]
        if not eager:
            return
        note = (f"no graph for {', '.join(eager)} (eager: dynamo skipped the frame, e.g. a graph break at an FSDP"
                " unit called inside a Python loop, or there is no tensor op outside the units)")
        report = self.report
        report.fallback_reason = f"{report.fallback_reason}; {note}" if report.fallback_reason else note


def _lightning_module_cls() -> type:
    from trainer.module import LightningModule

    return LightningModule


def _is_compile_error(e: BaseException) -> bool:
    """An error raised by dynamo/AOT autograd/inductor (not by the user's code, which eager would raise too)."""
    mod = type(e).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor", "torch._functorch", "torch.fx"))


def _reshard(trainer: Any) -> None:
    from torch.distributed.fsdp import FSDPModule

    model = trainer.strategy.model
    if model is None:
        return
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def setup_sharded(engine: "CompiledEngine", optimizer: Any, batch_idx: int = 0) -> None:
    """Sets ``engine`` up to run the FSDP step (or falls back with the cause); called by ``engine._setup``."""
    trainer = engine.trainer
    if trainer._detect_anomaly:
        return engine._fail("detect_anomaly=True needs the eager autograd engine")
    step = ShardedStep(engine, optimizer)
    step._find_regions()
    reason = engine._update_reason(optimizer, trainer.precision, step.params)
    if reason is None and trainer.precision == "16-mixed":
        reason = "16-mixed: GradScaler's unscale/skip runs torch.optim's step()"
    step._update_ok = reason is None
    engine.tier = MODE
    engine.report.mode = MODE
    if reason is not None:
        engine.report.fallback_reason = f"optimizer update eager under FSDP (compiled regions only): {reason}"
    if not step.regions:
        return engine._fail("no module to compile under FSDP (no unit below the root and no LightningModule.forward)")
    # the engine's k-change check reads layout.accumulate; the rest of the engine's layout is unused here
    engine.layout = Layout(param_names=[], params=[], group_of=[], other_names=[], others=[], buffer_names=[],
                           buffers=[], opt_kind=None, accumulate=trainer.accumulate_grad_batches)
    engine._opt = optimizer
    engine._sharded = step  # engine.run hands every batch of the "fsdp" tier to step.run


__all__ = ["MODE", "ShardedStep", "setup_sharded"]
