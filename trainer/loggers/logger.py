"""The ``Logger`` base class (Lightning's ``pytorch_lightning.loggers.Logger`` interface)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from argparse import Namespace
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from torch import Tensor
from torch.nn import Module

if TYPE_CHECKING:  # pragma: no cover
    from trainer.callbacks.model_checkpoint import ModelCheckpoint


class Logger(ABC):
    """Base class for experiment loggers.

    Subclasses implement ``name``, ``version``, ``log_metrics`` and ``log_hyperparams``; loggers that write to disk
    also override ``save_dir`` / ``root_dir`` / ``log_dir`` (``ModelCheckpoint`` puts its files under
    ``save_dir/name/version/checkpoints`` of the first logger).
    """

    @property
    @abstractmethod
    def name(self) -> Optional[str]:
        """The experiment name."""

    @property
    @abstractmethod
    def version(self) -> Optional[Union[int, str]]:
        """The experiment version."""

    @property
    def root_dir(self) -> Optional[str]:
        """Folder that holds every version of this experiment, or ``None`` when nothing is saved locally."""
        return None

    @property
    def log_dir(self) -> Optional[str]:
        """Folder of this run's version, or ``None`` when nothing is saved locally."""
        return None

    @property
    def save_dir(self) -> Optional[str]:
        """Root folder of all experiments, or ``None`` when nothing is saved locally."""
        return None

    @property
    def group_separator(self) -> str:
        return "/"

    # A plain attribute (not a property) so subclasses may define ``experiment`` either way.
    experiment: Any = None

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        """Record ``metrics`` (name -> number or scalar tensor) at ``step``."""

    @abstractmethod
    def log_hyperparams(self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
        """Record hyperparameters."""

    def log_graph(self, model: Module, input_array: Optional[Tensor] = None) -> None:
        """Record the model graph (no-op unless a logger supports it)."""

    def save(self) -> None:
        """Flush logged data to storage."""

    def finalize(self, status: str) -> None:
        """Finish the experiment; ``status`` is e.g. ``"success"``, ``"failed"``."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: "ModelCheckpoint") -> None:
        """Called by ``ModelCheckpoint`` after each checkpoint file is written."""


class _DummyExperiment:
    """Stands in for an experiment object where none exists: every method is a no-op."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, _: str) -> Callable:
        return self.nop

    def __getitem__(self, idx: int) -> "_DummyExperiment":
        return self

    def __setitem__(self, *args: Any, **kwargs: Any) -> None:
        pass


class DummyLogger(Logger):
    """A logger that records nothing (Lightning uses it to mute a user's logger during tuning)."""

    def __init__(self) -> None:
        self._experiment = _DummyExperiment()

    @property
    def experiment(self) -> _DummyExperiment:  # type: ignore[override]
        return self._experiment

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    def __getitem__(self, idx: int) -> "DummyLogger":
        return self

    def __getattr__(self, name: str) -> Callable:
        def method(*args: Any, **kwargs: Any) -> None:
            return None

        return method
