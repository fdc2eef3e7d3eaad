"""Lightning classes whose backing package cannot run beside this build (TPU/XLA, bitsandbytes and
Transformer Engine need CUDA or TPU builds; Comet and Lightning's litlogger are not implemented here).

Each is importable at Lightning's path so a script's imports resolve; constructing one raises at once with the
package it needs, or, where that package is importable, that ``trainer`` does not implement the class yet.
"""
from __future__ import annotations

import importlib.util
from typing import Any


def requires(name: str, package: str, install: str, what: str) -> type:
    """A class named ``name`` that raises ``ModuleNotFoundError`` (``package`` missing) or ``NotImplementedError``
    (present, but not supported by ``trainer``) when constructed."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if importlib.util.find_spec(package) is None:
            raise ModuleNotFoundError(
                f"`{name}` needs the `{package}` package ({what}), which is not installed: `{install}`.")
        raise NotImplementedError(
            f"`{name}` ({what}) is not implemented by `trainer` yet; use pytorch-lightning's for this run.")

    return type(name, (), {"__init__": __init__, "__doc__": f"Lightning's `{name}` ({what}): {install}.",
                           "__module__": __name__})


__all__ = ["requires"]
