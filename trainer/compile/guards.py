"""Guards: which Python state a captured step depends on, checked before every call.

Why the capture needs them: :mod:`trainer.compile.capture` traces a step with ``make_fx``, which runs
the step's Python once and keeps only tensor operations. Every Python value the step reads on the
way (``self.current_epoch`` in a helper, ``self.beta`` set by a callback, a module-level constant,
``self.training`` of a submodule, a dropout ``p``, ``requires_grad`` of a parameter, the branch a
``batch_idx`` test took) is frozen into the graph, and every Python side effect (``self.calls.append``,
``self.x = ...``, a ``global`` write, a ``print``) runs once, at capture, instead of every step.

How they are found, completely rather than by a list of patterns: before a step is captured, the
same call (``module.<step>(batch, *rest)``, same module, batch, context and grad mode) is traced
once by TorchDynamo with ``fullgraph=True`` and every value specialised (no symbolic ints or floats).
Dynamo interprets the Python bytecode of the step and of everything it calls (helpers, properties,
other modules, globals, closures) and records a guard for every Python value that decided what the
trace computed; it records every mutation of an object that existed before the call; and it stops
with the source line at anything it cannot represent as one graph (data-dependent branches,
``print``, C extensions it does not know). Both tracers run the same Python on the same state, so
what ``make_fx`` froze is what dynamo guarded. The backend given to dynamo never lets the traced
frame run: it raises before the first operation, so the step's Python runs once (in the capture),
not twice. The guards are dynamo's compiled guard manager (C++), kept and called directly with the
frame's locals each step (microseconds; benchmarks/RESULTS.md). Tensors are not guarded by value: the
parameters, buffers and the batch are graph inputs, and so is every other tensor the step reads
(class weights in a global, a tensor in a closure or a plain attribute, one in a list): dynamo names
where it was read (its source), the capture traces it as an input (:class:`FreeTensor`), and each
call passes the tensor found there now, so a callback that rebinds or changes it in place is seen,
as in eager (its shape, dtype and device are guarded). A tensor that needs a gradient, or sits where
it cannot be swapped for the tracer's stand-in (a tuple), refuses the capture; ``make_fx`` refuses
any real tensor it was not told of (``_allow_non_fake_inputs=False``).

What follows for the engine (:mod:`trainer.compile.engine`, :mod:`trainer.compile.eval`): a step
with a side effect or a graph break is not captured (eager, one warning naming it); a failed guard
means the graph no longer computes what the step would: the step is captured again (counted in
``compile_report.recompiles`` with the failed guard as the reason), and a value that keeps changing
sends the step to eager after a bounded number of rebuilds.
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils._pytree import tree_leaves

from trainer.compile.capture import CaptureError

_PROBE = torch.zeros(())  # see _entry


class _Traced(Exception):
    """Raised by the oracle backend's graph in place of running it: the trace is all we want."""


def _log_stub(*args: Any, **kwargs: Any) -> None:
    """``self.log`` while guarding: what is logged is recorded by the capture itself; the log
    machinery's own Python (result collections, the trainer's state) is not the step's."""
    return None


def _entry(name: str) -> Callable[..., Any]:
    """A fresh function calling ``module.<name>(batch, *rest)``: dynamo keys its cache on the code
    object, so a code object of our own keeps the user's ``training_step`` (and other trainers)
    free of our cache entries and gives the guards stable local names."""
    namespace: Dict[str, Any] = {}
    # `probe + 1` gives every trace a graph: dynamo calls no backend for a frame without tensor ops (a
    # step that only appends to a list) and would run its Python for real instead
    source = (f"def _trainer_{name}(module, batch, rest, probe):\n"
              f"    return module.{name}(batch, *rest), probe + 1\n")
    exec(compile(source, f"<trainer.compile.guards:{name}>", "exec"), namespace)
    return namespace[f"_trainer_{name}"]


def _readable(source: str) -> str:
    """Dynamo's source names in the user's words: ``L['module'].net.p`` -> ``self.net.p``."""
    source = source.replace("L['module']", "self").replace("L['batch']", "batch").replace("L['rest'][0]", "batch_idx")
    source = re.sub(r"^L\['([A-Za-z_][A-Za-z0-9_]*)'\]", r"\1", source)  # a local of the traced frame
    source = re.sub(r"G\['__import_[^']*'\]\.", "", source)
    source = re.sub(r"G\['([^']*)'\]", r"\1", source)
    return re.sub(r"\._(?:modules|parameters|buffers)\['([^']*)'\]", r".\1", source)


