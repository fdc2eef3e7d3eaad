"""The compiled step's caching CPU allocator (``csrc/step_allocator.cpp``, part of ``trainer._C``).

Why: on the CPU every intermediate of a training step is allocated and freed again each step;
glibc maps blocks of a few hundred KiB and more fresh from the kernel and unmaps them on free, so
each step faults its whole working set back in (~1,300-1,900 minor faults per step on the small
GPT benchmark) in 4 KiB pages. While the compiled step graph runs, this allocator serves blocks
of at least ``MIN_BYTES`` from per-size free lists instead (the step asks for the same sizes every
step: nothing is mapped after the first), 2 MiB-aligned and marked for transparent huge pages when
they are that large. Outside the graph call, and on every other thread, torch's own allocator
serves as before. ``CompileConfig(cpu_caching_allocator=False)`` turns it off.

The cache is capped at ``LIMIT_BYTES`` of free blocks and emptied when a fit/validate/test ends
(:func:`empty_cache`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

MIN_BYTES = 64 * 1024  # smaller blocks: glibc's heap already reuses them without faults
LIMIT_BYTES = 1 << 30  # free blocks kept at most (a freed block beyond it is unmapped)
HUGE_MIN_BYTES = 2 << 20  # blocks this large are rounded up to whole 2 MiB (huge) pages

_C: Any = None


def module() -> Optional[Any]:
    """``trainer._C`` with the allocator installed, or None where the extension is not built."""
    global _C
    if _C is not None:
        return _C
    try:
        from trainer import _C as ext
    except ImportError:
        return None
    if not hasattr(ext, "step_alloc_install"):  # an older build of the extension
        return None
    ext.step_alloc_install(MIN_BYTES, LIMIT_BYTES, True, HUGE_MIN_BYTES)
    _C = ext
    return _C


def run(ext: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with this thread's large CPU allocations served by the cache (``ext``: :func:`module`)."""
    before = ext.step_alloc_set_active(True)
    try:
        return fn(*args)
    finally:
        ext.step_alloc_set_active(before)


def has_large_buffer(gm: Any) -> bool:
    """Whether an FX graph computes a tensor of at least ``MIN_BYTES`` (one the cache would serve)."""
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.numel() * val.element_size() >= MIN_BYTES:
            return True
    return False


def stats() -> Dict[str, Any]:
    """``installed``, and once installed: ``cached_bytes`` (free, kept), ``live_bytes`` (handed out),
    ``mapped`` (blocks mapped so far: a steady step maps none), ``hits`` (allocations served from the cache)."""
    if _C is None:
        return {"installed": False}
    return _C.step_alloc_stats()


def empty_cache() -> None:
    """Unmaps every free cached block (blocks still in use return to the cache when freed)."""
    if _C is not None:
        _C.step_alloc_empty_cache()


__all__ = ["HUGE_MIN_BYTES", "LIMIT_BYTES", "MIN_BYTES", "empty_cache", "has_large_buffer", "module", "run", "stats"]
