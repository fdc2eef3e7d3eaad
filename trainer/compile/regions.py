"""Partial capture: ``training_step`` as compiled regions between graph breaks (tier ``"regions"``).

When the whole step cannot be one graph (a data-dependent branch such as ``if mask.all():`` in a
library, ``.item()``, ``print``, a Python side effect, an op the tracer does not know), the engine
does not drop the step to eager. ``training_step`` runs under TorchDynamo without ``fullgraph``:
dynamo compiles each stretch of tensor work it can trace into a region (a graph, compiled by
inductor together with its backward through AOTAutograd), runs the Python between regions as
Python, replays the side effects it recorded, and guards every region on the Python state it read.
That is dynamo's own soundness: what a region computes is what eager would, and a changed value
compiles the region again. Around the step the loop is the eager engine's (hooks in Lightning's
order, ``.grad`` accumulation, clipping by the precision plugin), and the optimizer update is the
engine's compiled update graph where the optimizer allows it.

``self.log`` inside the step is recorded (a list append dynamo replays) and sent to the real
``LightningModule.log`` when the step returns, so logging does not split a region.

Breaks and regions are reported (``compile_report.graph_breaks``, ``compile_report.regions``) with
the user's source line: the graph-break log dynamo writes when it is enabled is read by a handler of
ours while a step compiles, and each region's reason for ending is taken from dynamo's output graph
in the backend.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

_BREAK_LOGGER = "torch._dynamo.symbolic_convert.__graph_breaks"
_state = threading.local()  # the RegionStep compiling now (the backend is one function: stable guards)


def _short(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1:])
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def _backend(gm: torch.fx.GraphModule, example_inputs: List[Any]) -> Callable[..., Any]:
    """Dynamo's backend for every region: record it, then inductor (with backward via AOTAutograd);
    a region whose gradient AOTAutograd would compute wrongly (:func:`mutated_input_read_by_grad`) runs
    as the eager ops dynamo recorded."""
    owner: Optional[RegionStep] = getattr(_state, "owner", None)
    unsafe = mutated_input_read_by_grad(gm) if torch.is_grad_enabled() else None
    if owner is not None:
        owner._describe(gm, eager_because=unsafe)
    if unsafe is not None:
        return gm.forward
    from torch._inductor import config as inductor_config
    from torch._inductor.compile_fx import compile_fx

    from trainer.compile.engine import isa_probe_memo
    from trainer.compile.reads_before_writes import cache_key_pass, realize_reads_before_writes

    cpu = all(t.device.type == "cpu" for t in example_inputs if isinstance(t, torch.Tensor))
    # on the CPU, random ops as ATen calls on torch's generator: eager's dropout masks (see capture.py);
    # inductor's mutation-ordering fixes as for the engine's own graphs (trainer/compile/reads_before_writes.py)
    patches: Dict[str, Any] = {"fallback_random": cpu or inductor_config.fallback_random}
    if inductor_config.post_grad_custom_pre_pass is None:
        patches["post_grad_custom_pre_pass"] = cache_key_pass()
    with isa_probe_memo(), inductor_config.patch(patches), realize_reads_before_writes():
        return compile_fx(gm, example_inputs)


def mutated_input_read_by_grad(gm: torch.fx.GraphModule) -> Optional[str]:
    """Why AOTAutograd would give this region a wrong gradient, or None.

    A region that writes one of its inputs in place (``self.count += 1`` on a buffer, ``x.mul_(2)``)
    and computes something differentiable from it: AOTAutograd (torch 2.13, inductor and aot_eager
    alike) puts the write-back ``input.copy_(new)`` in the forward graph, and its partitioner may
    recompute a value the backward needs from the input itself, after the write: the backward then
    reads the new value (``self.count += 1; loss = mse * (1 + 0.01 * self.count)`` differentiated with
    ``count + 2``). Dynamo's ``torch.compile`` gives that run silently; here such a region runs eagerly.
    BatchNorm's running statistics are written inside its op (no in-place call in the dynamo graph)
    and its ``num_batches_tracked += 1`` feeds nothing differentiable: not affected."""
    from torch.multiprocessing.reductions import StorageWeakRef

    from trainer.compile.guards import _readable, changed_in_place

    def storage(node: Any) -> Optional[Any]:
        value = node.meta.get("example_value") if isinstance(node, torch.fx.Node) else None
        if not isinstance(value, torch.Tensor):
            return None
        try:
            return StorageWeakRef(value.untyped_storage())
        except Exception:  # no storage (a sparse or nested tensor): not an aliasing input here
            return None

    inputs = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            ref = storage(node)
            if ref is not None:
                inputs.setdefault(ref, node)
    if not inputs:
        return None
    for node in gm.graph.nodes:
        target = changed_in_place(node)
        ref = storage(target) if target is not None else None
        placeholder = inputs.get(ref) if ref is not None else None
        if placeholder is None or not _feeds_grad(placeholder):
            continue
        source = getattr(placeholder.meta.get("grapharg"), "source", None)
        name = _readable(source.name) if source is not None else placeholder.name
        return (f"it changes `{name}` in place and computes a gradient from it (AOTAutograd's backward would read"
                " the changed value)")
    return None


def _feeds_grad(node: torch.fx.Node) -> bool:
    """Whether a value that needs a gradient is computed from ``node`` (or is ``node``)."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        value = n.meta.get("example_value")
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return True
        todo.extend(n.users)
    return False


