"""One training batch under automatic or manual optimization (Lightning's closure semantics).

Automatic optimization, for batch ``i`` of an accumulation window of ``k``::

    closure = training_step -> [zero_grad on the window's first batch] -> backward(loss / k)
    non-final micro-batch:  closure()                      (no optimizer step, no all-reduce)
    final micro-batch:      module.optimizer_step(closure) -> optimizer.step(wrapped closure)
                            wrapped closure = closure, unscale, on_before_optimizer_step, clip
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Dict, Optional

from torch import Tensor

from trainer.exceptions import MisconfigurationException
from trainer.loops.progress import OptimizationProgress, Progress

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer


class ClosureResult:
    """What one training_step produced: the (normalized) loss for backward, its detached copy, extras."""

    __slots__ = ("closure_loss", "loss", "extra")

    def __init__(self, closure_loss: Optional[Tensor], extra: Optional[Dict[str, Any]] = None) -> None:
        self.closure_loss = closure_loss
        # detached view, not a copy: nothing writes to the loss in place after the step
        self.loss = closure_loss.detach() if closure_loss is not None else None
        self.extra = extra if extra is not None else {}

    @classmethod
    def from_training_step_output(cls, output: Any, normalize: int = 1) -> "ClosureResult":
        closure_loss, extra = None, {}
        if isinstance(output, Mapping):
            closure_loss = output.get("loss")
            if closure_loss is None:
                raise MisconfigurationException(
                    "In automatic_optimization, when `training_step` returns a dict, the 'loss' key needs to be present"
                )
            extra = {k: v for k, v in output.items() if k != "loss"}
        elif isinstance(output, Tensor):
            closure_loss = output
        elif output is not None:
            raise MisconfigurationException(
                "In automatic optimization, `training_step` must return a Tensor, a dict, or None (where the step"
                f" will be skipped). Got {type(output).__name__}."
            )
        if closure_loss is not None:
            if not isinstance(closure_loss, Tensor):
                raise MisconfigurationException(
                    f"`training_step` returned a loss of type {type(closure_loss).__name__}; it must be a Tensor."
                )
            if closure_loss.numel() != 1:
                raise MisconfigurationException(
                    "`training_step` must return a scalar loss (one element), got a tensor of shape"
                    f" {tuple(closure_loss.shape)}. Reduce it, e.g. with `.mean()`."
                )
            if normalize > 1:
                closure_loss = closure_loss / normalize
        return cls(closure_loss, extra=extra)

    def asdict(self) -> Dict[str, Any]:
        return {"loss": self.loss, **self.extra}


class _Closure:
    """training_step -> zero_grad -> backward, run by ``optimizer.step(closure)`` or directly."""

    __slots__ = ("loop", "args", "optimizer", "zero_grad", "result")

    def __init__(self, loop: "AutomaticOptimization", args: tuple, optimizer: Any, zero_grad: bool) -> None:
        self.loop = loop
        self.args = args
        self.optimizer = optimizer
        self.zero_grad = zero_grad
        self.result: Optional[ClosureResult] = None

    def __call__(self) -> Optional[Tensor]:
        loop = self.loop
        trainer = loop.trainer
        if trainer.profiler.enabled and not loop._profiling_compiled_step:
            output = trainer._hooks.call_strategy("training_step", *self.args)
        else:
            output = trainer.strategy.training_step(*self.args)
        result = ClosureResult.from_training_step_output(output, trainer.accumulate_grad_batches)
        self.result = result
        if self.zero_grad:
            if loop._plain_zero_grad:  # nobody hooks zero_grad: the counters, then the optimizer's own
                zg = loop.optim_progress.zero_grad
                zg.increment_ready()
                zg.increment_started()
                self.optimizer.optimizer.zero_grad()
                zg.increment_completed()
            else:
                loop.on_before_zero_grad(self.optimizer)
                loop.optimizer_zero_grad(self.optimizer)
        if result.closure_loss is not None and not loop._skip_backward:
            if loop._plain_backward:  # no scaling and no backward hooks: what strategy.backward would do
                result.closure_loss.backward()
            else:
                trainer._hooks.call_strategy("backward", result.closure_loss, self.optimizer)
        return result.closure_loss


class AutomaticOptimization:
    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self.optim_progress = OptimizationProgress()
        self._skip_backward = False
        self._batch_idx = 0
        self._plain_backward = False
        self._plain_zero_grad = False
        self._plain_zero_grad_hooks = False  # nothing hooks on_before_zero_grad (optimizer_zero_grad may be)
        # inside the compiled engine's profiled step (its regions tier runs the eager closure within it)
        self._profiling_compiled_step = False
        self._engine: Any = None  # trainer.compile.engine.CompiledEngine, one per fit (see compile_report)
        self._engine_key: Any = None
        self.compile_report: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        """Copies (``copy.deepcopy(trainer.callbacks)`` reaches this through a callback's trainer, as in Lightning's
        own tests) leave the compiled engine behind: it holds dynamo guards and compiled code, which neither copy
        nor pickle, and is a cache that the next step rebuilds."""
        state = self.__dict__.copy()
        state["_engine"] = state["_engine_key"] = None
        report = state.get("compile_report")
        if getattr(report, "_eval_engine", None) is not None:  # set by Trainer.compile_report
            report = copy.copy(report)
            report._eval_engine = None
            state["compile_report"] = report
        return state

    def drop_compiled_engine(self) -> None:
        """The optimizer's state tensors were replaced mid-fit (a checkpoint restored by the tuner): the compiled
        engine, which updates the tensors it found at set-up, is built again at the next step."""
        self._engine = self._engine_key = None

    def prepare(self) -> None:
        """Decides once per fit which per-step dispatch can be skipped because nothing hooks it.

        Saves ~10 Python calls a step on small models (the overhead-bound case) and changes nothing
        observable: the skipped calls would only have run hooks nobody overrides.
        """
        from trainer.hooks import is_overridden
        from trainer.plugins.precision.fsdp import FSDPPrecision
        from trainer.precision import MixedPrecision, Precision
        from trainer.strategies.strategy import Strategy

        trainer = self.trainer
        module = trainer.lightning_module
        hooks = trainer._hooks
        prec = trainer.precision_plugin
        unscaled = type(prec) is Precision or (type(prec) in (MixedPrecision, FSDPPrecision) and prec.scaler is None)
        profiled = trainer.profiler.enabled  # a profiler records each of these hooks: nothing is skipped
        self._plain_backward = (
            not profiled
            and unscaled
            and type(trainer.strategy).backward is Strategy.backward
            and not hooks.callbacks_for("on_before_backward")
            and not hooks.callbacks_for("on_after_backward")
            and not any(is_overridden(n, module) for n in ("on_before_backward", "on_after_backward", "backward"))
        )
        self._plain_zero_grad_hooks = not profiled and not hooks.callbacks_for("on_before_zero_grad") and not \
            is_overridden("on_before_zero_grad", module)
        self._plain_zero_grad = self._plain_zero_grad_hooks and not is_overridden("optimizer_zero_grad", module)

    def _compiled_engine(self) -> Any:
        """The compiled engine for this fit, or None when ``Trainer(compile=False)``."""
        trainer = self.trainer
        config = trainer._compile_config
        if not config.enabled:
            return None
        key = (id(trainer.lightning_module), id(trainer.optimizers[0]) if trainer.optimizers else None)
        if self._engine is None or self._engine_key != key:
            from trainer.compile.engine import CompiledEngine
            from trainer.compile.report import CompileReport

            self.compile_report = CompileReport()
            self._engine = CompiledEngine(trainer, config, self.compile_report)
            self._engine_key = key
        return self._engine

    def run(self, optimizer: Any, batch_idx: int, args: tuple, should_accumulate: bool) -> Dict[str, Any]:
        trainer = self.trainer
        engine = None
        if trainer._compile_config.enabled:
            engine = self._engine
            if engine is None or self._engine_key[0] != id(trainer.lightning_module):
                engine = self._compiled_engine()
        if engine is not None and not self._skip_backward:
            profiler = trainer.profiler
            if profiler.enabled:  # Lightning's action for the strategy's step; the compiled step is all of it
                self._profiling_compiled_step = True
                try:
                    with profiler.profile(f"[Strategy]{type(trainer.strategy).__name__}.training_step"):
                        out = engine.run(self, optimizer, batch_idx, args, should_accumulate)
                finally:
                    self._profiling_compiled_step = False
            else:
                out = engine.run(self, optimizer, batch_idx, args, should_accumulate)
            if out is not None:
                return out
        return self.run_eager(batch_idx, args, should_accumulate)

    def run_eager(self, batch_idx: int, args: tuple, should_accumulate: bool) -> Dict[str, Any]:
        """The eager engine's batch: the closure (training_step, zero_grad, backward) run by the
        optimizer step, or directly while accumulating."""
        trainer = self.trainer
        self._batch_idx = batch_idx
        zero_grad = not self._skip_backward and batch_idx % trainer.accumulate_grad_batches == 0
        closure = _Closure(self, args, trainer.strategy._lightning_optimizers[0], zero_grad)
        if should_accumulate:
            with trainer.strategy.block_backward_sync():
                closure()
        else:
            self._optimizer_step(batch_idx, closure)
        result = closure.result
        if result is None or result.loss is None:
            return {}
        return result.asdict()

    def _optimizer_step(self, batch_idx: int, closure: _Closure) -> None:
        trainer = self.trainer
        step = self.optim_progress.step
        step.increment_ready()
        trainer._hooks.call_module(
            "optimizer_step", trainer.current_epoch, batch_idx, trainer.strategy._lightning_optimizers[0], closure
        )
        step.increment_completed()

    def on_before_zero_grad(self, optimizer: Any) -> None:
        trainer = self.trainer
        zg = self.optim_progress.zero_grad
        zg.total.ready += 1
        zg.current.ready += 1
        trainer._hooks.call_callbacks("on_before_zero_grad", optimizer)
        trainer._hooks.call_module("on_before_zero_grad", optimizer)
        zg.increment_started()

    def optimizer_zero_grad(self, optimizer: Any) -> None:
        trainer = self.trainer
        trainer._hooks.call_module("optimizer_zero_grad", trainer.current_epoch, self._batch_idx, optimizer)
        self.optim_progress.zero_grad.increment_completed()


class ManualOptimization:
    """``automatic_optimization=False``: the user's training_step calls ``manual_backward`` and ``opt.step()``."""

    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self.optim_step_progress = Progress.ready_completed()

    def _on_before_step(self) -> None:
        self.optim_step_progress.increment_ready()
        self.trainer.profiler.start("optimizer_step")

    def _on_after_step(self) -> None:
        self.trainer.profiler.stop("optimizer_step")
        self.optim_step_progress.increment_completed()

    def run(self, args: tuple) -> Dict[str, Any]:
        trainer = self.trainer
        for opt in trainer.strategy._lightning_optimizers:
            opt._on_before_step = self._on_before_step
            opt._on_after_step = self._on_after_step
        try:
            output = trainer._hooks.call_strategy("training_step", *args)  # Lightning's [Strategy] action
        finally:
            from trainer.core.optimizer import _do_nothing_closure

            for opt in trainer.strategy._lightning_optimizers:
                opt._on_before_step = _do_nothing_closure
                opt._on_after_step = _do_nothing_closure
        extra: Dict[str, Any] = {}
        if isinstance(output, Mapping):
            extra = dict(output)
        elif isinstance(output, Tensor):
            extra = {"loss": output}
        elif output is not None:
            raise MisconfigurationException(
                "In manual optimization, `training_step` must either return a Tensor or have no return."
            )
        if "loss" in extra and isinstance(extra["loss"], Tensor):
            extra["loss"] = extra["loss"].detach()
        return extra
