"""Capture: the whole training step as one ATen-level FX graph.

Design (why this capture method):

The step is written as a *functional* program and traced, rather than handing the user's eager
loop to dynamo:

    grads, (loss, logs, extras) = torch.func.grad_and_value(step_loss, has_aux=True)(params, ...)
    for each parameter: trainer_compile::adam_param_(param, grad, exp_avg, ...)   # in place

``step_loss`` runs ``training_step`` on the module re-parametrised with the graph's inputs
(``torch.nn.utils.stateless._reparametrize_module``, tied weights kept), inside the precision
plugin's autocast context, with ``self.log`` redirected to a recorder: logged tensors become
graph outputs that the engine replays into the eager ResultCollection after each call.
``make_fx(tracing_mode="fake")`` turns that program into one FX GraphModule of ATen ops holding
forward, loss (/k), backward and the per-parameter optimizer update. Reasons:

- ONE graph for forward+backward+update, with the optimizer state as graph inputs mutated in
  place (torch.optim's own state tensors, so ``state_dict`` and checkpoints are unchanged).
  Dynamo + AOTAutograd splits forward and backward into two graphs at the autograd boundary and
  treats ``optimizer.step`` as a separate region; here backward is just more ATen ops.
- The passes see the real thing: gradients, update nodes and placeholders with known roles, at
  ATen level, before inductor; they are plain FX rewrites, testable by running the GraphModule.
- Fake-tensor tracing fails loudly on what it cannot represent (``if loss > 0``, ``.item()``):
  the engine turns that into one fallback warning naming the user's source line. The tracer
  never silently bakes a tensor value.
- The engine keys its graphs on the batch's structure/shapes itself and checks the guards of the
  Python state the step read; lr/step are input tensors, so LR schedules never recompile.

What fake tracing cannot see is Python state: every Python value the step reads (``batch_idx``,
``self.current_epoch`` in a helper, an attribute a callback sets, a global) is frozen into the graph,
and a Python side effect runs once, at capture. :mod:`trainer.compile.guards` traces the same call
with TorchDynamo first: a side effect or a graph break refuses the capture (eager, with the cause),
and every value read becomes a guard checked before each call (``Captured.guard``).
Randomness (dropout) is captured as RNG
ops, drawn anew at every call. On the CPU the engine compiles with inductor's ``fallback_random``:
random ops call ATen's ``bernoulli_`` on torch's default generator in the eager order, so a seeded
compiled fit draws the eager engine's masks bit for bit (several dropouts too, e.g. BERT's);
on CUDA inductor draws with its own kernels, seeded from torch's generator at each call: the same
distribution (a new independent mask every step, the 1/(1-p) scaling), other bits.
"""
from __future__ import annotations

import contextlib
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._pytree import tree_flatten, tree_unflatten

from trainer.compile.ops import ADAM, SGD

_ZERO_TARGETS = {
    torch.ops.aten.zeros_like.default, torch.ops.aten.zeros.default, torch.ops.aten.new_zeros.default,
    torch.ops.aten.full.default, torch.ops.aten.full_like.default,
}


class _LiftedLog:
    """A logged value that is a lifted float (:class:`trainer.compile.guards.Lifted`) itself."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class CaptureError(RuntimeError):
    """The step cannot be captured; ``cause`` is the one-line reason shown to the user."""

    def __init__(self, cause: str, side_effect: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.side_effect = side_effect  # the step changes Python state (maybe only at its first call)


@dataclass
class Layout:
    """Where each graph input comes from; built once per fit, reused for every step."""

    param_names: List[str]  # trainable, in the optimizer's order
    params: List[Tensor]
    group_of: List[int]
    other_names: List[str]  # frozen params and params outside the optimizer
    others: List[Tensor]
    buffer_names: List[str]
    buffers: List[Tensor]
    opt_kind: Optional[str]  # "adam", "sgd" or None (fwd_bwd: the optimizer runs eagerly)
    state_keys: Tuple[str, ...] = ()
    states: Dict[str, List[Optional[Tensor]]] = field(default_factory=dict)
    lrs: List[Tensor] = field(default_factory=list)
    hparams: List[Dict[str, Any]] = field(default_factory=list)  # per group, baked into the graph
    accs: List[Tensor] = field(default_factory=list)
    accumulate: int = 1
    scaler: Optional[Tuple[Tensor, Tensor]] = None  # 16-mixed: GradScaler's own (_scale, _growth_tracker)

    def prefix(self) -> List[Tensor]:
        """The graph's leading inputs (everything but the batch), in placeholder order."""
        out: List[Any] = [p.detach() for p in self.params] + [t.detach() for t in self.others] + list(self.buffers)
        for key in self.state_keys:
            out += [t for t in self.states[key] if t is not None]
        return out + list(self.lrs) + list(self.accs) + (list(self.scaler) if self.scaler is not None else [])

    def roles(self) -> List[Tuple[str, int]]:
        r = [("param", i) for i in range(len(self.params))] + [("frozen", i) for i in range(len(self.others))]
        r += [("buffer", i) for i in range(len(self.buffers))]
        for key in self.state_keys:
            r += [(key, i) for i, t in enumerate(self.states[key]) if t is not None]
        r += [("lr", i) for i in range(len(self.lrs))] + [("acc", i) for i in range(len(self.accs))]
        return r + ([("scale", 0), ("growth", 0)] if self.scaler is not None else [])


