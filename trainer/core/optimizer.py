"""``configure_optimizers`` parsing (every Lightning format), scheduler configs, LightningOptimizer."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.optim import Optimizer

from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.strategies.strategy import Strategy

_SCHEDULER_KEYS = {"scheduler", "name", "interval", "frequency", "reduce_on_plateau", "monitor", "strict"}


@dataclass
class LRSchedulerConfig:
    scheduler: Any
    name: Optional[str] = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: Optional[str] = None
    strict: bool = True


def _is_plateau(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or getattr(
        scheduler, "_is_plateau", False
    )


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, Optimizer) or (hasattr(obj, "step") and hasattr(obj, "param_groups"))


def _scheduler_config(scheduler: Any, monitor: Optional[str] = None, is_manual: bool = False) -> LRSchedulerConfig:
    if isinstance(scheduler, dict):
        if "scheduler" not in scheduler:
            raise MisconfigurationException(
                'The lr scheduler dict must have the key "scheduler" with its item being an lr scheduler'
            )
        extra = set(scheduler) - _SCHEDULER_KEYS
        if extra:
            warnings.warn(
                f"Found unsupported keys in the lr scheduler dict: {extra}."
                " HINT: remove them from the output of `configure_optimizers`.",
                RuntimeWarning,
            )
        if is_manual:
            # as Lightning: `interval` stays (LearningRateMonitor reads it), the stepping keys are ignored
            ignored = [k for k in scheduler if k in ("reduce_on_plateau", "monitor", "strict")]
            if ignored:
                warnings.warn(
                    f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be ignored."
                    " You need to call `lr_scheduler.step()` manually in manual optimization.",
                    RuntimeWarning,
                )
            scheduler = {k: v for k, v in scheduler.items() if k not in ignored}
        scheduler = {k: v for k, v in scheduler.items() if k in _SCHEDULER_KEYS}
        if "interval" in scheduler and scheduler["interval"] not in ("step", "epoch"):
            raise MisconfigurationException(
                'The "interval" key in lr scheduler dict must be "step" or "epoch"'
                f' but is "{scheduler["interval"]}"'
            )
        freq = scheduler.get("frequency", 1)
        if not isinstance(freq, int) or freq < 1:
            raise MisconfigurationException(
                f'The "frequency" key in lr scheduler dict must be a positive integer but is {freq!r}'
            )
        scheduler.setdefault("reduce_on_plateau", _is_plateau(scheduler["scheduler"]))
        if scheduler["reduce_on_plateau"] and scheduler.get("monitor") is None and not is_manual:
            raise MisconfigurationException(
                "The lr scheduler dict must include a monitor when a `ReduceLROnPlateau` scheduler is used."
                ' For example: {"optimizer": optimizer, "lr_scheduler":'
                ' {"scheduler": scheduler, "monitor": "your_loss"}}'
            )
        if monitor is not None and scheduler.get("monitor") is None:
            scheduler["monitor"] = monitor
        return LRSchedulerConfig(**scheduler)
    if _is_plateau(scheduler):
        if monitor is None and not is_manual:
            raise MisconfigurationException(
                "`configure_optimizers` must include a monitor when a `ReduceLROnPlateau` scheduler is used."
                ' For example: {"optimizer": optimizer, "lr_scheduler": scheduler, "monitor": "metric_to_track"}'
            )
        return LRSchedulerConfig(scheduler, reduce_on_plateau=True, monitor=monitor)
    return LRSchedulerConfig(scheduler)


def parse_optimizers(output: Any, is_manual: bool = False) -> Tuple[List[Optimizer], List[LRSchedulerConfig]]:  # noqa: C901
    """Turns ``configure_optimizers()``'s return value into optimizers and scheduler configs."""
    optimizers: List[Any] = []
    schedulers: List[Any] = []
    monitor: Optional[str] = None
    if output is None:
        warnings.warn("`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer")
        return [_MockOptimizer()], []
    if _is_optimizer(output):
        optimizers = [output]
    elif isinstance(output, dict):
        if "optimizer" not in output:
            raise MisconfigurationException(
                "`configure_optimizers` returned a dict without an 'optimizer' key. Allowed keys are"
                " 'optimizer', 'lr_scheduler' and 'monitor'."
            )
        optimizers = [output["optimizer"]]
        monitor = output.get("monitor")
        if output.get("lr_scheduler") is not None:
            schedulers = [output["lr_scheduler"]]
        extra = set(output) - {"optimizer", "lr_scheduler", "monitor"}
        if extra:
            warnings.warn(f"Found unsupported keys in the optimizer configuration: {extra}", RuntimeWarning)
    elif isinstance(output, (list, tuple)):
        if len(output) == 2 and isinstance(output[0], (list, tuple)) and all(_is_optimizer(o) for o in output[0]):
            optimizers = list(output[0])
            sch = output[1]
            schedulers = list(sch) if isinstance(sch, (list, tuple)) else [sch]
        elif all(isinstance(d, dict) for d in output) and output:
            for d in output:
                if "optimizer" not in d:
                    raise MisconfigurationException(
                        "`configure_optimizers` returned a list of dicts; each needs an 'optimizer' key."
                    )
                optimizers.append(d["optimizer"])
                if d.get("lr_scheduler") is not None:
                    sch = d["lr_scheduler"]
                    if d.get("monitor") is not None:
                        sch = dict(sch) if isinstance(sch, dict) else {"scheduler": sch}
                        sch.setdefault("monitor", d["monitor"])
                    schedulers.append(sch)
        elif all(_is_optimizer(o) for o in output):
            optimizers = list(output)
        else:
            raise MisconfigurationException(_unknown_format(output))
    else:
        raise MisconfigurationException(_unknown_format(output))
    for opt in optimizers:
        if not _is_optimizer(opt):
            raise MisconfigurationException(_unknown_format(output))
    configs = [_scheduler_config(s, monitor, is_manual) for s in schedulers]
    for config in configs:
        opt = getattr(config.scheduler, "optimizer", None)
        if opt is not None and all(opt is not o for o in optimizers):
            raise MisconfigurationException(
                "Some schedulers are attached with an optimizer that wasn't returned from `configure_optimizers`."
            )
    return optimizers, configs