def _user_line(exc: BaseException) -> str:
    stack = getattr(exc, "real_stack", None) or []
    frames = [f for f in stack if not f.filename.startswith("<trainer.compile")]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} `{(f.line or '').strip()}`"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_FLOAT_GUARD = re.compile(r"^(?P<base>.+)\.(?P<attr>[A-Za-z_][A-Za-z0-9_]*) == (?P<value>[-+0-9.eE]+|inf|-inf)$")


class Lifted:
    """A Python float the step reads that changes at every step (an annealed weight, a global a
    callback decays): a graph input instead of a constant. While tracing and checking, the owner's
    attribute holds a 0-dim float64 tensor (Python floats are doubles, so arithmetic on it rounds
    as on the float); before each call the tensor is filled with the attribute's current value."""

    __slots__ = ("owner", "attr", "tensor", "name")

    def __init__(self, owner: Any, attr: str, device: torch.device, name: str) -> None:
        self.owner = owner
        self.attr = attr
        self.tensor = torch.zeros((), dtype=torch.float64, device=device)
        self.name = name  # in the user's words, for messages

    def bind(self) -> bool:
        """Copies the current value into the tensor; False when it is no longer a float."""
        value = getattr(self.owner, self.attr, None)
        if type(value) is not float:
            return False
        self.tensor.fill_(value)
        return True


class _Substituted:
    """Puts each lifted attribute's tensor (or its tracer's stand-in) in place of the float, and back."""

    __slots__ = ("_items", "_saved")

    def __init__(self, lifted: Sequence[Lifted], values: Optional[Sequence[Any]] = None) -> None:
        self._items = [(x.owner.__dict__, x.attr, x.tensor if values is None else v)
                       for x, v in zip(lifted, values if values is not None else lifted)]
        self._saved: List[Any] = []

    def __enter__(self) -> None:
        missing = _Substituted
        self._saved = [d.get(attr, missing) for d, attr, _ in self._items]
        for d, attr, value in self._items:
            d[attr] = value

    def __exit__(self, *exc: Any) -> None:
        for (d, attr, _), old in zip(self._items, self._saved):
            if old is _Substituted:
                d.pop(attr, None)
            else:
                d[attr] = old


class FreeTensor:
    """A tensor the step reads that is neither a parameter, a buffer nor part of the batch, found by
    dynamo at ``source`` (``G['WEIGHTS']``, ``L['module'].table``, a closure cell): a graph input whose
    value is looked up at ``source`` again at every call (:meth:`get`), so a rebinding is seen. ``put``
    puts the tracer's stand-in there while the capture traces."""

    __slots__ = ("source", "name", "_get", "_owner", "_key", "_is_attr")

    def __init__(self, source: str, scope: Dict[str, Any]) -> None:
        import ast

        self.source = source
        self.name = _readable(source)
        tree = ast.parse(source, mode="eval").body
        if isinstance(tree, ast.Attribute):
            base, self._key, self._is_attr = tree.value, tree.attr, True
        elif isinstance(tree, ast.Subscript) and isinstance(tree.slice, ast.Constant):
            base, self._key, self._is_attr = tree.value, tree.slice.value, False
        else:
            raise CaptureError(f"the step reads the tensor `{self.name}`, which is not a parameter, a buffer or"
                               " part of the batch, from a place the capture cannot give an input")
        env = {"__builtins__": __builtins__, **scope}

        def function(expr: ast.expr) -> Callable[[], Any]:
            lam = ast.Expression(ast.Lambda(ast.arguments([], [], None, [], [], None, []), expr))
            return eval(compile(ast.fix_missing_locations(lam), "<trainer.compile.guards>", "eval"), env)

        self._get = function(tree)
        self._owner = function(base)
        if isinstance(self._owner(), tuple):
            raise CaptureError(f"the step reads the tensor `{self.name}` from a tuple, where the capture cannot"
                               " give it as a graph input")

    def get(self) -> Any:
        return self._get()

    def put(self, value: Any) -> None:
        owner, key = self._owner(), self._key
        if not self._is_attr:
            owner[key] = value
        elif key in getattr(owner, "__dict__", ()):
            owner.__dict__[key] = value  # no nn.Module.__setattr__ bookkeeping
        else:
            setattr(owner, key, value)