class TensorSources:
    """Where each tensor a graph is given comes from, as found when its inputs were gathered: the
    module's registration (``owner._parameters``/``_buffers``) and the storage, and the optimizer's state
    entry. The engine hands graphs detached aliases of those tensors once per set-up; eager reads them
    anew every step. ``p.data = t`` (a weight swap for validation, a constraint, a dtype change), a
    parameter or buffer registered anew, or the optimizer's state loaded again (``load_state_dict``
    puts new tensors there) would leave a graph computing on the old storage: :meth:`moved` names the
    first such change so the engine sets up again, and (``hooks``) a gradient hook registered since, which
    a graph computing the gradients would skip (:func:`gradient_hook`)."""

    __slots__ = ("_entries", "_opt", "_state")

    def __init__(self, module: torch.nn.Module, names: Dict[int, str], opt: Any = None,
                 params: Sequence[Tensor] = (), state_keys: Sequence[str] = (), hooks: bool = True) -> None:
        entries: List[Tuple[Any, Any, Any, Optional[int], str, bool]] = []  # (where, key, value, data_ptr, name, hooks)
        for owner, kind, leaf, value in _tensor_slots(module):
            name = names.get(id(value))
            if name is not None and isinstance(value, Tensor):
                entries.append((getattr(owner, kind), leaf, value, value.data_ptr(), f"`{name}`", hooks))
        self._opt, self._state = opt, getattr(opt, "state", None)
        if opt is not None:
            for p in params:
                st = opt.state.get(p)
                if st is None:
                    continue
                entries.append((opt.state, p, st, None, f"the optimizer's state of `{names.get(id(p))}`", False))
                for key in state_keys:
                    t = st.get(key)
                    if isinstance(t, Tensor):
                        entries.append((st, key, t, t.data_ptr(), f"the optimizer's `{key}` of `{names.get(id(p))}`",
                                        False))
        self._entries = entries

    def moved(self) -> Optional[str]:
        """The first tensor that is no longer where (or what) it was, in words; None when none moved."""
        if self._opt is not None and self._opt.state is not self._state:
            return "the optimizer's state was replaced (load_state_dict)"
        for slots, key, value, ptr, name, hooks in self._entries:
            if slots.get(key) is not value:
                return f"{name} was replaced by another tensor"
            if ptr is not None and value.data_ptr() != ptr:
                return f"{name} holds new data (`.data` was assigned)"
            if hooks and (value._backward_hooks or value._post_accumulate_grad_hooks):
                return f"{name} has a gradient hook now"
        return None


