"""Progress counters, stored in checkpoints with the same keys as Lightning's ``loops`` entry."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict


@dataclass
class ReadyCompleted:
    ready: int = 0
    completed: int = 0

    def reset(self) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, 0)

    def reset_on_restart(self) -> None:
        self.ready = self.completed

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for k, v in state.items():
            if k in self.__dataclass_fields__:
                setattr(self, k, v)


@dataclass
class StartedTracker(ReadyCompleted):
    started: int = 0

    def reset_on_restart(self) -> None:
        super().reset_on_restart()
        self.started = self.completed


@dataclass
class ProcessedTracker(StartedTracker):
    processed: int = 0

    def reset_on_restart(self) -> None:
        super().reset_on_restart()
        self.processed = self.completed


@dataclass
class Progress:
    """``total`` counts across the whole run; ``current`` resets each epoch/run."""

    total: Any = field(default_factory=ProcessedTracker)
    current: Any = field(default_factory=ProcessedTracker)

    def increment_ready(self) -> None:
        self.total.ready += 1
        self.current.ready += 1

    def increment_started(self) -> None:
        self.total.started += 1
        self.current.started += 1

    def increment_processed(self) -> None:
        self.total.processed += 1
        self.current.processed += 1

    def increment_completed(self) -> None:
        self.total.completed += 1
        self.current.completed += 1

    def reset(self) -> None:
        self.total.reset()
        self.current.reset()

    def reset_on_run(self) -> None:
        self.current.reset()

    def reset_on_restart(self) -> None:
        self.current.reset_on_restart()

    def state_dict(self) -> Dict[str, Any]:
        return {"total": self.total.state_dict(), "current": self.current.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.total.load_state_dict(state.get("total", {}))
        self.current.load_state_dict(state.get("current", {}))

    @classmethod
    def ready_completed(cls) -> "Progress":
        return cls(ReadyCompleted(), ReadyCompleted())

    @classmethod
    def started(cls) -> "Progress":
        return cls(StartedTracker(), StartedTracker())


@dataclass
class BatchProgress(Progress):
    is_last_batch: bool = False

    def reset_on_run(self) -> None:
        super().reset_on_run()
        self.is_last_batch = False

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["is_last_batch"] = self.is_last_batch
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.is_last_batch = state.get("is_last_batch", False)


class OptimizationProgress:
    """Optimizer steps and zero_grad calls (``global_step`` = completed steps)."""

    def __init__(self) -> None:
        self.step = Progress.ready_completed()
        self.zero_grad = Progress.started()

    @property
    def optimizer_steps(self) -> int:
        return self.step.total.completed

    @property
    def optimizer(self) -> "OptimizationProgress":
        """Lightning's nesting, ``optim_progress.optimizer.step`` / ``.zero_grad`` (its state_dict has it too):
        here one object holds both levels."""
        return self

    def reset_on_run(self) -> None:
        self.step.reset_on_run()
        self.zero_grad.reset_on_run()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": {"step": self.step.state_dict(), "zero_grad": self.zero_grad.state_dict()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        opt = state.get("optimizer", {})
        self.step.load_state_dict(opt.get("step", {}))
        self.zero_grad.load_state_dict(opt.get("zero_grad", {}))
