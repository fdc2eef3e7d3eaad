"""Seeding every RNG the Trainer touches, and isolating RNG state around work that must not move it."""
from __future__ import annotations

import logging
import os
import random
from contextlib import contextmanager
from typing import Any, Dict, Generator, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)
_MAX_SEED = np.iinfo(np.uint32).max
_MIN_SEED = np.iinfo(np.uint32).min


def seed_everything(seed: Optional[int] = None, workers: bool = False, verbose: bool = True) -> int:
    """Seeds Python, NumPy and torch (CPU and CUDA); sets ``PL_GLOBAL_SEED`` (and ``PL_SEED_WORKERS``)."""
    if seed is None:
        env_seed = os.environ.get("PL_GLOBAL_SEED")
        if env_seed is None:
            seed = 0
        else:
            try:
                seed = int(env_seed)
            except ValueError:
                seed = 0
    if not isinstance(seed, int):
        seed = int(seed)
    if not (_MIN_SEED <= seed <= _MAX_SEED):
        log.warning(f"{seed} is not in bounds, numpy accepts from {_MIN_SEED} to {_MAX_SEED}; using 0.")
        seed = 0
    if verbose:
        log.info(f"Seed set to {seed}")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_SEED_WORKERS"] = f"{int(workers)}"
    return seed


def reset_seed() -> None:
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is None:
        return
    workers = os.environ.get("PL_SEED_WORKERS", "0")
    seed_everything(int(seed), workers=bool(int(workers)), verbose=False)


def collect_rng_states(include_cuda: bool = True) -> Dict[str, Any]:
    """Every RNG state, as tensors and plain Python values only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if include_cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy()
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


@contextmanager
def isolate_rng(include_cuda: bool = True) -> Generator[None, None, None]:
    """Restores every RNG state on exit (sanity checking must not change what training sees)."""
    states = collect_rng_states(include_cuda)
    try:
        yield
    finally:
        set_rng_states(states)


def worker_init_fn(worker_id: int, rank: Optional[int] = None) -> None:
    """Seeds NumPy, Python and torch differently in each DataLoader worker (``seed_everything(workers=True)``)."""
    global_rank = rank if rank is not None else int(os.environ.get("RANK", 0))
    process_seed = torch.initial_seed()
    base_seed = process_seed - worker_id
    ss = np.random.SeedSequence([base_seed, worker_id, global_rank])
    np.random.seed(ss.generate_state(4))
    torch_ss, stdlib_ss = ss.spawn(2)
    torch.manual_seed(torch_ss.generate_state(1, dtype=np.uint64)[0])
    stdlib_seed = (stdlib_ss.generate_state(2, dtype=np.uint64).astype(object) * [1 << 64, 1]).sum()
    random.seed(stdlib_seed)
