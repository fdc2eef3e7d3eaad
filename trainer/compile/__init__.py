"""The compiled engine: ``Trainer(compile=...)`` (see :mod:`trainer.compile.capture` for the design).

``compile=True`` compiles the automatic-optimization training step when it can and falls back to
the eager engine with one warning naming the cause; ``"strict"`` raises instead; ``False`` is the
eager engine. A :class:`CompileConfig` sets the details.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

from trainer.exceptions import MisconfigurationException

DEFAULT_PASSES: Tuple[str, ...] = ("amp", "accumulation", "clipping", "optimizer_fusion")


@dataclass
class CompileConfig:
    """How the training step is compiled.

    mode: ``"default"`` (fall back to eager with one warning) or ``"strict"`` (raise instead).
    passes: the ordered pass list; ``disable``: names to skip (e.g. ``("optimizer_fusion",)``).
    cudagraphs: reserved for the GPU runtime (CUDA graphs replay); ignored on CPU.
    debug_dir: when set, each graph before/after each pass is written there as Python code.
    eval_steps: compile validation/test/predict steps with ``torch.compile`` (not yet wired).
    """

    mode: str = "default"
    passes: Tuple[str, ...] = DEFAULT_PASSES
    disable: Tuple[str, ...] = ()
    cudagraphs: bool = False
    debug_dir: Optional[str] = None
    eval_steps: bool = False
    enabled: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("default", "strict"):
            raise MisconfigurationException(f"`CompileConfig(mode={self.mode!r})`: allowed 'default' or 'strict'.")
        from trainer.compile.passes import PASSES

        for name in (*self.passes, *self.disable):
            if name not in PASSES:
                raise MisconfigurationException(
                    f"`CompileConfig`: unknown pass {name!r}; known passes: {list(PASSES)}."
                )
        self.passes = tuple(self.passes)
        self.disable = tuple(self.disable)

    @property
    def strict(self) -> bool:
        return self.mode == "strict"

    @property
    def active_passes(self) -> Tuple[str, ...]:
        return tuple(p for p in self.passes if p not in self.disable)


def resolve_compile(value: Any) -> CompileConfig:
    """``Trainer(compile=...)`` -> CompileConfig; anything else raises naming the value."""
    if isinstance(value, CompileConfig):
        return value
    if value is True:
        return CompileConfig()
    if value is False:
        return CompileConfig(enabled=False)
    if value == "strict":
        return CompileConfig(mode="strict")
    raise MisconfigurationException(
        f"`Trainer(compile={value!r})` is invalid: allowed values are True, False, 'strict' or a"
        " `trainer.compile.CompileConfig`."
    )


class CompileError(RuntimeError):
    """The step could not be compiled (raised under ``compile="strict"``)."""


__all__ = ["CompileConfig", "CompileError", "DEFAULT_PASSES", "resolve_compile"]