def validate_scheduler_api(configs: List[LRSchedulerConfig], module: Any) -> None:
    """Lightning's scheduler checks: a scheduler must be stateful; under automatic optimization one that is not a
    PyTorch ``LRScheduler``/``ReduceLROnPlateau`` needs ``LightningModule.lr_scheduler_step`` overridden."""
    from trainer.hooks import lightning_is_overridden

    for config in configs:
        scheduler = config.scheduler
        name = type(scheduler).__name__
        if not (callable(getattr(scheduler, "state_dict", None)) and callable(getattr(scheduler, "load_state_dict",
                                                                                      None))):
            raise TypeError(f"The provided lr scheduler `{name}` is invalid. It should have `state_dict` and"
                            " `load_state_dict` methods defined.")
        pytorch_api = isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                             torch.optim.lr_scheduler.ReduceLROnPlateau))
        if not pytorch_api and module.automatic_optimization and not lightning_is_overridden(
                "lr_scheduler_step", module):
            raise MisconfigurationException(
                f"The provided lr scheduler `{name}` doesn't follow PyTorch's LRScheduler API. You should override"
                " the `LightningModule.lr_scheduler_step` hook with your own logic if you are using a custom LR"
                " scheduler."
            )


def _unknown_format(output: Any) -> str:
    return (
        f"Unknown configuration for model optimizers: {type(output).__name__}. `configure_optimizers` must return"
        " an optimizer, a list of optimizers, a tuple ([optimizers], [schedulers]), a dict with 'optimizer'"
        " (and optional 'lr_scheduler' and 'monitor') keys, a list of such dicts, or None."
    )


class _MockOptimizer(Optimizer):
    """Used when ``configure_optimizers`` returns None: steps run the closure only."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(1)], {})

    def add_param_group(self, param_group: Dict[Any, Any]) -> None:
        pass

    def load_state_dict(self, state_dict: Dict[Any, Any]) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def step(self, closure: Optional[Callable] = None) -> Any:  # type: ignore[override]
        if closure is not None:
            return closure()
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def __repr__(self) -> str:
        return "No Optimizer"


def _do_nothing_closure() -> None:
    return None


class LightningOptimizer:
    """Wraps a user optimizer so ``step`` goes through the precision plugin (scaling, hooks, clipping)."""

    def __init__(self, optimizer: Optimizer, strategy: "Strategy") -> None:
        self._optimizer = optimizer
        self._strategy = strategy
        self._on_before_step: Callable[[], None] = _do_nothing_closure
        self._on_after_step: Callable[[], None] = _do_nothing_closure

    @property
    def optimizer(self) -> Optimizer:
        return self._optimizer

    def __getattr__(self, item: str) -> Any:
        # Only reached when normal lookup fails. `copy.deepcopy`/`pickle` build the copy with `__new__` and ask it
        # for `__setstate__` etc. before `_optimizer` exists: reading `self._optimizer` here would call this method
        # again, forever. Lightning's wrapper subclasses the optimizer's class, so its copies never get here.
        try:
            optimizer = self.__dict__["_optimizer"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}") from None
        return getattr(optimizer, item)

    def __deepcopy__(self, memo: Dict[int, Any]) -> "LightningOptimizer":
        """Copies the wrapped optimizer (params, state, groups), not the strategy: the wrapper does not own it
        (Lightning holds a weak proxy). Copied as part of a copy of the strategy (a whole trainer), the copy
        points at that copied strategy."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = memo.get(id(value), value) if key == "_strategy" else copy.deepcopy(value, memo)
        return new

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self._optimizer.param_groups

    @property
    def state(self) -> Dict[Any, Any]:
        return self._optimizer.state

    def state_dict(self) -> Dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Optional[Callable[[], Any]] = None, **kwargs: Any) -> Any:
        before, after = self._on_before_step, self._on_after_step
        if before is not _do_nothing_closure:
            before()
        if closure is None:
            closure = _do_nothing_closure
        elif not callable(closure):
            raise MisconfigurationException("When `optimizer.step(closure)` is called, the closure should be callable")
        out = self._strategy.optimizer_step(self._optimizer, closure, **kwargs)
        if after is not _do_nothing_closure:
            after()
        return out

    def toggle_model(self, sync_grad: bool = True) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def _ctx() -> Any:
            module = self._strategy.lightning_module
            module.toggle_optimizer(self)
            try:
                yield
            finally:
                module.untoggle_optimizer(self)

        return _ctx()

    def __repr__(self) -> str:
        return f"LightningOptimizer({self._optimizer!r})"


__all__ = ["LRSchedulerConfig", "LightningOptimizer", "parse_optimizers"]