class _BreakHandler(logging.Handler):
    def __init__(self, sink: List[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # pragma: no cover - a malformed record must not break the step
            return
        lines = text.splitlines()
        where = next((ln for ln in lines if ln.startswith("Graph break in user code at ")), None)
        why = next((ln for ln in lines if ln.startswith("Graph Break Reason: ")), None)
        if where is None:
            return
        loc = where[len("Graph break in user code at "):]
        path, _, line = loc.rpartition(":")
        reason = why[len("Graph Break Reason: "):] if why else ""
        reason = reason.split("  Explanation:")[0].strip()
        entry = f"{_short(path)}:{line}: {reason}"
        if entry not in self.sink:
            self.sink.append(entry)


class _Recorder:
    """``self.log`` while a region step runs: the calls are kept and replayed after the step."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: List[Tuple[tuple, Dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))


class RegionStep:
    """``module.training_step`` compiled into regions; installed on the instance for one call at a time
    (:meth:`installed`), so the loop, the hooks and the strategy call it as they call the eager one."""

    def __init__(self, module: Any, report: Any, once_done: bool = False) -> None:
        self.module = module
        self.report = report  # trainer.compile.report.CompileReport: regions, graph_breaks, region_compiles
        self._once_done = once_done  # the step ran eagerly before: `*_once` logging calls are no-ops
        self._recorder = _Recorder()
        own = module.__dict__.get("training_step")  # a function set on the instance: called without self
        self._bound = own is None
        self._step = torch.compile(type(module).training_step if own is None else own, backend=_backend)

    def _describe(self, gm: torch.fx.GraphModule, eager_because: Optional[str] = None) -> None:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        ops = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
        lines: List[Tuple[str, int]] = []
        for n in ops:
            frame = _last_frame(n.meta.get("stack_trace"))
            if frame is not None:
                lines.append(frame)
        where = ""
        if lines:
            first, last = lines[0], lines[-1]
            where = f" {_short(first[0])}:{first[1]}" + (f"-{last[1]}" if last != first and last[0] == first[0] else "")
        tx = InstructionTranslator.current_tx()
        reason = getattr(getattr(tx, "output", None), "compile_subgraph_reason", None) if tx is not None else None
        ends = ""
        if reason is not None and getattr(reason, "graph_break", False):
            stack = getattr(reason, "user_stack", None) or []
            at = f" at {_short(stack[-1].filename)}:{stack[-1].lineno}" if stack else ""
            ends = f", ends at a break{at}"
        report = self.report
        report.region_compiles += 1
        text = f"{len(ops)} ops{where}{ends}" + (f", runs eagerly: {eager_because}" if eager_because else "")
        if text not in report.regions:  # compiled again (a guard failed, a new shape): the same region
            report.regions.append(text)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module = self.module
        recorder = self._recorder
        recorder.calls.clear()
        d = module.__dict__
        saved_log = d.get("log", _Recorder)
        d["log"] = recorder
        logger = logging.getLogger(_BREAK_LOGGER)
        handler = _BreakHandler(self.report.graph_breaks)
        prev_level, prev_prop = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        _state.owner = self
        try:
            from torch._dynamo.symbolic_convert import graph_break_dup_warning_checker

            graph_break_dup_warning_checker.reset()  # this fit's breaks, even where an earlier fit logged them
        except ImportError:  # pragma: no cover - the break list is informational
            pass
        try:
            from trainer.compile.guards import once_logging_ignored

            # a region that fails to compile runs eagerly. Module hooks guarded (dynamo's default does not
            # notice a forward hook added after the compile and keeps running the graph without it). Floats
            # specialised (a guard on the value, a new compile when it changes, eager for the frame after
            # dynamo's recompile limit): once dynamo makes a float symbolic, a training graph that writes it
            # back (``self.c *= 0.999``) stops writing it (torch 2.13: the write-back is lost when the graph
            # has a backward), a wrong run
            with torch._dynamo.config.patch(suppress_errors=True, specialize_float=True,
                                            skip_nnmodule_hook_guards=False), \
                    once_logging_ignored(self._once_done):
                out = self._step(module, *args, **kwargs) if self._bound else self._step(*args, **kwargs)
        finally:
            _state.owner = None
            logger.removeHandler(handler)
            logger.setLevel(prev_level)
            logger.propagate = prev_prop
            if saved_log is _Recorder:
                d.pop("log", None)
            else:
                d["log"] = saved_log
        calls = list(recorder.calls)
        recorder.calls.clear()
        for call_args, call_kwargs in calls:
            module.log(*call_args, **call_kwargs)
        return out

    def installed(self) -> "_Installed":
        return _Installed(self)


class _Installed:
    """``module.training_step`` is the region step inside the block, the class's method after it."""

    __slots__ = ("_step", "_saved")

    def __init__(self, step: RegionStep) -> None:
        self._step = step
        self._saved: Any = None

    def __enter__(self) -> None:
        d = self._step.module.__dict__
        self._saved = d.get("training_step", _Installed)
        d["training_step"] = self._step

    def __exit__(self, *exc: Any) -> None:
        d = self._step.module.__dict__
        if self._saved is _Installed:
            d.pop("training_step", None)
        else:
            d["training_step"] = self._saved


def _last_frame(stack_trace: Optional[str]) -> Optional[Tuple[str, int]]:
    """The innermost ``File "...", line N`` of an FX node's stack trace."""
    if not stack_trace:
        return None
    found = None
    for line in stack_trace.splitlines():
        line = line.strip()
        if line.startswith('File "'):
            path, _, rest = line[len('File "'):].partition('", line ')
            num = rest.split(",")[0]
            if num.isdigit():
                found = (path, int(num))
    return found


__all__ = ["RegionStep"]
