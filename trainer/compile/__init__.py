"""The compiled engine: ``Trainer(compile=...)`` (see :mod:`trainer.compile.capture` for the design).

Compile is on by default: ``Trainer()`` without ``compile=`` reads ``$TRAINER_COMPILE``
(``0``/``1``/``strict``; unset means ``1``). ``compile=True`` compiles the automatic-optimization
training step (and the validation/test/predict steps) when it can and falls back to the eager
engine with one warning naming the cause; ``"strict"`` raises instead; ``False`` is the eager
engine. A :class:`CompileConfig` sets the details. Compiled graphs are cached on disk by inductor
(FX graph + AOT autograd caches, ``$TORCHINDUCTOR_CACHE_DIR``); the engine's own per-machine
facts live in ``$TRAINER_CACHE_DIR`` (default ``~/.cache/trainer``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from trainer.exceptions import MisconfigurationException

# accumulation before amp: the fp16 inf check reads the window's summed gradients, as the eager
# engine's unscale_ reads the accumulated .grad; gradient_sync (DDP only) after accumulation (one
# all-reduce per window) and before amp/clipping (they read the synchronised gradients)
DEFAULT_PASSES: Tuple[str, ...] = ("accumulation", "gradient_sync", "amp", "clipping", "optimizer_fusion")


@dataclass
class CompileConfig:
    """How the training step is compiled.

    mode: ``"default"`` (fall back to eager with one warning) or ``"strict"`` (raise instead).
    passes: the pass list, a subsequence of ``DEFAULT_PASSES`` (that order, each pass once: checked
        here); ``disable``: names to skip (e.g. ``("optimizer_fusion",)``). Skipping a pass never
        changes the results, only how the work is done: where this fit uses the feature of a
        skipped semantic pass (``accumulation`` with ``accumulate_grad_batches > 1``,
        ``gradient_sync`` under DDP, ``amp`` under ``16-mixed``, ``clipping`` with
        ``gradient_clip_val``), the step runs as the split tier (forward+backward compiled, the
        feature done by the eager engine's machinery; ``compile_report.fallback_reason`` names the
        pass). ``optimizer_fusion`` only changes the update's kernels.
    cudagraphs: replay the whole-step graphs (tier ``full``, one device) as CUDA graphs
        (:mod:`trainer.compile.cudagraphs`): the kernel launches of a step are recorded once and
        replayed with one launch. Needs ``accelerator="cuda"`` (checked at Trainer construction);
        where a step cannot be recorded (split tier, DDP/FSDP, an input off the GPU) it runs
        without, and ``compile_report.cudagraph_reason`` says why.
    cudagraph_warmup: calls of each step graph run normally before it is recorded (lazy cuBLAS and
        allocator initialisation, Triton autotuning must not happen during a capture).
    cpu_caching_allocator: CPU step graphs take their large buffers from a caching allocator
        (:mod:`trainer.compile.allocator`): no page faults and huge pages after the first step,
        instead of glibc mapping and unmapping each activation every step. Needs ``trainer._C``.
    cpu_attention: CPU step graphs run ``F.scaled_dot_product_attention`` on short sequences (<= 128)
        with trainer's own kernels (:mod:`trainer.compile.attention`) instead of ATen's flash kernels.
    debug_dir: when set, each graph before/after each pass is written there as Python code.
    eval_steps: compile ``validation_step``/``test_step``/``predict_step`` too (:mod:`trainer.compile.eval`).
    max_graphs: graphs per step variant (one per batch shape) before the step falls back to eager
        with a warning: every new shape costs a compile (seconds on CPU); shapes that never repeat
        (variable-length batches) would make the "compiled" run slower than eager.
    regions: where the step cannot be one graph (a data-dependent branch, ``.item()``, ``print``, a
        Python side effect, an op the tracer does not know), run ``training_step`` as compiled regions
        between graph breaks (TorchDynamo without ``fullgraph``; :mod:`trainer.compile.regions`) with
        the eager loop around it and the compiled update, instead of the eager engine. Single device;
        ``mode="strict"`` raises instead.
    max_recompiles: captures again in one fit because a Python value the step reads changed (a
        guard failed: ``self.beta`` set by a callback each epoch, a submodule switched to eval, a
        parameter unfrozen) before the step falls back to eager with a warning; a value that changes
        at every step falls back at its second change in a row.
    """

    mode: str = "default"
    passes: Tuple[str, ...] = DEFAULT_PASSES
    disable: Tuple[str, ...] = ()
    cudagraphs: bool = False
    cudagraph_warmup: int = 2
    cpu_caching_allocator: bool = True
    cpu_attention: bool = True
    debug_dir: Optional[str] = None
    eval_steps: bool = True
    max_graphs: int = 8
    max_recompiles: int = 8
    regions: bool = True
    enabled: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("default", "strict"):
            raise MisconfigurationException(f"`CompileConfig(mode={self.mode!r})`: allowed 'default' or 'strict'.")
        from trainer.compile.passes import PASSES

        for arg in ("passes", "disable"):
            value = getattr(self, arg)
            if isinstance(value, str) or not isinstance(value, (tuple, list)):
                raise MisconfigurationException(
                    f"`CompileConfig({arg}={value!r})`: expected a tuple of pass names (e.g. {arg}=({value!r},)),"
                    f" from {list(DEFAULT_PASSES)}.")
        for name in (*self.passes, *self.disable):
            if name not in PASSES:
                raise MisconfigurationException(
                    f"`CompileConfig`: unknown pass {name!r}; known passes: {list(PASSES)}."
                )
        _check_pass_order(tuple(self.passes))
        for name in ("cudagraphs", "cpu_caching_allocator", "cpu_attention", "eval_steps", "regions"):
            if not isinstance(getattr(self, name), bool):
                raise MisconfigurationException(
                    f"`CompileConfig({name}={getattr(self, name)!r})`: allowed True or False.")
        for name in ("max_graphs", "max_recompiles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MisconfigurationException(f"`CompileConfig({name}={value!r})`: expected an int >= 0.")
        if isinstance(self.cudagraph_warmup, bool) or not isinstance(self.cudagraph_warmup, int) \
                or self.cudagraph_warmup < 1:
            raise MisconfigurationException(
                f"`CompileConfig(cudagraph_warmup={self.cudagraph_warmup!r})`: expected an int >= 1 (the"
                " capture must not be the graph's first run).")
        self.passes = tuple(self.passes)
        self.disable = tuple(self.disable)

    @property
    def strict(self) -> bool:
        return self.mode == "strict"

    @property
    def active_passes(self) -> Tuple[str, ...]:
        return tuple(p for p in self.passes if p not in self.disable)


def _check_pass_order(passes: Tuple[str, ...]) -> None:
    """``passes`` must be a subsequence of DEFAULT_PASSES: each pass reads what the earlier ones left
    in the graph (see the comment above DEFAULT_PASSES), and a pass run twice would e.g. fold the
    clip coefficient or the fp16 unscale into the update twice."""
    seen = set()
    for name in passes:
        if name in seen:
            raise MisconfigurationException(
                f"`CompileConfig(passes={passes!r})`: pass {name!r} is listed twice; allowed: each pass at most once,"
                f" in the order of {DEFAULT_PASSES!r} (leave a pass out, or name it in `disable=`, to skip it).")
        seen.add(name)
    rank = {name: i for i, name in enumerate(DEFAULT_PASSES)}
    for a, b in zip(passes, passes[1:]):
        if rank[a] > rank[b]:
            raise MisconfigurationException(
                f"`CompileConfig(passes={passes!r})`: {b!r} must come before {a!r}; allowed: a subsequence of"
                f" {DEFAULT_PASSES!r} (the passes depend on this order; leave a pass out, or name it in `disable=`,"
                " to skip it).")


ENV_VAR = "TRAINER_COMPILE"


def resolve_compile(value: Any = None) -> CompileConfig:
    """``Trainer(compile=...)`` -> CompileConfig; anything else raises naming the value.

    ``None`` (the argument not given) reads ``$TRAINER_COMPILE``: ``1``/``true`` (also when unset:
    compile is on by default), ``0``/``false`` (the eager engine) or ``strict``.
    """
    if value is None:
        env = os.environ.get(ENV_VAR, "1").strip().lower()
        if env in ("1", "true", "on", "yes", ""):
            return CompileConfig()
        if env in ("0", "false", "off", "no"):
            return CompileConfig(enabled=False)
        if env == "strict":
            return CompileConfig(mode="strict")
        raise MisconfigurationException(
            f"`{ENV_VAR}={os.environ[ENV_VAR]!r}` is invalid: allowed values are 0, 1 and strict.")
    if isinstance(value, CompileConfig):
        return value
    if value is True:
        return CompileConfig()
    if value is False:
        return CompileConfig(enabled=False)
    if value == "strict":
        return CompileConfig(mode="strict")
    raise MisconfigurationException(
        f"`Trainer(compile={value!r})` is invalid: allowed values are True, False, 'strict', a"
        f" `trainer.compile.CompileConfig`, or None (read ${ENV_VAR}; on when unset)."
    )


class CompileError(RuntimeError):
    """The step could not be compiled (raised under ``compile="strict"``)."""


__all__ = ["CompileConfig", "CompileError", "DEFAULT_PASSES", "ENV_VAR", "resolve_compile"]
