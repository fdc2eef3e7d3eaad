"""The compiled step engine: picks a tier once per fit, builds graphs per batch signature, runs them.

Tiers, decided at the first training step of a fit (reason recorded in ``compile_report``):

- ``full``: forward, loss, backward, accumulation, clipping and the optimizer update in one graph
  per variant (``step`` for k=1; ``micro``/``final`` under accumulation). Nothing of the step
  runs in Python but input assembly, an lr refresh and the ``self.log`` replay.
- ``fwd_bwd``: a hook that must see real tensors inside the step is overridden
  (``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``,
  ``configure_gradient_clipping``, ``optimizer_step``, ``optimizer_zero_grad``; module or
  callback), or the optimizer/precision is not one the update graph covers, or a semantic pass
  is left out (``CompileConfig(passes=/disable=)``) while this fit uses its feature (clipping,
  accumulation, fp16 loss scaling, DDP gradient averaging): forward+backward
  are one compiled graph whose gradients land in ``.grad``, and the eager engine's closure
  machinery runs every hook and the clipping with real tensors. When the optimizer is one the
  update graph covers, ``optimizer.step()`` itself is replaced (for that call) by a second
  compiled graph, the fused update over ``.grad`` (``compile_report.update_compiled``);
  otherwise torch's ``step()`` runs.
- ``eager``: the capture failed (a graph break, a Python side effect), the compiler failed, a
  guarded Python value keeps changing, or the configuration is out of scope: one warning naming
  the cause (``compile="strict"`` raises) and the eager engine from then on.

Every graph carries the guards of the Python state its capture read (:mod:`trainer.compile.guards`),
checked before each call and before any of the step's work: when one fails the tier is set up and
the step captured again (``compile_report.recompiles``/``recompile_reasons``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten

from trainer.compile import CompileConfig, CompileError, allocator
from trainer.compile.capture import Captured, CaptureError, Layout, TensorSources, capture
from trainer.compile.passes import StepConfig, Variant, run_passes
from trainer.compile.reads_before_writes import cache_key_pass, realize_reads_before_writes
from trainer.compile.report import CompileReport, Tier
from trainer.hooks import is_overridden
from trainer.loops.optimization import ClosureResult, _Closure

if TYPE_CHECKING:  # pragma: no cover
    from trainer.loops.optimization import AutomaticOptimization
    from trainer.trainer import Trainer


class CompileWarning(UserWarning):
    """The compiled engine fell back to the eager engine (the message names the cause)."""


_SPLIT_MODULE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step",
                       "configure_gradient_clipping", "optimizer_step", "optimizer_zero_grad")
_SPLIT_CALLBACK_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
_ADAM_KEYS = ("betas", "eps", "weight_decay", "amsgrad", "maximize")
_SGD_KEYS = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")


def _param_groups_signature(opt: Any) -> Tuple[int, ...]:
    """How many tensors each param group holds: a finetuning callback's ``add_param_group`` changes it."""
    return tuple(len(g["params"]) for g in opt.param_groups)


class _GuardFailed(Exception):
    """A Python value the step's graph was built with changed (``why``: the failed guard; ``source``:
    (owner, attribute, name) when it is a float attribute that could be a graph input)."""

    def __init__(self, why: str, source: Optional[Tuple[Any, str, str]] = None) -> None:
        super().__init__(why)
        self.why = why
        self.source = source


_NO_REGION = contextlib.nullcontext()


def _region(name: str) -> Any:
    """A ``record_function`` around a compiled graph's call while a profiler records (``Trainer(profiler=
    "pytorch")``): the trace shows the step as its graphs, ``[trainer][compiled]<variant>``; otherwise nothing."""
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(f"[trainer][compiled]{name}")
    return _NO_REGION


class _Graph:
    __slots__ = ("fn", "cap", "alloc", "free")

    def __init__(self, fn: Callable, cap: Captured, alloc: Any = None) -> None:
        self.fn = fn
        self.cap = cap
        self.alloc = alloc  # trainer._C when the graph's buffers come from the step allocator
        guard = cap.guard if cap is not None else None
        self.free = guard.free if guard is not None else []  # tensors read outside params/buffers/batch

    def tail(self, lifted: List[Tensor]) -> List[Tensor]:
        """The graph's last inputs: the lifted floats' tensors, then the free tensors found now."""
        if not self.free:
            return lifted
        return [*lifted, *[f.get() for f in self.free]]


def _inductor_compile(gm: Any, example_inputs: List[Any]) -> Callable:
    """:func:`_compile_graph`; a failure of the compiler (inductor, its C++ or Triton codegen) is a
    :class:`CaptureError` naming it: the step falls back to eager with one warning instead of ending
    the fit (``compile="strict"`` raises)."""
    try:
        return _compile_graph(gm, example_inputs)
    except CaptureError:
        raise
    except Exception as e:
        text = str(e).strip()
        raise CompilerFailed(f"the compiler failed on the captured step ({type(e).__name__}:"
                             f" {text.splitlines()[0] if text else ''})") from e


class CompilerFailed(CaptureError):
    """Inductor (or its C++/Triton codegen) failed on a captured graph: the regions tier would hand
    the same code to the same compiler, so the step runs eagerly."""


def _compile_graph(gm: Any, example_inputs: List[Any]) -> Callable:
    """inductor's compile_fx under a TracingContext whose fake mode has a ShapeEnv: without one the
    FX graph cache and the AOT autograd cache bypass every graph ('No shape env') and each fit pays
    full codegen + C++ compile again. The inputs are fakeified here with static shapes (the engine
    keys graphs on shapes itself); left to AOT autograd under a ShapeEnv they would get symbolic
    sizes (dynamic kernels, and a KeyError in its float-tensorify pass on ``mse_loss``)."""
    from torch._guards import TracingContext, tracing
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    fake_mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True)
    fakes = [fake_mode.from_tensor(t, static_shapes=True) if isinstance(t, Tensor) else t for t in example_inputs]
    # emulate_precision_casts: round bf16/fp16 intermediates where eager rounds them (inductor keeps
    # them in fp32 by default); without it a bf16 AdamW+clip run drifted from the eager engine by a
    # full Adam step on a near-zero gradient element (tests/test_numerics.py, TRAINER_COMPILE=1)
    from torch._inductor import config as inductor_config

    # CPU compile choices that measured faster than inductor's defaults (trainer/compile/lowering.py)
    from trainer.compile import lowering

    gm = _python_calls_inlined(gm, fakes, fake_mode)
    cpu = all(t.device.type == "cpu" for t in example_inputs if isinstance(t, Tensor))
    patches: Dict[str, Any] = {"emulate_precision_casts": True}
    if inductor_config.post_grad_custom_pre_pass is None:
        patches["post_grad_custom_pre_pass"] = cache_key_pass()
    if cpu and inductor_config.post_grad_custom_post_pass is None:
        patches["post_grad_custom_post_pass"] = lowering.post_grad_pass()
    if cpu:
        lowering.rewrite(gm)
        # random ops as ATen calls on torch's default generator, in the graph's order: the eager masks,
        # bit for bit (inductor's own CPU random draws other bits; with several dropouts, as in BERT, the
        # compiled run drifted 0.6 % from Lightning's in two steps)
        patches["fallback_random"] = True
    with torch.no_grad(), tracing(TracingContext(fake_mode)), inductor_config.patch(patches), isa_probe_memo(), \
            realize_reads_before_writes():
        return compile_fx(gm, fakes, decompositions=lowering.decompositions() if cpu else None)


