"""Multi-tensor Triton launches: one launch updates up to ``MAX_SLOTS`` tensors.

A Triton kernel cannot index its arguments, and pointer tables (int64 tensors of data_ptrs) hide
the mutated tensors from torch.compile (functionalization would clone the wrong buffers), so each
tensor gets its own pointer arguments ("slots") and a generated kernel dispatches program ids to
slots by the cumulative block counts ``BLOCK_END1..BLOCK_ENDK``:

    pid < BLOCK_END1 -> tensor 0, block pid;  BLOCK_END1 <= pid < BLOCK_END2 -> tensor 1, ...

The generated source is written to a file (Triton reads a kernel's source with ``inspect``) and
cached per (body, slot count).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

MAX_SLOTS = 16
_cache: dict[tuple, object] = {}
_GEN_DIR = Path(os.environ.get("TRAINER_TRITON_GEN_DIR", Path(tempfile.gettempdir()) / f"trainer_triton_{os.getuid()}"))


def _generate(body_module: str, body: str, slot_args: Sequence[str], common: Sequence[str],
              constexprs: Sequence[str], k: int) -> str:
    params = []
    for i in range(k):
        params += [f"{a}{i}" for a in slot_args] + [f"N{i}"]
    params += [f"BLOCK_END{i}" for i in range(1, k + 1)] + ["BASE"] + list(common)
    params += [f"{c}: tl.constexpr" for c in constexprs]
    lines = [
        "import triton",
        "import triton.language as tl",
        f"from {body_module} import {body} as _body",
        "",
        "",
        "@triton.jit",
        f"def kernel({', '.join(params)}):",
        "    pid = tl.program_id(0)",
    ]
    for i in range(k):
        start = "0" if i == 0 else f"BLOCK_END{i}"
        call = ", ".join([f"{a}{i}" for a in slot_args] + [f"N{i}", f"pid - {start}", f"BASE + {i}"]
                         + list(common) + list(constexprs))
        kw = "if" if i == 0 else "elif"
        lines += [f"    {kw} pid < BLOCK_END{i + 1}:", f"        _body({call})"]
    return "\n".join(lines) + "\n"


def get_kernel(body_module: str, body: str, slot_args: Sequence[str], common: Sequence[str],
               constexprs: Sequence[str], k: int):
    key = (body_module, body, tuple(slot_args), tuple(common), tuple(constexprs), k)
    kern = _cache.get(key)
    if kern is not None:
        return kern
    src = _generate(body_module, body, slot_args, common, constexprs, k)
    digest = hashlib.sha1(src.encode()).hexdigest()[:12]
    _GEN_DIR.mkdir(parents=True, exist_ok=True)
    path = _GEN_DIR / f"{body}_k{k}_{digest}.py"
    if not path.exists():  # content-addressed: concurrent writers write identical bytes
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(src)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"trainer_triton_gen.{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kern = mod.kernel
    _cache[key] = kern
    return kern


def launches(numels: Sequence[int], block: int):
    """Yields (lo, hi, cumulative block ends) for groups of at most MAX_SLOTS tensors."""
    n = len(numels)
    for lo in range(0, n, MAX_SLOTS):
        hi = min(n, lo + MAX_SLOTS)
        starts, acc = [], 0
        for i in range(lo, hi):
            acc += (numels[i] + block - 1) // block
            starts.append(acc)
        yield lo, hi, starts


def by_dtype(tensors: Sequence[torch.Tensor]) -> dict[torch.dtype, list[int]]:
    """Indices grouped by dtype (a kernel specialises on its pointers' element types)."""
    out: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        out.setdefault(t.dtype, []).append(i)
    return out


def grad_multiplier(like: torch.Tensor, maximize: bool, grad_scale, clip_coef) -> torch.Tensor:
    """sign * clip_coef / grad_scale as a 1-element fp32 tensor on ``like``'s device (traceable ops)."""
    g = torch.full((1,), -1.0 if maximize else 1.0, dtype=torch.float32, device=like.device)
    if clip_coef is not None:
        g = g * clip_coef.to(device=like.device, dtype=torch.float32).reshape(1)
    if grad_scale is not None:
        g = g / grad_scale.to(device=like.device, dtype=torch.float32).reshape(1)
    return g


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill one block of memory, in some dimension order."""
    if t.numel() <= 1:
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(t: torch.Tensor, like: torch.Tensor) -> bool:
    """``t`` covers one dense block in the same element order as ``like`` (a flat walk pairs them)."""
    return _dense(t) and t.shape == like.shape and (t.numel() <= 1 or t.stride() == like.stride())


def flat_operands(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                  states: dict[str, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Checks the kernels' layout contract and returns the grads in it.

    The kernels walk each tensor's memory as one flat array, as the C++ ``prepare()`` does: a
    parameter may be in any dense layout (channels_last included), and its gradient and states
    must walk in the same order. A gradient in another layout is copied into the parameter's
    (``empty_like`` keeps a dense layout); a state in another layout is an error naming it, since
    a copy would not be written back.
    """
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if not _dense(p):
            raise ValueError(f"trainer_triton: params[{i}] (shape {tuple(p.shape)}, stride {p.stride()}) is not "
                             "dense: expected a contiguous or channels_last (non-overlapping, dense) tensor")
        for name, ts in states.items():
            if len(ts) and not same_layout(ts[i], p):
                raise ValueError(f"trainer_triton: {name}[{i}] (stride {ts[i].stride()}) is not laid out like "
                                 f"params[{i}] (stride {p.stride()}): create it with "
                                 "torch.zeros_like(param, memory_format=torch.preserve_format)")
        out.append(g if same_layout(g, p) else torch.empty_like(p, dtype=g.dtype).copy_(g))
    return out
