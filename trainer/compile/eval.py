"""Compiled ``validation_step`` / ``test_step`` / ``predict_step`` (``CompileConfig.eval_steps``).

The same capture method as the training step, without gradients: the step runs on the module
re-parametrised with the graph's inputs (parameters, buffers, batch tensors), inside the precision
plugin's context for that stage, under ``no_grad``, traced by ``make_fx(tracing_mode="fake")`` and
compiled by inductor (:func:`trainer.compile.engine._inductor_compile`, on-disk cached). ``self.log``
is redirected to a recorder while tracing: logged tensors become graph outputs and the calls are
replayed into the eager ResultCollection after each run, exactly where the eager step would have
made them. The step's return value is rebuilt from the graph outputs (tensors) and the constants
seen while tracing (None, numbers, strings).

One graph per (step, batch structure and shapes, dataloader_idx); nothing per batch is Python but
input assembly and the log replay. A step that cannot be captured (data-dependent control flow,
``.item()``, a Python side effect, a returned object the graph cannot rebuild) runs eagerly from
then on, after one ``CompileWarning`` naming the cause (``compile="strict"`` raises). The Python
state a step reads (``batch_idx``, ``self.current_epoch``, attributes, globals) is guarded
(:mod:`trainer.compile.guards`): when it changes the step is captured again, up to
``CompileConfig.max_recompiles`` times per step name, then it runs eagerly.
"""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from trainer.compile import CompileError

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

_CONTEXTS = {"validation_step": "val_step_context", "test_step": "test_step_context",
             "predict_step": "predict_step_context"}
_CONST_TYPES = (type(None), bool, int, float, str)


class _EvalGraph:
    __slots__ = ("fn", "log_calls", "out_spec", "out_leaves", "guard")

    def __init__(self, fn: Callable, log_calls: list, out_spec: Any, out_leaves: list, guard: Any) -> None:
        self.fn = fn
        self.guard = guard  # trainer.compile.guards.StepGuard
        self.log_calls = log_calls  # (name, output index or ("const", v), args, kwargs)
        self.out_spec = out_spec
        self.out_leaves = out_leaves  # output index or ("const", v) per leaf of the step's return value

    def free_inputs(self) -> List[Tensor]:
        """The tensors the step reads outside its parameters, buffers and batch, found now (detached:
        the eval step needs no gradient)."""
        free = self.guard.free
        return [f.get().detach() for f in free] if free else []