class _Placed:
    """Puts each free tensor's stand-in where the step reads it while the capture traces, and back."""

    __slots__ = ("_free", "_values", "_saved")

    def __init__(self, free: Sequence[FreeTensor], values: Sequence[Any]) -> None:
        self._free, self._values, self._saved = list(free), list(values), []

    def __enter__(self) -> None:
        self._saved = [f.get() for f in self._free]
        for f, v in zip(self._free, self._values):
            f.put(v)

    def __exit__(self, *exc: Any) -> None:
        for f, old in zip(self._free, self._saved):
            f.put(old)


def once_logging_ignored(active: bool) -> ContextManager[Any]:
    """``Logger.warning_once``/``info_once`` (transformers' ``functools.lru_cache``-d logging, which
    dynamo cannot trace) are no-ops for dynamo while active. They log a message the first time it is
    passed; a graph break at every step for a message logged once would keep the step from being one
    graph. Whoever turns this on makes sure the message is still logged once: :meth:`StepGuard.trace`
    always can (the tracer that then builds the graph runs the step's Python for real, the call
    included); the compiled regions, where nothing else runs the Python, only after an eager step.
    Not active: nothing."""
    import contextlib
    import logging

    once = {f for f in (getattr(logging.Logger, "warning_once", None), getattr(logging.Logger, "info_once", None))
            if f is not None}
    if not active or not once:
        return contextlib.nullcontext()
    return torch._dynamo.config.patch(ignore_logging_functions=set(torch._dynamo.config.ignore_logging_functions) | once)


_INPLACE_OPERATORS = frozenset({
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
    operator.ipow, operator.imatmul, operator.iand, operator.ior, operator.ixor, operator.ilshift,
    operator.irshift, operator.setitem,
})
_NOT_DATA = frozenset({"requires_grad_", "retain_grad", "share_memory_", "record_stream"})


def changed_in_place(node: torch.fx.Node) -> Optional[torch.fx.Node]:
    """The node whose tensor ``node`` (a dynamo graph's call) writes in place, or None."""
    if node.op == "call_method":
        name = str(node.target)
        if name.endswith("_") and not name.startswith("_") and name not in _NOT_DATA and node.args:
            return node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
    elif node.op == "call_function":
        target = node.target
        name = getattr(target, "__name__", "")
        if target in _INPLACE_OPERATORS or node.kwargs.get("inplace") is True or (
                name.endswith("_") and not name.startswith("_") and name not in _NOT_DATA):
            first = node.args[0] if node.args else None
            return first if isinstance(first, torch.fx.Node) else None
        out = node.kwargs.get("out")
        if isinstance(out, torch.fx.Node):
            return out
    return None


def _put_back(var: Any) -> bool:
    """Whether a dict that existed before the call (a module's ``_buffers``) ends holding what it held:
    every entry the original object, or the original tensor changed in place (``self.count += 1`` on a
    buffer stores back the tensor ``+=`` changed: the change is in the graph, the store changes nothing)."""
    items, original = getattr(var, "items", None), getattr(var, "original_items", None)
    if items is None or original is None or len(items) != len(original):
        return False
    for key, value in items.items():
        before = original.get(key.vt)
        if before is None:
            return False
        if not var.is_new_item(before, value):
            continue
        base = getattr(getattr(before.realize(), "proxy", None), "node", None)
        node = getattr(getattr(value, "proxy", None), "node", None)
        while node is not None and node is not base:
            node = changed_in_place(node)
        if base is None or node is not base:
            return False
    return True


def _restored(side_effects: Any, var: Any) -> bool:
    """Whether every attribute the step writes on ``var`` (an object that existed before the call)
    ends with the value it has now, so replaying the writes would change nothing: the value is the
    same Python constant, or the same object read back from the attribute itself."""
    owner = getattr(var, "value", None)
    writes = side_effects.store_attr_mutations.get(var)
    if owner is None or not writes or var.source is None:
        return False
    missing = object()
    for attr, final in writes.items():
        current = getattr(owner, attr, missing)
        if current is missing:
            return False
        source = getattr(final, "source", None)
        if source is not None and source.name == f"{var.source.name}.{attr}":
            continue  # the object that was there, put back
        try:
            if not final.is_python_constant():
                return False
            constant = final.as_python_constant()
        except Exception:
            return False
        if type(constant) is not type(current):
            return False
        if constant is not current and not (type(current) in (int, float, str, bool, bytes) and constant == current):
            return False
    return True