def gradient_hook(module: torch.nn.Module) -> Optional[str]:
    """A hook eager's ``backward`` runs that a graph computing the gradients itself (``torch.func.grad``
    over the module's tensors as inputs) would skip, in words; None when there is none. Such a step is
    compiled as regions, whose backward is autograd's and runs the hooks."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks:
        return "a global module backward hook is registered (register_module_full_backward_hook)"
    for name, sub in module.named_modules():
        if sub._backward_hooks or sub._backward_pre_hooks:
            return f"`{name or type(sub).__name__}` has a backward hook (register_full_backward_hook)"
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t._backward_hooks or t._post_accumulate_grad_hooks:
            return f"`{name}` has a gradient hook (register_hook / register_post_accumulate_grad_hook)"
    return None


@dataclass
class Captured:
    gm: fx.GraphModule
    example_inputs: List[Any]
    log_calls: List[Tuple[str, Any, tuple, dict]]  # (name, output index, ("const", v) or ("lifted", j), args, kwargs)
    extra_keys: List[Tuple[str, Any]]  # (key, output index or constant) of training_step's dict output
    n_outputs: int
    unused: List[int]  # trainable params with no gradient (eager: .grad stays None, no update)
    guard: Any = None  # trainer.compile.guards.StepGuard: the Python state the graph depends on


@contextlib.contextmanager
def reparametrized(module: torch.nn.Module, tensors: Dict[str, Tensor]) -> Iterator[None]:
    """``_reparametrize_module(module, tensors, tie_weights=True)`` that leaves every parameter and buffer as it
    found it, under every name: with a submodule registered twice (``self.fwd = self.model``) torch's restore
    put the traced stand-ins back under one of its names only, and the next step trained plain tensors."""
    before = [(owner, kind, leaf, value) for owner, kind, leaf, value in _tensor_slots(module)]
    try:
        with _reparametrize_module(module, tensors, tie_weights=True):
            yield
    finally:
        for owner, kind, leaf, value in before:
            slots = getattr(owner, kind)
            if slots.get(leaf) is not value:
                slots[leaf] = value


def _tensor_slots(module: torch.nn.Module) -> Iterator[Tuple[torch.nn.Module, str, str, Any]]:
    """(owner module, "_parameters"/"_buffers", name, tensor) of every registration, aliases included."""
    for owner in module.modules():  # modules() visits each module object once, aliases or not
        for kind in ("_parameters", "_buffers"):
            for leaf, value in getattr(owner, kind).items():
                yield owner, kind, leaf, value


@contextlib.contextmanager
def as_compiling() -> Iterator[None]:
    """``torch.compiler.is_compiling()`` is True while ``make_fx`` traces, as it is while dynamo traces
    the same call for the guards: code that branches on it (transformers skips its data-dependent mask
    checks when compiling) must take the same path in both tracers."""
    old = torch.compiler._is_compiling_flag
    torch.compiler._is_compiling_flag = True
    try:
        yield
    finally:
        torch.compiler._is_compiling_flag = old


def _user_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename
              and "/trainer/compile/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} `{(f.line or '').strip()}`"


def _emit_updates(layout: Layout, params: Sequence[Tensor], grads: Sequence[Tensor],
                  states: Dict[str, List[Optional[Tensor]]], lrs: Sequence[Tensor]) -> None:
    """One ``trainer_compile::*_param_`` update per parameter (the form the passes rewrite)."""
    for i in range(len(params)):
        g = layout.hparams[layout.group_of[i]]
        lr = lrs[layout.group_of[i]]
        if layout.opt_kind == "adam":
            torch.ops.trainer_compile.adam_param_(
                params[i], grads[i], states["exp_avg"][i], states["exp_avg_sq"][i],
                states["max_exp_avg_sq"][i] if g["amsgrad"] else None, states["step"][i], lr,
                g["betas"][0], g["betas"][1], g["eps"], g["weight_decay"], g["amsgrad"], g["maximize"],
                g["decoupled"])
        else:
            torch.ops.trainer_compile.sgd_param_(
                params[i], grads[i], states["momentum_buffer"][i] if g["momentum"] else None, lr, g["momentum"],
                g["dampening"], g["weight_decay"], g["nesterov"], g["maximize"])


def capture_update(layout: Layout, grads: List[Tensor]) -> Tuple[fx.GraphModule, List[Tensor]]:
    """The optimizer update alone, as a graph over (params, grads, optimizer states, lrs): the
    ``fwd_bwd`` tier's second graph, run where ``optimizer.step()`` would run (after the user's
    in-step hooks and clipping saw and changed the real ``.grad``)."""
    n = len(layout.params)
    state_inputs = [(key, i, t) for key in layout.state_keys for i, t in enumerate(layout.states[key])
                    if t is not None]

    def update(*flat: Tensor) -> tuple:
        params, grads_in = list(flat[:n]), list(flat[n:2 * n])
        states: Dict[str, List[Optional[Tensor]]] = {key: [None] * n for key in layout.state_keys}
        for (key, i, _), t in zip(state_inputs, flat[2 * n:2 * n + len(state_inputs)]):
            states[key][i] = t
        _emit_updates(layout, params, grads_in, states, list(flat[2 * n + len(state_inputs):]))
        return ()

    example = ([p.detach() for p in layout.params] + [g.detach() for g in grads] + [t for _, _, t in state_inputs]
               + list(layout.lrs))
    gm = make_fx(update, tracing_mode="fake", _allow_non_fake_inputs=False)(*example)
    roles = ([("param", i) for i in range(n)] + [("grad", i) for i in range(n)]
             + [(key, i) for key, i, _ in state_inputs] + [("lr", i) for i in range(len(layout.lrs))])
    for node, r in zip([x for x in gm.graph.nodes if x.op == "placeholder"], roles):
        node.meta["role"] = r
    return gm, example


def capture(  # noqa: C901
    module: Any, layout: Layout, batch: Any, step_args: tuple, step_context: Callable[[], Any], variant: str,
    cpu_attention: bool = False, lifted: Sequence[Any] = (), guard: Optional[Any] = None,
) -> Captured:
    """Traces one step for ``variant`` ("step"/"micro"/"final": with updates; "fwd_bwd": grads out).
    ``cpu_attention``: trace the covered ``F.scaled_dot_product_attention`` calls as trainer's
    short-sequence kernels (:mod:`trainer.compile.attention`). ``lifted``: floats the step reads as
    graph inputs (:class:`trainer.compile.guards.Lifted`), placed after the batch's tensors. ``guard``: the
    :class:`trainer.compile.guards.StepGuard` of the same call (same batch signature, arguments and
    lifted floats) traced for another variant; it is traced here when None. Either way it is ``.guard``
    of the result."""
    hook = gradient_hook(module)
    if hook is not None:
        raise CaptureError(f"{hook}: the graph computes gradients without autograd's hooks")
    leaves, spec = tree_flatten(batch)
    t_pos = [i for i, v in enumerate(leaves) if isinstance(v, Tensor)]
    const_leaves = list(leaves)
    with_update = variant != "fwd_bwd"
    prefix = layout.prefix()
    n_p, n_o, n_b = len(layout.params), len(layout.others), len(layout.buffers)
    k = layout.accumulate
    records: List[Tuple[str, Any, tuple, dict]] = []
    out_info: Dict[str, Any] = {}

    def recorder(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        records.append((name, value, args, kwargs))

    def step(*flat: Tensor) -> tuple:
        flat = list(flat)
        params, others, bufs = flat[:n_p], flat[n_p:n_p + n_o], flat[n_p + n_o:n_p + n_o + n_b]
        pos = n_p + n_o + n_b
        states: Dict[str, List[Optional[Tensor]]] = {}
        for key in layout.state_keys:
            states[key] = []
            for t in layout.states[key]:
                if t is None:
                    states[key].append(None)
                else:
                    states[key].append(flat[pos])
                    pos += 1
        lrs = flat[pos:pos + len(layout.lrs)]
        pos += len(layout.lrs) + len(layout.accs)
        scale = None
        if layout.scaler is not None:
            scale = flat[pos]
            pos += 2
        batch_tensors = flat[pos:pos + n_batch]
        lifted_in = flat[pos + n_batch:pos + n_batch + len(lifted)]
        free_in = flat[pos + n_batch + len(lifted):]

        def step_loss(params: List[Tensor], others: List[Tensor], bufs: List[Tensor], batch_tensors: List[Tensor],
                      free_in: List[Tensor]):
            lv = list(const_leaves)
            for i, t in zip(t_pos, batch_tensors):
                lv[i] = t
            b = tree_unflatten(lv, spec)
            tensors = {**dict(zip(layout.param_names, params)), **dict(zip(layout.other_names, others)),
                       **dict(zip(layout.buffer_names, bufs))}
            records.clear()
            with reparametrized(module, tensors), step_context(), attention_mode(), \
                    _Substituted(lifted, lifted_in), _Placed(guard.free, free_in):
                out = module.training_step(b, *step_args)
            for r, (name, value, args, kwargs) in enumerate(records):
                j = next((j for j, t in enumerate(lifted_in) if value is t), None)
                if j is not None:  # a lifted float logged as is: the replay logs its current Python value
                    records[r] = (name, _LiftedLog(j), args, kwargs)
            extra: Dict[str, Any] = {}
            if isinstance(out, Mapping):
                loss = out.get("loss")
                extra = {key: v for key, v in out.items() if key != "loss"}
            else:
                loss = out
            if not isinstance(loss, Tensor):
                raise CaptureError(f"`training_step` returned {type(out).__name__} (no loss tensor): the step would be"
                                   " skipped, which a graph cannot decide")
            if loss.numel() != 1:
                raise CaptureError(f"`training_step` returned a loss of shape {tuple(loss.shape)}; it must be scalar")
            if k > 1:
                loss = loss / k
            log_tensors = [v for _, v, _, _ in records if isinstance(v, Tensor)]
            extra_tensors = [v for v in extra.values() if isinstance(v, Tensor)]
            out_info["extra"] = extra
            out_info["records"] = list(records)
            # fp16: differentiate the scaled loss (GradScaler.scale), report the unscaled one
            target = loss if scale is None else loss * scale.reshape(())
            return target, (loss.detach(), [t.detach() for t in log_tensors], [t.detach() for t in extra_tensors])

        grads, (_, (loss, logs, extras)) = torch.func.grad_and_value(step_loss, has_aux=True)(
            params, others, bufs, batch_tensors, list(free_in))
        # the outputs were detached inside step_loss, before any update: nothing may read them after the
        # updates (inductor realizes an output where its last op is; a view traced after the in-place update
        # of a parameter made a loss or logged value computed lazily from that parameter read the new value)
        if not with_update:
            return (loss, *logs, *extras, *grads)
        _emit_updates(layout, params, grads, states, lrs)
        return (loss, *logs, *extras)

    if cpu_attention:
        from trainer.compile.attention import SmallAttention as attention_mode
    else:
        attention_mode = contextlib.nullcontext
    from trainer.compile.guards import StepGuard, _Placed, _Substituted

    # first: whether the step is one graph without Python side effects, and what Python state it reads
    if guard is None:
        guard = StepGuard.trace(module, "training_step", batch, step_args, step_context, lifted)
    n_batch = len(t_pos)
    example = prefix + [leaves[i] for i in t_pos] + [x.tensor for x in lifted] + guard.free_inputs()
    module.__dict__["log"] = recorder
    prev_fx = module.__dict__.get("_current_fx_name")
    object.__setattr__(module, "_current_fx_name", "training_step")
    try:
        with as_compiling():
            gm = make_fx(step, tracing_mode="fake", _allow_non_fake_inputs=False)(*example)
    except CaptureError:
        raise
    except Exception as e:  # data-dependent control flow, .item(), unsupported ops, ...
        raise CaptureError(f"capture of `training_step` failed{_user_frame(e)}: {type(e).__name__}:"
                           f" {str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        module.__dict__.pop("log", None)
        object.__setattr__(module, "_current_fx_name", prev_fx)

    roles = layout.roles() + [("batch", i) for i in range(len(t_pos))] + [("lifted", i) for i in range(len(lifted))]
    roles += [("free", i) for i in range(len(guard.free))]
    phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, r in zip(phs, roles):
        node.meta["role"] = r

    # outputs: loss, logged tensors, extra tensors[, grads]
    log_calls, idx = [], 1
    for name, value, args, kwargs in out_info["records"]:
        if isinstance(value, Tensor):
            log_calls.append((name, idx, args, kwargs))
            idx += 1
        elif isinstance(value, _LiftedLog):
            log_calls.append((name, ("lifted", value.index), args, kwargs))
        else:
            log_calls.append((name, ("const", value), args, kwargs))
    extra_keys = []
    for key, v in out_info["extra"].items():
        if isinstance(v, Tensor):
            extra_keys.append((key, idx))
            idx += 1
        else:
            extra_keys.append((key, ("const", v)))

    # parameters the loss does not depend on get a constant-zero gradient from torch.func; the eager
    # engine leaves their .grad None and the optimizer skips them: do the same
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    unused: List[int] = []
    if with_update:
        for node in list(gm.graph.nodes):
            if node.op == "call_function" and node.target in (ADAM, SGD):
                grad = node.args[1]
                if isinstance(grad, fx.Node) and grad.target in _ZERO_TARGETS:
                    unused.append(node.args[0].meta["role"][1])
                    gm.graph.erase_node(node)
    else:
        grads = out_node.args[0][idx:]
        unused = [i for i, g in enumerate(grads) if isinstance(g, fx.Node) and g.target in _ZERO_TARGETS]
    gm.graph.eliminate_dead_code(is_impure_node=_impure)
    gm.recompile()
    return Captured(gm, example, log_calls, extra_keys, idx, unused, guard)


def _impure(node: fx.Node) -> bool:
    if node.op in ("placeholder", "output"):
        return True
    target = node.target
    schema = getattr(target, "_schema", None)
    if schema is not None and schema.is_mutable:
        return True
    return callable(target) and not isinstance(target, torch._ops.OpOverload)


__all__ = ["CaptureError", "Captured", "Layout", "capture", "capture_update"]