class EvalEngine:
    """Per Trainer: compiled eval steps, keyed by step name, module and batch signature."""

    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self._graphs: Dict[Any, _EvalGraph] = {}
        self._failed: Dict[str, str] = {}  # step name -> cause (eager from then on)
        self._names: Dict[Tuple[int, type], Tuple[List[str], List[str]]] = {}
        self._rebuilds: Dict[str, int] = {}  # step name -> captures again after a guard failed
        self._fail_at: Dict[str, Tuple[int, int]] = {}  # step name -> (steps_run at the last failure, in a row)
        self.recompile_reasons: List[str] = []
        self.graphs_built = 0
        self.compile_seconds = 0.0
        self.steps_run = 0

    @property
    def fallback_reasons(self) -> Dict[str, str]:
        return dict(self._failed)

    def _fail(self, name: str, cause: str) -> None:
        from trainer.compile.engine import CompileWarning

        if self.trainer._compile_config.strict:
            raise CompileError(f"Trainer(compile='strict'): `{name}` cannot be compiled: {cause}")
        self._failed[name] = cause
        warnings.warn(f"trainer.compile: running `{name}` eagerly: {cause}", CompileWarning, stacklevel=3)

    def _scope_reason(self, name: str) -> Optional[str]:
        trainer = self.trainer
        # DDP runs validation/test/predict on the plain module (no collective per forward): same graphs
        if type(trainer.strategy).__name__ not in ("SingleDeviceStrategy", "DDPStrategy", "DDPSpawnStrategy"):
            return f"strategy {type(trainer.strategy).__name__} is not supported by the compiled engine"
        return None

    def run(self, name: str, step_args: tuple) -> Any:
        from trainer.compile.capture import CaptureError

        trainer = self.trainer
        if name not in self._failed:
            cause = self._scope_reason(name) if not any(k[0] == name for k in self._graphs) else None
            if cause:
                self._fail(name, cause)
            else:
                try:
                    return self._run(name, step_args)
                except CaptureError as e:
                    self._fail(name, e.cause)
        return getattr(trainer.strategy, name)(*step_args)

    def _run(self, name: str, step_args: tuple) -> Any:
        from trainer.compile.capture import CaptureError

        trainer = self.trainer
        module = trainer.lightning_module
        batch, rest = step_args[0], step_args[1:]
        leaves, spec = tree_flatten(batch)
        tensors = [v for v in leaves if isinstance(v, Tensor)]
        # inference tensors (a loader iterated under inference_mode) carry other dispatch keys, which the
        # guards check: they get graphs of their own instead of captures again
        sig = tuple((tuple(v.shape), v.dtype, v.device, v.is_inference()) if isinstance(v, Tensor) else (type(v), v)
                    for v in leaves)
        # batch_idx (rest[0]) is read only where the graph's guard checks it; dataloader_idx (rest[1]) is in the key
        mkey = (id(module), type(module))
        key = (name, mkey, spec, sig, len(rest), tuple(rest[1:]), trainer.precision)
        pnames, bnames = self._names.get(mkey) or self._module_names(module)
        params = dict(module.named_parameters())
        buffers = dict(module.named_buffers())
        if list(params) != pnames or list(buffers) != bnames:
            # the module's tensors changed (ModelPruning's weight -> weight_orig + weight_mask): its graphs
            # take other inputs now
            self.recompile_reasons.append(f"`{type(module).__name__}`'s parameters or buffers changed")
            self._graphs = {k: g for k, g in self._graphs.items() if k[1] != mkey}
            pnames, bnames = self._module_names(module)
        graph = self._graphs.get(key)
        prefix = [params[n].detach() for n in pnames] + [buffers[n] for n in bnames]
        if graph is None:
            built = sum(1 for k in self._graphs if k[0] == name)
            if built >= trainer._compile_config.max_graphs:
                raise CaptureError(f"the batch shapes keep changing ({built} graphs built, the limit"
                                   " `CompileConfig.max_graphs`); each new shape would compile again")
            graph = self._build(name, module, batch, rest, pnames, bnames, prefix)
            self._graphs[key] = graph
        context = getattr(trainer.precision_plugin, _CONTEXTS[name])
        with context():
            holds = graph.guard.check(module, batch, rest)
        if not holds:
            with context():
                why = graph.guard.failure(module, batch, rest)
            self._rebuilds[name] = n = self._rebuilds.get(name, 0) + 1
            last, in_a_row = self._fail_at.get(name, (-2, 0))
            in_a_row = in_a_row + 1 if self.steps_run - last <= 1 else 0
            self._fail_at[name] = (self.steps_run, in_a_row)
            if in_a_row >= 2 or n > trainer._compile_config.max_recompiles:
                how = "at every step" if in_a_row >= 2 else f"{n} times (limit `CompileConfig.max_recompiles`)"
                raise CaptureError(f"a Python value `{name}` reads changed {how}, last `{why}`; each change would"
                                   " capture and compile the step again")
            self.recompile_reasons.append(why)
            graph = self._graphs[key] = self._build(name, module, batch, rest, pnames, bnames, prefix)
        from trainer.hooks import _set_fx

        prev = module._current_fx_name
        _set_fx(module, name)
        try:
            outs = graph.fn(*prefix, *tensors, *graph.free_inputs())
            for log_name, src, args, kwargs in graph.log_calls:
                module.log(log_name, src[1] if isinstance(src, tuple) else outs[src], *args, **kwargs)
        finally:
            _set_fx(module, prev)
        self.steps_run += 1
        if graph.out_spec is None:
            return None
        return tree_unflatten([s[1] if isinstance(s, tuple) else outs[s] for s in graph.out_leaves], graph.out_spec)

    def _module_names(self, module: Any) -> Tuple[List[str], List[str]]:
        names = ([n for n, _ in module.named_parameters()], [n for n, _ in module.named_buffers()])
        self._names[(id(module), type(module))] = names
        return names

    def _build(self, name: str, module: Any, batch: Any, rest: tuple, pnames: List[str], bnames: List[str],
               prefix: List[Tensor]) -> _EvalGraph:
        from torch.fx.experimental.proxy_tensor import make_fx

        from trainer.compile.capture import CaptureError, _user_frame, as_compiling, reparametrized
        from trainer.compile.engine import _inductor_compile
        from trainer.compile.guards import StepGuard, _Placed

        t0 = time.perf_counter()
        trainer = self.trainer
        context = getattr(trainer.precision_plugin, _CONTEXTS[name])
        leaves, spec = tree_flatten(batch)
        t_pos = [i for i, v in enumerate(leaves) if isinstance(v, Tensor)]
        n_p, n_b = len(pnames), len(bnames)
        records: List[Tuple[str, Any, tuple, dict]] = []
        info: Dict[str, Any] = {}

        def recorder(*args: Any, **kwargs: Any) -> None:  # LightningModule.log's (name, value, ...) order
            log_name = args[0] if args else kwargs.pop("name")
            args = args[1:]
            value = args[0] if args else kwargs.pop("value")
            records.append((log_name, value, args[1:], kwargs))

        def step(*flat: Tensor) -> tuple:
            lv = list(leaves)
            n_in = n_p + n_b + len(t_pos)
            for i, t in zip(t_pos, flat[n_p + n_b:n_in]):
                lv[i] = t
            tensors = {**dict(zip(pnames, flat[:n_p])), **dict(zip(bnames, flat[n_p:n_p + n_b]))}
            records.clear()
            with reparametrized(module, tensors), context(), _Placed(guard.free, flat[n_in:]):
                out = getattr(module, name)(tree_unflatten(lv, spec), *rest)
            out_leaves, out_spec = tree_flatten(out)
            for v in out_leaves:
                if not isinstance(v, (Tensor, *_CONST_TYPES)):
                    raise CaptureError(f"`{name}` returned a {type(v).__name__} (the graph can rebuild tensors,"
                                       " containers of them and plain constants only)")
            logged = [v for _, v, _, _ in records if isinstance(v, Tensor)]
            info["records"], info["out"] = list(records), (out_leaves, out_spec, out is None)
            return (*[v for v in out_leaves if isinstance(v, Tensor)], *logged)

        # first: one graph without Python side effects, and the Python state it reads (guarded each call)
        guard = StepGuard.trace(module, name, batch, rest, context)
        example = prefix + [leaves[i] for i in t_pos] + [t.detach() for t in guard.free_inputs()]
        module.__dict__["log"] = recorder
        try:
            with torch.inference_mode(False), torch.no_grad(), as_compiling():
                gm = make_fx(step, tracing_mode="fake", _allow_non_fake_inputs=False)(*example)
        except CaptureError:
            raise
        except Exception as e:  # data-dependent control flow, .item(), unsupported ops, ...
            raise CaptureError(f"capture of `{name}` failed{_user_frame(e)}: {type(e).__name__}:"
                               f" {str(e).splitlines()[0] if str(e) else ''}") from e
        finally:
            module.__dict__.pop("log", None)
        out_leaves, out_spec, is_none = info["out"]
        idx, slots = 0, []
        for v in out_leaves:
            if isinstance(v, Tensor):
                slots.append(idx)
                idx += 1
            else:
                slots.append(("const", v))
        log_calls = []
        for log_name, value, args, kwargs in info["records"]:
            if isinstance(value, Tensor):
                log_calls.append((log_name, idx, args, kwargs))
                idx += 1
            else:
                log_calls.append((log_name, ("const", value), args, kwargs))
        with torch.inference_mode(False):
            fn = _inductor_compile(gm, example)
        self.graphs_built += 1
        self.compile_seconds += time.perf_counter() - t0
        return _EvalGraph(fn, log_calls, None if is_none else out_spec, slots, guard)


def eval_step(trainer: "Trainer", name: str, step_args: tuple) -> Any:
    """``trainer.strategy.<name>(*step_args)``, compiled when ``CompileConfig.eval_steps`` is on."""
    profiler = trainer.profiler
    if profiler.enabled:  # Lightning's action: the strategy's step (compiled or not)
        with profiler.profile(f"[Strategy]{type(trainer.strategy).__name__}.{name}"):
            return _eval_step(trainer, name, step_args)
    return _eval_step(trainer, name, step_args)


def _eval_step(trainer: "Trainer", name: str, step_args: tuple) -> Any:
    config = trainer._compile_config
    if not (config.enabled and config.eval_steps):
        return getattr(trainer.strategy, name)(*step_args)
    return trainer._compiled_eval_engine().run(name, step_args)


__all__ = ["EvalEngine", "eval_step"]