def _free_tensors(name: str, module: Any, fn: Callable[..., Any],
                  sources: Sequence[Tuple[str, torch.Tensor]]) -> List[FreeTensor]:
    """The tensors the traced step read besides its parameters, buffers and batch, as graph inputs;
    one that needs a gradient refuses the capture (eager accumulates its ``.grad``, a graph input
    would not)."""
    scope = {"L": {"module": module}, "G": fn.__globals__}
    free = []
    for source, value in sources:
        if not source.startswith(("L['module']", "G[", "dict(type(L['module'])")):
            raise CaptureError(f"`{name}` reads the tensor `{_readable(source)}`, which the capture cannot give"
                               " as a graph input")
        if value.requires_grad and torch.is_grad_enabled():
            kind = "a parameter of another module" if isinstance(value, torch.nn.Parameter) else "a tensor"
            raise CaptureError(f"`{name}` reads `{_readable(source)}`, {kind} that needs a gradient but is not a"
                               " parameter of the LightningModule: a graph input would get no gradient")
        free.append(FreeTensor(source, scope))
    return free


class StepGuard:
    """The guards of one captured step call. Build with :meth:`trace`; :meth:`check` each call."""

    __slots__ = ("_manager", "_name", "_fn", "lifted", "free")

    def __init__(self, manager: Any, name: str, fn: Callable[..., Any], lifted: Sequence[Lifted] = (),
                 free: Sequence[FreeTensor] = ()) -> None:
        self._manager = manager
        self._name = name
        self.lifted = list(lifted)
        self.free = list(free)  # graph inputs after the lifted floats, looked up at every call
        # the traced entry function owns dynamo's cache entry, and with it the globals dynamo installed
        # for its guards (e.g. the builtins dict): freeing the entry removes them and every check fails
        self._fn = fn

    @classmethod
    def trace(cls, module: Any, name: str, batch: Any, rest: tuple, context: Callable[[], ContextManager],  # noqa: C901
              lifted: Sequence[Lifted] = ()) -> "StepGuard":
        """Guards of ``module.<name>(batch, *rest)`` under ``context`` and the current grad mode, with
        the ``lifted`` floats as tensors (guarded as tensors, not by value). ``*_once`` logging calls are
        not traced (:func:`once_logging_ignored`): the ``make_fx`` trace that follows runs them, once,
        at the step where eager would.

        Raises :class:`CaptureError` naming the source line or the mutated value when the call is
        not one side-effect-free graph.
        """
        from torch._dynamo.symbolic_convert import InstructionTranslator
        from torch._dynamo.variables.base import AttributeMutationExisting, ValueMutationExisting

        fn = _entry(name)
        problem: List[str] = []
        free_sources: List[Tuple[str, torch.Tensor]] = []  # tensors read that are not params, buffers, batch
        known = {id(t) for t in tree_leaves((batch, rest))} | {id(x.tensor) for x in lifted} | {id(_PROBE)}
        known |= {id(t) for t in module.parameters()} | {id(t) for t in module.buffers()}

        def backend(gm: torch.fx.GraphModule, example_inputs: List[Any]) -> Callable[..., Any]:
            output = InstructionTranslator.current_tx().output
            side_effects = output.side_effects
            for var in side_effects._get_modified_vars():
                if isinstance(var.mutation_type, AttributeMutationExisting) and _restored(side_effects, var):
                    continue  # set and put back within the step (a context manager's global): no net change
                if isinstance(var.mutation_type, ValueMutationExisting) and _put_back(var):
                    continue  # `self.count += 1` on a buffer: the in-place add is in the graph
                if isinstance(var.mutation_type, (AttributeMutationExisting, ValueMutationExisting)):
                    where = _readable(var.source.name) if var.source is not None else type(var).__name__
                    attrs = side_effects.store_attr_mutations.get(var) if var.source is not None else None
                    if attrs and isinstance(var.mutation_type, AttributeMutationExisting):
                        where = ", ".join(_readable(f"{var.source.name}.{a}") for a in attrs)
                    problem.append(f"`{name}` changes `{where}` (a Python side effect that a graph would run once,"
                                   " at capture, instead of every step)")
                    break
            if not problem and output.random_calls:
                problem.append(f"`{name}` calls Python's `random` (a graph would freeze the numbers drawn at"
                               " capture)")
            if not problem:
                for ph, value in zip([n for n in gm.graph.nodes if n.op == "placeholder"], example_inputs):
                    if not isinstance(value, torch.Tensor):
                        problem.append(f"`{name}` reads a Python number that is not specialised ({ph.name})")
                        break
                    arg = ph.meta.get("grapharg")
                    source = getattr(arg, "source", None)
                    if source is not None and id(value) not in known:
                        free_sources.append((source.name, value))

            def never_run(*args: Any) -> Any:
                raise _Traced()

            return never_run

        from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

        compiled = torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)
        saved = module.__dict__.get("log", None)
        module.__dict__["log"] = _log_stub
        try:
            with torch._dynamo.config.patch(specialize_int=True, specialize_float=True, allow_empty_graphs=True,
                                            skip_nnmodule_hook_guards=False,
                                            automatic_dynamic_shapes=False, assume_static_by_default=True), \
                    once_logging_ignored(True), context(), _Substituted(lifted):
                compiled(module, batch, rest, _PROBE)
        except _Traced:
            pass
        except CaptureError:
            raise
        except Exception as e:  # a graph break: data-dependent control flow, print, an unknown C function, ...
            raise CaptureError(f"`{name}` is not one graph{_user_line(e)}: {_first_line(e)}") from e
        else:  # pragma: no cover - the backend always raises when the graph is reached
            raise CaptureError(f"`{name}` returned without reaching its graph")
        finally:
            if saved is None:
                module.__dict__.pop("log", None)
            else:
                module.__dict__["log"] = saved
        if problem:
            raise CaptureError(problem[0], side_effect="side effect" in problem[0])
        # the entry stays in place (its code object is ours alone and never called again under dynamo)
        entries = _debug_get_cache_entry_list(fn.__code__)
        if len(entries) != 1:
            raise CaptureError(f"`{name}`: dynamo produced {len(entries)} guarded entries, expected one")
        return cls(entries[0].guard_manager, name, fn, lifted, _free_tensors(name, module, fn, free_sources))

    def check(self, module: Any, batch: Any, rest: tuple) -> bool:
        """Whether the graph still computes what ``module.<name>(batch, *rest)`` would, after binding
        the lifted floats' current values into their tensors. Call it under the same context and grad
        mode as :meth:`trace`."""
        lifted = self.lifted
        if lifted:
            if not all(x.bind() for x in lifted):
                return False
            with _Substituted(lifted):
                return self._check(module, batch, rest)
        return self._check(module, batch, rest)

    def free_inputs(self) -> List[Any]:
        """The free tensors' current values, in graph-input order (after the lifted floats). Call it
        after :meth:`check` passed: their shapes, dtypes and devices are what the graph was built for."""
        return [f.get() for f in self.free]

    def _check(self, module: Any, batch: Any, rest: tuple) -> bool:
        d = module.__dict__
        saved = d.get("log", None)
        d["log"] = _log_stub
        try:
            return bool(self._manager.check({"module": module, "batch": batch, "rest": rest, "probe": _PROBE}))
        finally:
            if saved is None:
                del d["log"]
            else:
                d["log"] = saved

    def _failed_part(self, module: Any, batch: Any, rest: tuple) -> str:
        d = module.__dict__
        saved = d.get("log", None)
        d["log"] = _log_stub
        try:
            with _Substituted(self.lifted):
                info = self._manager.check_verbose({"module": module, "batch": batch, "rest": rest,
                                                    "probe": _PROBE})
        finally:
            if saved is None:
                d.pop("log", None)
            else:
                d["log"] = saved
        parts = list(getattr(info, "verbose_code_parts", []) or [])
        return parts[0].split("#", 1)[0].strip() if parts else ""

    def failure(self, module: Any, batch: Any, rest: tuple) -> str:
        """The first guard that fails now, in the user's words (for ``compile_report`` and warnings)."""
        for x in self.lifted:
            if type(getattr(x.owner, x.attr, None)) is not float:
                return f"{x.name} is no longer a float"
        code = self._failed_part(module, batch, rest)
        return _readable(code) if code else "a value the step read changed"

    def float_source(self, module: Any, batch: Any, rest: tuple) -> Optional[Tuple[Any, str, str]]:
        """(owner, attribute, name) when the failing guard is an attribute holding a float that now
        holds another float (a candidate for :class:`Lifted`); None otherwise."""
        match = _FLOAT_GUARD.match(self._failed_part(module, batch, rest))
        if match is None:
            return None
        scope = {"L": {"module": module, "batch": batch, "rest": rest, "probe": _PROBE}, "G": self._fn.__globals__}
        try:
            owner = eval(match["base"], {"__builtins__": {}}, scope)  # a guard source: subscripts and attributes
        except Exception:
            return None
        attr = match["attr"]
        if not hasattr(owner, "__dict__") or isinstance(owner, type) \
                or type(getattr(owner, attr, None)) is not float:
            return None
        return owner, attr, _readable(f"{match['base']}.{attr}")


__all__ = ["FreeTensor", "Lifted", "StepGuard", "once_logging_ignored"]
