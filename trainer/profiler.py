"""The profilers under their first path here (``trainer.profiler``): the classes live in :mod:`trainer.profilers`
(Lightning's path), re-exported; ``resolve_profiler`` turns ``Trainer(profiler=...)`` into a Profiler."""
from __future__ import annotations

from typing import Any

from trainer.exceptions import MisconfigurationException
from trainer.profilers import (
    AdvancedProfiler,
    PassThroughProfiler,
    Profiler,
    PyTorchProfiler,
    SimpleProfiler,
    XLAProfiler,
)

_PROFILERS = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler, "xla": XLAProfiler}
PROFILER_CHOICES = tuple(_PROFILERS)


def resolve_profiler(profiler: Any) -> Profiler:
    """None/falsy -> PassThroughProfiler; a name (any case) -> that profiler with its defaults; a Profiler as is."""
    if isinstance(profiler, str):
        name = profiler.lower()
        if name not in _PROFILERS:
            raise MisconfigurationException(
                "When passing string value for the `profiler` parameter of `Trainer`,"
                f" it can only be one of {list(_PROFILERS)}"
            )
        return _PROFILERS[name]()
    if isinstance(profiler, Profiler):
        return profiler
    if not profiler:
        return PassThroughProfiler()
    raise MisconfigurationException(
        f"`Trainer(profiler={profiler!r})` is not valid. Allowed: None, one of {list(_PROFILERS)} or a Profiler"
        " instance (trainer.profilers.Profiler)."
    )


__all__ = ["AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler", "XLAProfiler",
           "PROFILER_CHOICES", "resolve_profiler"]