def _python_calls_inlined(gm: Any, fakes: List[Any], fake_mode: Any) -> Any:
    """``gm`` with every call of a Python function (the passes' unfused fallbacks: a foreach update, a
    gradient norm, ``found_inf``) replaced by the ATen ops it runs, traced again with ``make_fx``. AOT
    autograd's cache keys a graph by its ops and refuses any other callable ("Unsupported call_function
    target"): each new process would trace and compile the step again. Only ATen ops, ``operator``
    functions and higher-order ops left: ``gm`` itself."""
    from torch._ops import HigherOrderOperator, OpOverload, OpOverloadPacket
    from torch.fx.experimental.proxy_tensor import make_fx

    def keyable(target: Any) -> bool:
        return isinstance(target, (OpOverload, OpOverloadPacket, HigherOrderOperator)) or \
            getattr(target, "__module__", None) in ("operator", "_operator")

    if all(n.op != "call_function" or keyable(n.target) for n in gm.graph.nodes):
        return gm
    with fake_mode:
        return make_fx(gm)(*fakes)


def _memo_dir() -> str:
    root = os.environ.get("TRAINER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "trainer")
    return root


@contextlib.contextmanager
def isa_probe_memo() -> Iterator[None]:
    """Inside it, inductor's CPU vector-ISA checks are remembered across processes (a per-machine fact).

    Only the engine's own compiles run inside it: a user's ``torch.compile`` elsewhere in the process
    sees inductor as it ships. Nested uses are fine (each restores what it found).

    Before the first CPU kernel of every process, inductor decides which SIMD ISAs work by
    compiling a probe library per ISA with gcc and dlopen-ing each in a *child Python*
    (``VecISA.check_build``): measured 9.6 s of a 20 s cold compile and ~3 s of a 5 s warm start
    on this 2-core machine (the libraries live in the inductor cache dir, the child processes run
    every time). The answer depends on the probe source, the ISA's flags, the compiler, torch and
    the CPU, so it is kept in ``$TRAINER_CACHE_DIR`` (default ``~/.cache/trainer``) under a key of
    exactly those; anything else (a new torch, another CPU, an unreadable file) probes again.
    """
    patches = _isa_patches()
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, fn in patches:
        setattr(obj, name, fn)
    try:
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


@functools.lru_cache(maxsize=None)
def _isa_patches() -> Tuple[Tuple[Any, str, Any], ...]:
    """(object, attribute, replacement) for :func:`isa_probe_memo`; empty where inductor differs."""
    try:
        from torch._inductor import cpu_vec_isa
    except ImportError:  # pragma: no cover
        return ()
    original = getattr(cpu_vec_isa.VecISA, "check_build", None)
    if original is None:  # another torch version: leave inductor alone
        return ()

    def check_build(self: Any, code: str) -> bool:
        import hashlib
        import platform

        try:
            flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n", 1)[0] if sys.platform.startswith(
                "linux") else platform.processor()
        except (OSError, IndexError):
            flags = platform.processor()
        from torch._inductor.cpp_builder import get_cpp_compiler

        cxx = get_cpp_compiler()
        key = hashlib.sha256("|".join((
            code, str(self), self.build_arch_flags(), torch.__version__, sys.executable, cxx, flags,
            platform.machine(), os.environ.get("LD_LIBRARY_PATH", ""),
        )).encode()).hexdigest()[:32]
        path = os.path.join(_memo_dir(), "vec_isa", key + ".json")
        try:
            with open(path) as f:
                return bool(json.load(f)["ok"])
        except (OSError, ValueError, KeyError):
            pass
        ok = bool(original(self, code))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"ok": ok, "isa": str(self)}, f)
            os.replace(tmp, path)
        except OSError:
            pass
        return ok

    patches: List[Tuple[Any, str, Any]] = [(cpu_vec_isa.VecISA, "check_build", check_build)]

    # Only the first working ISA of inductor's priority list is ever used (pick_vec_isa returns
    # valid_vec_isa_list()[0] unless cpp.simdlen or ATEN_CPU_CAPABILITY ask for another one), but
    # the list probes every candidate: 10 probe builds for AMX/AVX-512/AVX2 here. Stop at the first
    # one that works in that default case (same pick, ~4 builds on a new machine).
    original_list = getattr(cpu_vec_isa, "valid_vec_isa_list", None)
    supported = getattr(cpu_vec_isa, "supported_vec_isa_list", None)
    checker = getattr(cpu_vec_isa, "x86_isa_checker", None)
    if original_list is None or supported is None or checker is None:
        return tuple(patches)
    import platform

    @functools.cache
    def first_valid() -> list:
        flags = checker()
        for isa in supported:
            if all(flag in flags for flag in str(isa).split()) and isa:
                return [isa]
        return []

    def valid_vec_isa_list() -> list:
        from torch._inductor import config as inductor_config

        if (inductor_config.cpp.simdlen is None and not os.getenv("ATEN_CPU_CAPABILITY")
                and sys.platform.startswith("linux") and platform.machine() == "x86_64"):
            return first_valid()
        return original_list()

    patches.append((cpu_vec_isa, "valid_vec_isa_list", valid_vec_isa_list))
    return tuple(patches)


class CompiledEngine:
    def __init__(self, trainer: "Trainer", config: CompileConfig, report: CompileReport) -> None:
        self.trainer = trainer
        self.config = config
        self.report = report
        report.enabled = True
        self.tier: Optional[Tier] = None
        self._retried_first = False  # the first capture failed, one step ran eagerly, the capture was retried
        self._differentiates_twice = False  # that eager step ran a backward with create_graph=True
        self.layout: Optional[Layout] = None
        self._prefix: List[Tensor] = []
        self._graphs: Dict[Any, _Graph] = {}
        # StepGuard per (batch signature, step arguments, lifted floats): the variants of one call (micro,
        # final) share its dynamo trace; dropped with the graphs (a failed guard traces again)
        self._guards: Dict[Any, Any] = {}
        self._keys_built: set = set()  # graph keys built in this fit: building one again is a recompile
        self._applied: set = set()  # passes that changed a graph of this fit (compile_report.passes_applied)
        self._lr_cache: List[Any] = []
        self._hp_cache: List[Tuple] = []
        self._use_cpp = False
        self._graph_backend = None  # cudagraphs' capture backend, made on the first recorded graph
        self._opt: Any = None
        self._groups_sig: Tuple[int, ...] = ()
        self._sources: Optional[TensorSources] = None  # the full/fwd_bwd graphs' tensors, checked every step
        self._usources: Optional[TensorSources] = None  # the update graph's
        self._scaler_cfg: Optional[Tuple[float, float, int]] = None
        self._update_graph = False  # fwd_bwd tier: optimizer.step() replaced by a compiled update graph
        self._sync: Optional[Tuple[str, int, int]] = None  # DDP: (group name, world size, bucket bytes)
        self._ddp: Any = None  # DDP: the DistributedDataParallel wrapper (buffer broadcast)
        self._sharded: Any = None  # FSDP: trainer.compile.sharded.ShardedStep (tier "fsdp")
        self._cudagraphs = False  # CompileConfig(cudagraphs=True) and the step can be recorded
        self._alloc: Any = None  # trainer._C while the CPU step allocator serves the step graphs
        self._attention = False  # trace short-sequence attention with trainer's CPU kernels
        self._ulayout: Optional[Layout] = None
        self._update_prefix: Tuple[List[Tensor], List[Tensor]] = ([], [])
        self._guard_rebuilds = 0  # set-ups again because a guarded Python value changed (this fit)
        self._guard_fail_step = -2  # steps_run at the last guard failure
        self._guard_quick = 0  # guard failures in a row, each one step after the last
        self._lifted: List[Any] = []  # trainer.compile.guards.Lifted: floats changing every step, graph inputs
        self._lifted_tensors: List[Tensor] = []
        self._lift_tried: set = set()

    # ------------------------------------------------------------------ tier selection
    def _fail(self, cause: str) -> None:
        if self.config.strict:
            raise CompileError(f"Trainer(compile='strict'): the training step cannot be compiled: {cause}")
        self.tier = self.report.mode = Tier.EAGER
        self.report.fallback_reason = cause
        warnings.warn(f"trainer.compile: running the eager engine instead: {cause}", CompileWarning, stacklevel=2)
        self._restore_grads()

    def _sync_accs(self) -> None:
        """The window's buffers are the params' ``.grad``; whoever replaced ``.grad`` since the last
        step (``on_validation_model_zero_grad`` before a mid-window validation sets it to None,
        as Lightning does; a user's ``zero_grad``) decides what the window holds, as in eager."""
        layout = self.layout
        for p, acc in zip(layout.params, layout.accs):
            g = p.grad
            if g is acc:
                continue
            if g is None:
                acc.zero_()
            else:
                acc.copy_(g)
            p.grad = acc

    def _restore_grads(self) -> None:
        # a window interrupted mid-accumulation continues in eager: hand over what was accumulated
        layout = self.layout
        if layout is None or not layout.accs:
            return
        with torch.no_grad():
            for p, acc in zip(layout.params, layout.accs):
                if p.grad is acc:  # .grad already is the window's buffer
                    continue
                if bool(acc.any()):
                    p.grad = acc.clone() if p.grad is None else p.grad.add_(acc)

    def _setup(self, optimizer: Any, batch_idx: int = 0) -> None:  # noqa: C901
        setup_compiled = getattr(self.trainer.strategy, "setup_compiled_step", None)
        if setup_compiled is not None:  # the strategy compiles its own step (FSDP: trainer/compile/sharded.py)
            return setup_compiled(self, optimizer, batch_idx)
        trainer = self.trainer
        module = trainer.lightning_module
        precision = trainer.precision
        strategy = trainer.strategy
        self._sync, self._ddp = None, None
        if type(strategy).__name__ in ("DDPStrategy", "DDPSpawnStrategy"):
            cause = self._setup_ddp(strategy, module)
            if cause:
                return self._fail(cause)
        elif type(strategy).__name__ != "SingleDeviceStrategy":
            return self._fail(f"strategy {type(strategy).__name__} is not supported by the compiled engine")
        if trainer._detect_anomaly:
            return self._fail("detect_anomaly=True needs the eager autograd engine")
        if is_overridden("backward", module):
            return self._fail(f"`{type(module).__name__}.backward` is overridden (a custom backward call cannot be"
                              " captured)")
        named = dict(module.named_parameters())
        name_of = {id(p): n for n, p in named.items()}
        opt = optimizer
        self._opt = opt
        self._groups_sig = _param_groups_signature(opt)
        trainable, group_of = [], []
        for gi, group in enumerate(opt.param_groups):
            for p in group["params"]:
                if id(p) not in name_of:
                    return self._fail("the optimizer holds tensors that are not parameters of the LightningModule")
                if p.requires_grad:
                    trainable.append(p)
                    group_of.append(gi)
        tids = {id(p) for p in trainable}
        others = [(n, p) for n, p in named.items() if id(p) not in tids]
        buffers = list(module.named_buffers())
        split = self._split_reason(module, opt, precision, trainable)
        if not split:
            split = self._missing_pass_reason()
        self.tier = Tier.FWD_BWD if split else Tier.FULL
        self.report.mode = self.tier
        if split:
            self.report.fallback_reason = f"step split (fwd+bwd compiled, rest eager): {split}"
        k = trainer.accumulate_grad_batches  # the capture differentiates loss / k in both tiers
        layout = Layout(
            param_names=[name_of[id(p)] for p in trainable], params=trainable, group_of=group_of,
            other_names=[n for n, _ in others], others=[p for _, p in others],
            buffer_names=[n for n, _ in buffers], buffers=[b for _, b in buffers], opt_kind=None, accumulate=k,
        )
        # fwd_bwd: the update still runs as a graph (after the hooks) when the optimizer allows it
        self._update_graph = self.tier is Tier.FWD_BWD and self._update_reason(opt, precision, trainable) is None
        self._cudagraphs = False
        if self.config.cudagraphs:
            cause = self._cudagraph_reason(trainable)
            self.report.cudagraph_reason = cause
            self._cudagraphs = cause is None
        if self.tier is Tier.FULL:
            self._setup_optimizer(layout, opt)
            if k > 1:
                # The window's buffers ARE the parameters' .grad: a checkpoint written mid-window
                # saves them (exact resume), and a run resumed mid-window starts from them.
                mid_window = batch_idx % k != 0
                layout.accs = []
                for p in trainable:
                    acc = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if mid_window and p.grad is not None:
                        acc.copy_(p.grad)
                    p.grad = acc
                    layout.accs.append(acc)
        scaler = getattr(trainer.precision_plugin, "scaler", None) if precision == "16-mixed" else None
        if scaler is not None:
            # the graph scales the loss, unscales in the update and updates the scaler itself, on the
            # GradScaler's own tensors: its state_dict() and checkpoints stay the eager engine's
            dev = trainable[0].device if trainable else torch.device("cpu")
            if scaler._scale is None:
                scaler._lazy_init_scale_growth_tracker(dev)
            layout.scaler = (scaler._scale, scaler._growth_tracker)
            self._scaler_cfg = (float(scaler._growth_factor), float(scaler._backoff_factor),
                                int(scaler._growth_interval))
        self.layout = layout
        self._prefix = layout.prefix()
        self._sources = self._tensor_sources(layout, opt if self.tier is Tier.FULL else None)
        if self._cudagraphs:
            from trainer.compile import cudagraphs

            cause = cudagraphs.cuda_graph_reason(self._prefix)
            if cause is not None:
                self._cudagraphs = False
                self.report.cudagraph_reason = cause
        from trainer.optim import compiled_update_uses_ext

        dev = trainable[0].device.type if trainable else "cpu"
        self._use_cpp = compiled_update_uses_ext({p.device.type for p in trainable} or {"cpu"})
        self._alloc = None
        if dev == "cpu" and self.config.cpu_caching_allocator:
            self._alloc = allocator.module()
        if dev == "cpu" and self.config.cpu_attention:
            from trainer.compile import attention

            self._attention = attention.available()

    def _cudagraph_reason(self, trainable: List[Tensor]) -> Optional[str]:
        """Why the step graphs cannot be recorded as CUDA graphs (None: they can)."""
        if self.tier is not Tier.FULL:
            return f"the step is split into graphs and eager hooks ({self.report.fallback_reason})"
        if self._sync is not None:
            return "DDP: the gradient all-reduce is part of the step graph (collectives are not recorded)"
        if not trainable:
            return "no trainable parameters"
        return None  # the devices of every input are checked once the layout is built

    def _setup_ddp(self, strategy: Any, module: Any) -> Optional[str]:
        """DDP: the gradients are all-reduced inside the step graph (``passes/gradient_sync.py``);
        DistributedDataParallel stays the owner of the process group and of the buffer broadcast."""
        if strategy._ddp_comm_hook is not None:
            return "a DDP communication hook (`ddp_comm_hook`) runs inside DDP's reducer, which the compiled step bypasses"
        for name, m in module.named_modules():
            if isinstance(m, torch.nn.SyncBatchNorm):
                return (f"`{name}` is a SyncBatchNorm (sync_batchnorm=True): its forward all-gathers statistics, which"
                        " the capture cannot trace")
        ddp = strategy.model
        if strategy.world_size <= 1 or not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            return None
        cap_mb = strategy._ddp_kwargs.get("bucket_cap_mb") or 25
        self._sync = (ddp.process_group.group_name, int(strategy.world_size), int(cap_mb * 1024 * 1024))
        self._ddp = ddp
        return None

    def _sync_buffers(self) -> None:
        """What ``DistributedDataParallel.forward`` does with buffers before a forward (broadcast_buffers)."""
        ddp = self._ddp
        if ddp._check_sync_bufs_pre_fwd():
            ddp._sync_buffers()

    def _split_reason(self, module: Any, opt: Any, precision: str, trainable: List[Tensor]) -> Optional[str]:
        for h in _SPLIT_MODULE_HOOKS:
            if is_overridden(h, module):
                return f"`{type(module).__name__}.{h}` is overridden"
        for h in _SPLIT_CALLBACK_HOOKS:
            cbs = self.trainer._hooks.callbacks_for(h)
            if cbs:
                return f"callback {type(cbs[0]).__name__} overrides `{h}`"
        return self._update_reason(opt, precision, trainable)

    def _missing_pass_reason(self) -> Optional[str]:
        """A semantic pass left out (``CompileConfig(passes=..., disable=...)``) while this fit uses the
        feature it implements: a full-tier graph would silently skip the feature (no clipping, an update
        every micro-batch, scaled fp16 gradients, ranks that drift apart). The split tier does each of
        them outside the graph, as the eager engine does (the eager closure's accumulation into ``.grad``,
        ``_allreduce_grads``, the precision plugin's GradScaler, its clipping), so the step goes there.
        None: every feature in use has its pass (or the feature is not in use)."""
        trainer = self.trainer
        config = self.config
        active = config.active_passes
        k = trainer.accumulate_grad_batches
        scaler = getattr(trainer.precision_plugin, "scaler", None) if trainer.precision == "16-mixed" else None
        uses = (
            ("accumulation", k > 1, lambda: f"accumulate_grad_batches={k}"),
            ("gradient_sync", self._sync is not None,
             lambda: f"the strategy is DDP over {self._sync[1]} processes"),  # type: ignore[index]
            ("amp", scaler is not None, lambda: "precision='16-mixed' (GradScaler loss scaling)"),
            ("clipping", bool(trainer.gradient_clip_val), lambda: f"gradient_clip_val={trainer.gradient_clip_val}"),
        )
        for name, used, what in uses:
            if used and name not in active:
                how = ("disabled (CompileConfig(disable=...))" if name in config.disable
                       else "not in CompileConfig(passes=...)")
                return f"pass {name!r} is {how} while {what()}"
        return None

    def _update_reason(self, opt: Any, precision: str, trainable: List[Tensor]) -> Optional[str]:
        """Why the optimizer update cannot be a graph (None: it can)."""
        if precision not in ("32-true", "bf16-mixed", "16-mixed"):
            return f"precision={precision!r}: the update graph covers fp32 parameters only"
        if type(opt) not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
            return f"optimizer {type(opt).__name__} has no in-graph update (its eager step() runs)"
        if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
            return "the optimizer has step hooks"
        for g in opt.param_groups:
            if g.get("differentiable") or g.get("capturable"):
                return "optimizer groups with differentiable=True or capturable=True"
            if isinstance(opt, torch.optim.SGD) and g["momentum"] != 0 and g["dampening"] != 0:
                return "SGD with dampening != 0"
            if any(isinstance(g.get(key), Tensor) for key in ("betas", "weight_decay", "momentum", "eps")):
                return "tensor-valued hyperparameters other than lr"
        if any(p.dtype != torch.float32 for p in trainable):
            return "the update graph covers fp32 parameters only"
        if not trainable:
            return "no trainable parameters"
        return None

    def _tensor_sources(self, layout: Layout, opt: Any, hooks: bool = True) -> TensorSources:
        """Where the tensors of ``layout`` (and, with ``opt``, their optimizer state) come from now;
        ``hooks``: its graphs compute gradients (a gradient hook registered later is a change)."""
        names = {id(t): n for n, t in zip(layout.param_names, layout.params)}
        names.update((id(t), n) for n, t in zip(layout.other_names, layout.others))
        names.update((id(t), n) for n, t in zip(layout.buffer_names, layout.buffers))
        return TensorSources(self.trainer.lightning_module, names, opt, layout.params, layout.state_keys, hooks)

    def _setup_optimizer(self, layout: Layout, opt: Any) -> None:
        adam = not isinstance(opt, torch.optim.SGD)
        layout.opt_kind = "adam" if adam else "sgd"
        layout.state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step") if adam else ("momentum_buffer",)
        layout.states = {key: [] for key in layout.state_keys}
        for gi, group in enumerate(opt.param_groups):
            hp = {key: group[key] for key in (_ADAM_KEYS if adam else _SGD_KEYS)}
            if adam:
                hp["decoupled"] = isinstance(opt, torch.optim.AdamW)
            layout.hparams.append(hp)
            lr = group["lr"]
            dev = group["params"][0].device if group["params"] else torch.device("cpu")
            layout.lrs.append(torch.tensor(float(lr), dtype=torch.float32, device=dev))
        for p, gi in zip(layout.params, layout.group_of):
            group = opt.param_groups[gi]
            if adam:
                st = opt.state[p]  # a defaultdict: touching it creates the entry, as Adam's step does
                init_adam_state(st, p, group)
                place_adam_step(st, p)
                for key in layout.state_keys:
                    layout.states[key].append(st.get(key) if (key != "max_exp_avg_sq" or group["amsgrad"]) else None)
            elif group["momentum"] != 0:
                st = opt.state[p]
                if st.get("momentum_buffer") is None:
                    # torch starts the buffer at a copy of the first gradient; 0*m + g == g (dampening is 0)
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                layout.states["momentum_buffer"].append(st["momentum_buffer"])
            else:  # torch's SGD keeps no state (not even an empty entry) without momentum
                layout.states["momentum_buffer"].append(None)
        self._lr_cache = [float(g["lr"]) for g in opt.param_groups]
        self._hp_cache = [self._hp_key(g) for g in opt.param_groups]

    def _hp_key(self, group: Dict[str, Any]) -> Tuple:
        keys = _SGD_KEYS if isinstance(self._opt, torch.optim.SGD) else _ADAM_KEYS
        return tuple(group[key] for key in keys)

    def _drop_unused_state(self, cap: Captured) -> None:
        layout = self.layout
        opt = self._opt
        for i in cap.unused:
            st = opt.state.get(layout.params[i])
            if st is not None and not any(isinstance(v, Tensor) and v.ndim and bool(v.any()) for v in st.values()):
                opt.state.pop(layout.params[i], None)
        self._sources = self._tensor_sources(layout, opt)  # the entries dropped here are not a change

    # ------------------------------------------------------------------ graphs
    def _build(self, key: Any, variant: Variant, batch: Any, step_args: tuple) -> _Graph:
        trainer = self.trainer
        module = trainer.lightning_module
        layout = self.layout
        assert layout is not None
        t0 = time.perf_counter()
        try:
            gkey = (key[1], key[2], tuple(id(x) for x in self._lifted))
            cap = capture(module, layout, batch, step_args, trainer.precision_plugin.train_step_context, variant,
                          cpu_attention=self._attention, lifted=self._lifted, guard=self._guards.get(gkey))
            self._guards[gkey] = cap.guard
        except CaptureError as e:
            if not self._lifted:
                raise
            names = ", ".join(f"`{x.name}`" for x in self._lifted)
            raise CaptureError(f"{names} changes at every step and cannot be a graph input: {e.cause}") from e
        cfg = StepConfig(variant=variant, accumulate=layout.accumulate, clip_val=trainer.gradient_clip_val,
                         clip_algorithm=trainer.gradient_clip_algorithm or "norm", precision=trainer.precision,
                         use_cpp=self._use_cpp, scaler=self._scaler_cfg if layout.scaler is not None else None,
                         sync=self._sync)
        names = tuple(p for p in self.config.active_passes if p != "gradient_sync" or self._sync is not None)
        if variant is Variant.FWD_BWD:
            names = tuple(p for p in names if p == "amp")
        applied: List[str] = []
        gm = run_passes(cap.gm, cap.example_inputs, cfg, names, self.config.debug_dir, tag=f"{variant}{len(self._graphs)}",
                        applied=applied)
        if variant is not Variant.FWD_BWD and "amp" not in names:
            self._check_update_dtypes(gm)
        if self._sync is not None and variant.updates:
            # issue each bucket's all-reduce as early as its gradients allow and wait as late as possible
            # (inductor otherwise fuses the bucket copies into later kernels and issues them at the end)
            from torch._inductor import config as inductor_config

            with inductor_config.patch(reorder_for_compute_comm_overlap=True,
                                       reorder_for_compute_comm_overlap_passes=["raise_comms", "sink_waits"]):
                fn = _inductor_compile(gm, cap.example_inputs)
        else:
            fn = _inductor_compile(gm, cap.example_inputs)
        if self._cudagraphs and variant is not Variant.FWD_BWD:
            from trainer.compile import cudagraphs

            report = self.report

            def captured() -> None:
                report.cudagraph_captures += 1

            def failed(reason: str) -> None:
                report.cudagraph_reason = reason

            if self._graph_backend is None:  # one per engine: its graphs share one memory pool
                self._graph_backend = cudagraphs.make_backend()
            fn = cudagraphs.GraphReplay(fn, len(self._prefix), warmup=self.config.cudagraph_warmup,
                                        backend=self._graph_backend, on_capture=captured, on_failure=failed)
        if variant is not Variant.FWD_BWD and cap.unused:
            self._drop_unused_state(cap)
        self.report.compile_seconds += time.perf_counter() - t0
        self._count_graph(key, applied)
        self.report.graph_keys.append(f"{variant}:{key[1]}")
        cap.gm = gm
        # the caching allocator only where the graph has buffers it would serve (the tiny, overhead-
        # bound steps skip even the two flag switches)
        graph = _Graph(fn, cap, self._alloc if self._alloc is not None and allocator.has_large_buffer(gm) else None)
        self._graphs[key] = graph
        return graph

    def _count_graph(self, key: Any, applied: List[str]) -> None:
        """compile_report: one graph more; a recompile when this key had a graph before (dropped because
        something baked into it changed); the passes that changed it."""
        report = self.report
        report.graphs_built += 1
        if key in self._keys_built:
            report.recompiles += 1
        self._keys_built.add(key)
        self._applied.update(applied)
        report.passes_applied = [p for p in self.config.passes if p in self._applied]

    @staticmethod
    def _check_update_dtypes(gm: Any) -> None:
        """Without the ``amp`` pass nothing casts a gradient to its parameter's dtype before the update:
        a mismatch (none is known with fp32 parameters, the only ones the full tier updates) must not
        reach an update kernel."""
        from trainer.compile.passes import update_nodes

        for node in update_nodes(gm.graph):
            p_val, g = node.args[0].meta.get("val"), node.args[1]
            g_val = g.meta.get("val") if hasattr(g, "meta") else None
            if p_val is not None and g_val is not None and g_val.dtype != p_val.dtype:
                raise CaptureError(f"pass 'amp' is left out (CompileConfig(passes=/disable=)) while a {g_val.dtype} gradient"
                                   f" reaches the update of a {p_val.dtype} parameter")

    def _graph_for(self, variant: Variant, batch: Any, step_args: tuple) -> Tuple[_Graph, List[Tensor]]:
        leaves, spec = tree_flatten(batch)
        tensors = [v for v in leaves if isinstance(v, Tensor)]
        sig = tuple((tuple(v.shape), v.dtype, v.device) if isinstance(v, Tensor) else (type(v), v) for v in leaves)
        key = (variant, (spec, sig), len(step_args))  # batch_idx: read only where a guard checks it
        graph = self._graphs.get(key)
        if graph is None:
            built = sum(1 for k in self._graphs if k[0] == variant)
            if built >= self.config.max_graphs:
                raise CaptureError(f"the batch shapes keep changing ({built} graphs built for `{variant}`, the limit"
                                   " `CompileConfig.max_graphs`); each new shape would compile again")
            graph = self._build(key, variant, batch, step_args)
        return graph, tensors

    def _refresh_hparams(self, layout: Optional[Layout] = None) -> None:
        """lr is an input tensor refreshed in place: a scheduler never recompiles; other changes do."""
        layout = layout or self.layout
        groups = self._opt.param_groups
        for i, g in enumerate(groups):
            lr = g["lr"]
            if lr != self._lr_cache[i]:
                layout.lrs[i].fill_(float(lr))
                self._lr_cache[i] = lr
            if self._hp_key(g) != self._hp_cache[i]:
                self._hp_cache = [self._hp_key(gr) for gr in groups]
                for gi, gr in enumerate(groups):
                    layout.hparams[gi].update({key: gr[key] for key in self._hp_key_names()})
                # baked hyperparameters changed: rebuild the graphs that update (counted as recompiles);
                # the fwd_bwd tier's forward+backward graphs hold no hyperparameter
                if layout is self._ulayout:
                    self._graphs.pop((Variant.UPDATE,), None)
                else:
                    self._graphs.clear()
                break

    def _hp_key_names(self) -> Tuple[str, ...]:
        return _SGD_KEYS if isinstance(self._opt, torch.optim.SGD) else _ADAM_KEYS

    # ------------------------------------------------------------------ fwd_bwd: the update graph
    def _compiled_opt_step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """``optimizer.step(closure)`` of the fwd_bwd tier: the closure (compiled fwd+bwd and the
        eager hooks) runs first, then one compiled graph updates every parameter from ``.grad``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        opt, params = self._opt, self.layout.params
        grads = [p.grad for p in params]
        if any(g is None or g.is_sparse or g.dtype != p.dtype for g, p in zip(grads, params)):
            type(opt).step(opt)  # torch.optim skips params without a gradient: let it (state stays torch's)
            return loss
        layout = self._ulayout
        if layout is not None and self._usources.moved() is not None:  # `.data` assigned, state loaded again
            self._graphs.pop((Variant.UPDATE,), None)
            layout = self._ulayout = None
        if layout is None:  # first update: torch.optim's state, created as its first step() would
            # a Layout of its own: the fwd+bwd graphs' inputs must not change under them
            layout = self._ulayout = Layout(param_names=self.layout.param_names, params=params,
                                            group_of=self.layout.group_of, other_names=[], others=[],
                                            buffer_names=[], buffers=[], opt_kind=None)
            self._setup_optimizer(layout, opt)
            self._usources = self._tensor_sources(layout, opt, hooks=False)
        self._refresh_hparams(layout)
        graph = self._graphs.get((Variant.UPDATE,))
        if graph is None:
            graph = self._build_update(grads)
        prefix = self._update_prefix
        with _region(Variant.UPDATE):
            graph.fn(*prefix[0], *grads, *prefix[1])
        opt._opt_called = True  # LR schedulers check that optimizer.step ran
        return loss


    def _build_update(self, grads: List[Tensor]) -> _Graph:
        from trainer.compile.capture import capture_update

        layout = self._ulayout
        t0 = time.perf_counter()
        gm, example = capture_update(layout, grads)
        cfg = StepConfig(variant=Variant.UPDATE, use_cpp=self._use_cpp)
        applied: List[str] = []
        gm = run_passes(gm, example, cfg, tuple(p for p in self.config.active_passes if p == "optimizer_fusion"),
                        self.config.debug_dir, tag=f"update{len(self._graphs)}", applied=applied)
        fn = _inductor_compile(gm, example)
        n = len(layout.params)
        states = example[2 * n:len(example) - len(layout.lrs)]
        self._update_prefix = ([p.detach() for p in layout.params], list(states) + list(layout.lrs))
        self.report.compile_seconds += time.perf_counter() - t0
        self._count_graph((Variant.UPDATE,), applied)
        self.report.graph_keys.append(str(Variant.UPDATE))
        self.report.update_compiled = True
        graph = _Graph(fn, None)  # type: ignore[arg-type]
        self._graphs[(Variant.UPDATE,)] = graph
        return graph

    # ------------------------------------------------------------------ running
    def _replay_logs(self, cap: Captured, outs: Any) -> None:
        if not cap.log_calls:
            return
        module = self.trainer.lightning_module
        prev = module._current_fx_name
        object.__setattr__(module, "_current_fx_name", "training_step")
        try:
            for name, src, args, kwargs in cap.log_calls:
                if isinstance(src, tuple):
                    value = src[1] if src[0] == "const" else getattr(self._lifted[src[1]].owner,
                                                                     self._lifted[src[1]].attr)
                else:
                    value = outs[src]
                module.log(name, value, *args, **kwargs)
        finally:
            object.__setattr__(module, "_current_fx_name", prev)

    def _extras(self, cap: Captured, outs: Any) -> Dict[str, Any]:
        return {key: (src[1] if isinstance(src, tuple) else outs[src]) for key, src in cap.extra_keys}

    def run(self, loop: "AutomaticOptimization", optimizer: Any, batch_idx: int, args: tuple,
            should_accumulate: bool) -> Optional[Dict[str, Any]]:
        """Runs one batch compiled; None means 'run the eager engine' (fallback)."""
        if self.tier is not None and self.tier is not Tier.EAGER and (
                self.trainer.accumulate_grad_batches != self.layout.accumulate):
            # k changed (GradientAccumulationScheduler, at an epoch start): the graphs differentiate
            # loss / k and own k-sized windows: set up again (a graph built again for a key that had one
            # counts as a recompile)
            self._drop_graphs()
            self.tier, self.layout, self._ulayout = None, None, None
        if self.tier in (Tier.FULL, Tier.FWD_BWD):
            changed = self._inputs_changed()
            if changed is not None:  # the graphs update the tensors they were set up with: as a failed guard
                self._rebuild_after(changed)
        if self.tier is None:
            self._setup(optimizer, batch_idx)
            if self.config.cudagraphs and not self._cudagraphs and self.report.cudagraph_reason is None:
                self.report.cudagraph_reason = (
                    f"the step runs as tier {self.tier!r} ({self.report.fallback_reason})" if self.tier is not Tier.FSDP
                    else "FSDP: the step is several graphs around FSDP's collectives")
        if self.tier is Tier.EAGER:
            return None
        if self.tier is Tier.REGIONS:
            return self._run_regions(loop, batch_idx, args, should_accumulate)
        try:
            if self.tier is Tier.FULL:
                return self._run_full(loop, batch_idx, args, should_accumulate)
            if self.tier is Tier.FSDP:  # trainer/compile/sharded.py
                return self._sharded.run(loop, batch_idx, args, should_accumulate)
            return self._run_split(loop, batch_idx, args, should_accumulate)
        except CaptureError as e:
            return self._capture_failed(e, loop, batch_idx, args, should_accumulate)
        except _GuardFailed as e:
            if not self._rebuild_after(e.why, e.source):
                return self._run_regions(loop, batch_idx, args, should_accumulate) if self.tier is Tier.REGIONS else None
            return self.run(loop, optimizer, batch_idx, args, should_accumulate)

    def _capture_failed(self, e: CaptureError, loop: "AutomaticOptimization", batch_idx: int, args: tuple,
                        should_accumulate: bool) -> Optional[Dict[str, Any]]:
        """The step is not one graph (``e``): one eager step and a second try at the first step, else
        compiled regions, else the eager engine (None)."""
        if not isinstance(e, CompilerFailed) and not self._retried_first and self.tier in (Tier.FULL, Tier.FWD_BWD) \
                and self.report.steps_run == 0:
            # a first step that does something once (transformers sets `config.problem_type` at the first
            # call) may be one graph from its second call on: this batch runs eagerly, the next is captured
            # again (and compiled regions, if it comes to them, skip the `*_once` logging calls done by now)
            self._retried_first = True
            self._set_up_again()
            self.report.recompile_reasons.append(f"captured again after one eager step: {e.cause}")
            return self._watched_eager_step(loop, batch_idx, args, should_accumulate)
        if not isinstance(e, CompilerFailed) and self._differentiates_twice:
            self._fail(f"{e.cause}; compiled regions cannot run it either: the step differentiates twice"
                       " (a backward with create_graph=True, e.g. torch.autograd.grad for a gradient penalty),"
                       " which AOTAutograd's compiled regions do not support")
            return None
        if not isinstance(e, CompilerFailed) and self._enter_regions(e.cause):
            return self._run_regions(loop, batch_idx, args, should_accumulate)
        self._fail(e.cause)
        return None

    def _watched_eager_step(self, loop: "AutomaticOptimization", batch_idx: int, args: tuple,
                            should_accumulate: bool) -> Dict[str, Any]:
        """The eager engine's batch, watched for a backward that builds a graph of its own
        (``create_graph=True``): a saved tensor unpacked with grad mode on. Compiled regions would
        crash on its second backward (AOTAutograd has no double backward), so such a step runs eagerly."""
        def unpacked(t: Any) -> Any:
            if torch.is_grad_enabled():
                self._differentiates_twice = True
            return t

        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpacked):
            return loop.run_eager(batch_idx, args, should_accumulate)

    def _inputs_changed(self) -> Optional[str]:
        """Why the set-up's tensors are no longer the ones the step reads and updates, or None: a param
        group added mid-fit (BaseFinetuning.unfreeze_and_add_param_group), a parameter, buffer or
        optimizer state replaced (:class:`~trainer.compile.capture.TensorSources`)."""
        if self._groups_sig != _param_groups_signature(self._opt):
            return "the optimizer's param groups changed"
        return self._sources.moved() if self._sources is not None else None

    def _set_up_again(self) -> None:
        """Drop the graphs and the set-up (a window's gradients handed back to ``.grad``): the next
        step sets up and captures again."""
        self._restore_grads()
        self._drop_graphs()
        self.tier, self.layout, self._ulayout = None, None, None

    def _drop_graphs(self) -> None:
        self._graphs.clear()
        self._guards.clear()

    # ------------------------------------------------------------------ regions: partial capture
    def _enter_regions(self, cause: str) -> bool:
        """The step is not one graph (``cause``): run it as regions between graph breaks
        (:mod:`trainer.compile.regions`) when this set-up allows; False: the eager engine instead."""
        config = self.config
        if not config.regions or config.strict or self.tier not in (Tier.FULL, Tier.FWD_BWD) or self._ddp is not None \
                or self.layout is None:
            return False
        from trainer.compile.regions import RegionStep

        self._restore_grads()
        layout = self.layout
        layout.accs = []  # the eager closure accumulates into .grad (the window's buffers stay .grad)
        self._drop_graphs()
        self._ulayout = None
        self.tier = Tier.REGIONS
        report = self.report
        report.mode = Tier.REGIONS
        report.fallback_reason = f"the step is compiled regions between graph breaks: {cause}"
        self._regions = RegionStep(self.trainer.lightning_module, report, once_done=self._retried_first)
        trainer = self.trainer
        self._update_graph = self._update_reason(self._opt, trainer.precision, layout.params) is None
        from trainer.utilities.rank_zero import rank_zero_info

        rank_zero_info(f"trainer.compile: the training step runs as compiled regions ({cause})")
        return True

    def _run_regions(self, loop: "AutomaticOptimization", batch_idx: int, args: tuple,
                     should_accumulate: bool) -> Dict[str, Any]:
        """The eager engine's batch (hooks, closure, backward, clipping) with ``training_step`` run as
        compiled regions and, where the optimizer allows, the update as the compiled update graph."""
        update = self._update_graph and not should_accumulate
        with self._regions.installed(), shadowed_step(self._opt, self._compiled_opt_step if update else None):
            out = loop.run_eager(batch_idx, args, should_accumulate)
        self.report.steps_run += 1
        return out

    def _rebuild_after(self, why: str, source: Optional[Tuple[Any, str, str]] = None) -> bool:
        """A guard failed before anything of this step ran: set up and capture again (the layout too: a
        guard on ``requires_grad`` changes which parameters train). A float attribute that changed on
        two steps in a row becomes a graph input (:class:`trainer.compile.guards.Lifted`); any other
        value that changes at every step, or more than ``CompileConfig.max_recompiles`` changes in a
        fit, sends the step to compiled regions (or eager, with one warning naming the value). False: the
        step left the whole-graph tiers."""
        steps = self.report.steps_run
        self._guard_quick = self._guard_quick + 1 if steps - self._guard_fail_step <= 1 else 0
        self._guard_fail_step = steps
        self._guard_rebuilds += 1
        if self._guard_quick == 1 and source is not None and (id(source[0]), source[1]) not in self._lift_tried:
            from trainer.compile.guards import Lifted

            owner, attr, name = source
            self._lift_tried.add((id(owner), attr))
            device = self.layout.params[0].device if self.layout is not None and self.layout.params else None
            self._lifted.append(Lifted(owner, attr, device or torch.device("cpu"), name))
            self._lifted_tensors = [x.tensor for x in self._lifted]
            self._guard_quick = 0
            why = f"{why} (changes at every step: now a graph input)"
        if self._guard_quick >= 2 or self._guard_rebuilds > self.config.max_recompiles:
            how = ("at every step" if self._guard_quick >= 2
                   else f"{self._guard_rebuilds} times (limit `CompileConfig.max_recompiles`)")
            last = why if why.startswith("`") else f"`{why}`"  # a guard's expression, or a sentence naming it
            cause = (f"a value the training step reads changed {how}, last {last}; each change would"
                     " capture and compile the step again")
            if not self._enter_regions(cause):  # regions: dynamo makes such a value an input of its own
                self._fail(cause)
            return False
        self.report.recompile_reasons.append(why)
        self._set_up_again()
        return True

    def _check_guard(self, graph: "_Graph", batch: Any, rest: tuple) -> None:
        guard = graph.cap.guard
        module = self.trainer.lightning_module
        with self.trainer.precision_plugin.train_step_context():
            if guard.check(module, batch, rest):  # also binds the lifted floats' values
                return
            raise _GuardFailed(guard.failure(module, batch, rest), guard.float_source(module, batch, rest))

    def _run_full(self, loop: "AutomaticOptimization", batch_idx: int, args: tuple,  # noqa: C901
                  should_accumulate: bool) -> Dict[str, Any]:
        trainer = self.trainer
        k = self.layout.accumulate
        variant = Variant.STEP if k == 1 else (Variant.MICRO if should_accumulate else Variant.FINAL)
        if k > 1:
            self._sync_accs()
        if not should_accumulate:
            self._refresh_hparams()
        batch = args[0]
        graph = None
        if type(batch) in (list, tuple):
            # the common flat batch of tensors, e.g. (x, y): its graph is looked up by a key of the
            # tensors' (shape, dtype, device) without _graph_for's pytree walk; a graph found here is
            # one _graph_for returned for the same key, and is used only while _graphs still holds it
            fast_key: Any = [variant, type(batch), len(args)]
            for t in batch:
                if type(t) is not Tensor:
                    fast_key = None
                    break
                fast_key.append((t.shape, t.dtype, t.device))
            if fast_key is not None:
                fast_key = tuple(fast_key)
                fast = self.__dict__.get("_fast_graphs")
                if fast is None:
                    fast = self.__dict__["_fast_graphs"] = {}
                graph = fast.get(fast_key)
                if graph is not None and graph not in self._graphs.values():
                    fast.clear()  # rebuilt or dropped since (hyperparameters, accumulation changed)
                    graph = None
                if graph is None:
                    graph = fast[fast_key] = self._graph_for(variant, batch, args[1:])[0]
                tensors = batch
        if graph is None:
            graph, tensors = self._graph_for(variant, batch, args[1:])
        self._check_guard(graph, batch, args[1:])  # before any of the step's work or counters
        if batch_idx % trainer.accumulate_grad_batches == 0:
            if loop._plain_zero_grad_hooks:  # nothing hooks on_before_zero_grad: only its counters
                zg = loop.optim_progress.zero_grad
                zg.total.ready += 1
                zg.current.ready += 1
                zg.total.started += 1
                zg.current.started += 1
            else:
                loop.on_before_zero_grad(trainer.strategy._lightning_optimizers[0])
            loop.optim_progress.zero_grad.increment_completed()  # the graph owns the gradients: nothing to zero
        if not should_accumulate:
            loop.optim_progress.step.increment_ready()
        if self._ddp is not None:
            self._sync_buffers()
        alloc = graph.alloc
        with _region(variant):
            if alloc is None:
                outs = graph.fn(*self._prefix, *tensors, *graph.tail(self._lifted_tensors))
            else:  # the step's buffers from the caching CPU allocator (trainer/compile/allocator.py)
                outs = allocator.run(alloc, graph.fn, *self._prefix, *tensors, *graph.tail(self._lifted_tensors))
        if self._ddp is not None:  # as DDP's forward: buffers are broadcast again after a synchronised step
            self._ddp.require_forward_param_sync = not should_accumulate
        if not should_accumulate:
            loop.optim_progress.step.increment_completed()
            self._opt._opt_called = True  # LR schedulers check that optimizer.step ran
        self.report.steps_run += 1
        cap = graph.cap
        if cap.log_calls:
            self._replay_logs(cap, outs)
        if not cap.extra_keys:
            return {"loss": outs[0]}
        return {"loss": outs[0], **self._extras(cap, outs)}

    def _run_split(self, loop: "AutomaticOptimization", batch_idx: int, args: tuple,
                   should_accumulate: bool) -> Dict[str, Any]:
        trainer = self.trainer
        graph, _ = self._graph_for(Variant.FWD_BWD, args[0], args[1:])
        self._check_guard(graph, args[0], args[1:])  # before the loop runs any hook of this step
        zero_grad = batch_idx % trainer.accumulate_grad_batches == 0
        closure = _CompiledClosure(loop, args, trainer.strategy._lightning_optimizers[0], zero_grad)
        closure.engine = self
        closure.sync = not should_accumulate
        loop._batch_idx = batch_idx
        if should_accumulate:
            closure()
        elif self._update_graph:
            optimizer_step_with(loop, batch_idx, closure, self._opt, self._compiled_opt_step)
        else:
            loop._optimizer_step(batch_idx, closure)
        result = closure.result
        if result is None or result.loss is None:
            return {}
        return result.asdict()


class _CompiledClosure(_Closure):
    """The eager closure's contract (training_step -> zero_grad -> backward hooks) with the
    forward+backward run as one compiled graph; its gradients are accumulated into ``.grad``."""

    __slots__ = ("engine", "sync")

    def __call__(self) -> Optional[Tensor]:
        engine: CompiledEngine = self.engine
        trainer = engine.trainer
        graph, tensors = engine._graph_for(Variant.FWD_BWD, self.args[0], self.args[1:])
        guard = graph.cap.guard
        with trainer.precision_plugin.train_step_context():
            holds = guard.check(trainer.lightning_module, self.args[0], self.args[1:])
        if not holds:
            # a hook that ran since this step's check (the user's optimizer_step) changed what the step
            # reads: this one step runs eagerly; the next step's check captures it again
            return _Closure.__call__(self)
        ddp = engine._ddp
        if ddp is not None:
            engine._sync_buffers()
        alloc = graph.alloc
        with _region(Variant.FWD_BWD):
            if alloc is None:
                outs = graph.fn(*engine._prefix, *tensors, *graph.tail(engine._lifted_tensors))
            else:
                outs = allocator.run(alloc, graph.fn, *engine._prefix, *tensors, *graph.tail(engine._lifted_tensors))
        if ddp is not None:
            ddp.require_forward_param_sync = self.sync
        cap = graph.cap
        engine._replay_logs(cap, outs)
        loss = outs[0]
        self.result = ClosureResult(loss, extra=engine._extras(cap, outs))
        loop = self.loop
        if self.zero_grad:
            loop.on_before_zero_grad(self.optimizer)
            loop.optimizer_zero_grad(self.optimizer)
        module = trainer.lightning_module
        precision = trainer.strategy.precision_plugin
        precision.pre_backward(loss, module)
        unused = cap.unused
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(engine.layout.params, outs[cap.n_outputs:])):
                if unused and i in unused:
                    continue
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
            if ddp is not None and self.sync:  # the window's last backward: DDP's all-reduce, before on_after_backward
                _allreduce_grads([p.grad for p in engine.layout.params if p.grad is not None], engine._sync)
        precision.post_backward(loss, module)
        engine.report.steps_run += 1
        return loss


def init_adam_state(st: Dict[str, Any], p: Tensor, group: Dict[str, Any]) -> None:
    """A parameter's Adam(W) state as ``torch.optim.Adam(W)._init_group`` creates it on the first step
    (kept when it exists; a number ``step`` from an old checkpoint becomes a tensor)."""
    from torch.optim.optimizer import _get_scalar_dtype

    if len(st) == 0:
        st["step"] = (
            torch.zeros((), dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=p.device)
            if group.get("capturable") or group.get("fused")
            else torch.tensor(0.0, dtype=_get_scalar_dtype())
        )
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if not isinstance(st["step"], Tensor):
        st["step"] = torch.tensor(float(st["step"]), dtype=_get_scalar_dtype())


def place_adam_step(st: Dict[str, Any], p: Tensor) -> None:
    """Moves a parameter's Adam ``step`` counter to the parameter's device (once; kept there).

    A CPU counter for a GPU parameter costs host work and a copy every compiled step, cannot be
    recorded in a CUDA graph, and under 16-mixed cannot follow the device-side inf check without
    a host sync. torch.optim keeps it on the device with capturable=True or fused=True: same
    value, same state_dict key.
    """
    if st["step"].device != p.device:
        st["step"] = st["step"].to(p.device)


def optimizer_step_with(loop: "AutomaticOptimization", batch_idx: int, closure: Any, opt: Any,
                        step: Callable[..., Any]) -> None:
    """The loop's optimizer step (hooks, closure, schedulers' bookkeeping) with ``step`` standing in
    for ``opt.step`` during this one call (a compiled update graph instead of torch.optim's)."""
    with shadowed_step(opt, step):
        loop._optimizer_step(batch_idx, closure)


@contextlib.contextmanager
def shadowed_step(opt: Any, step: Optional[Callable[..., Any]]) -> Iterator[None]:
    """``step`` stands in for ``opt.step`` (an instance attribute shadowing the class's) inside the
    block; None: nothing changes."""
    if step is None:
        yield
        return
    opt.step = step
    try:
        yield
    finally:
        del opt.step


def _allreduce_grads(grads: List[Tensor], sync: Tuple[str, int, int]) -> None:
    """DDP's gradient averaging for the split tier (hooks between backward and the update see real
    ``.grad``): the same buckets and numerics as the ``gradient_sync`` pass, run eagerly, in place."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    c10d = torch.ops._c10d_functional
    group_name, world_size, bucket_bytes = sync
    buckets: List[List[Tensor]] = []
    size = 0
    for g in reversed(grads):
        nbytes = g.numel() * g.element_size()
        if not buckets or buckets[-1][-1].dtype != g.dtype or size + nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += nbytes
    flats = []
    for bucket in buckets:  # all buckets in flight before the first wait
        flat = _flatten_dense_tensors(bucket).mul_(1.0 / world_size)
        flats.append((bucket, c10d.all_reduce_.default(flat, "sum", group_name)))
    for bucket, flat in flats:
        c10d.wait_tensor.default(flat)
        for g, r in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            g.copy_(r)


__all__ = ["CompiledEngine", "CompileWarning"]
