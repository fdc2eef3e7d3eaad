"""Dataloader plumbing: requesting loaders, combining them (:class:`CombinedLoader`), batch limits,
``overfit_batches`` and a one-ahead fetcher. Every stage (train, val, test, predict) goes through the same
functions, so several loaders behave the same everywhere."""
from __future__ import annotations

import copy
import math
import os
from typing import TYPE_CHECKING, Any, Iterable, Iterator, List, Optional, Tuple, Union

from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler

from trainer.exceptions import MisconfigurationException
from trainer.hooks import is_overridden
from trainer.utilities.combined_loader import CombinedLoader
from trainer.utilities.data import _gatherable_tensors, has_len_all_ranks, loader_iter, sized_len  # noqa: F401
from trainer.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

Number = Union[int, float]


def loader_length(trainer: "Trainer", loader: Any) -> Optional[int]:
    """A loader's length as the loops count batches, checked the way Lightning checks it (``has_len_all_ranks``:
    its warnings for an empty total or a sized ``IterableDataset``); None when it has no length."""
    allow = bool(getattr(trainer.lightning_module, "allow_zero_length_dataloader_with_multiple_devices", False))
    return sized_len(loader) if has_len_all_ranks(loader, trainer.strategy, allow) else None


def parse_num_batches(prefix: str, length: Number, limit: Number) -> Number:
    """Lightning's ``_parse_num_batches``: the number of batches a limit (int count or float share) leaves."""
    if length == 0:
        return 0
    num_batches: Number = length
    if isinstance(limit, int):
        num_batches = min(length, limit)
    elif isinstance(limit, float) and length != float("inf"):
        num_batches = int(length * limit)
    elif limit != 1.0:
        raise MisconfigurationException(
            f"When using an `IterableDataset`, `Trainer(limit_{prefix}_batches)` must be `1.0` or an int."
            f" An int specifies `num_{prefix}_batches` to use."
        )
    if num_batches == 0 and limit > 0.0 and isinstance(length, int):
        min_percentage = 1.0 / length
        raise MisconfigurationException(
            f"You requested to check {limit} of the `{prefix}_dataloader` but {limit} * {length} < 1. Please increase"
            f" the `limit_{prefix}_batches` argument. Try at least `limit_{prefix}_batches={min_percentage}`"
        )
    return num_batches


def request_dataloader(trainer: "Trainer", name: str) -> Any:
    """Gets ``name`` (e.g. ``"train_dataloader"``) from the loaders passed to the method, the datamodule or the module.

    Lightning's order: explicitly passed loaders, then the datamodule's hook, then the module's.
    """
    source = trainer._data_sources.get(name)
    if source is not None:
        return source
    dm = trainer.datamodule
    module = trainer.lightning_module
    if dm is not None and is_overridden(name, dm):
        return trainer._hooks.call_datamodule(name)
    if module is not None and is_overridden(name, module):
        return trainer._hooks.call_module(name)
    return None


def has_source(trainer: "Trainer", name: str) -> bool:
    if trainer._data_sources.get(name) is not None:
        return True
    dm = trainer.datamodule
    if dm is not None and is_overridden(name, dm):
        return True
    module = trainer.lightning_module
    return module is not None and is_overridden(name, module)


def check_iterable(loader: Any, name: str) -> None:
    if loader is None:
        raise TypeError(f"An invalid dataloader was returned from `{name}()`. Found None.")
    try:
        iter(loader) if not isinstance(loader, DataLoader) else None
    except TypeError:
        raise TypeError(
            f"An invalid dataloader was returned from `{name}()`. Found {type(loader).__name__}: it is not iterable."
        ) from None


def combine(loaders: Any, mode: str) -> CombinedLoader:
    """The loaders a hook returned as a :class:`CombinedLoader`: one given by the user is kept (with its mode),
    anything else (one loader, a list/dict of them) is combined under the stage's default ``mode``."""
    return loaders if isinstance(loaders, CombinedLoader) else CombinedLoader(loaders, mode)


def resolve_overfit_batches(combined: CombinedLoader, prefix: str) -> None:
    """``overfit_batches``: every loader reads its data in order, so each epoch sees the same batches.

    Unless every loader that has a sampler already has a ``SequentialSampler``, warns as Lightning does and gives
    each loader with a dataset a ``SequentialSampler`` over it (the loader is otherwise unchanged).
    """
    flat = combined.flattened
    if all(isinstance(dl.sampler, SequentialSampler) for dl in flat if hasattr(dl, "sampler")):
        return
    rank_zero_warn(
        f"You requested to overfit but enabled {prefix} dataloader shuffling."
        f" We are turning off the {prefix} dataloader shuffling for you."
    )
    combined.flattened = [with_sequential_sampler(dl) if hasattr(dl, "dataset") else dl for dl in flat]


def with_sequential_sampler(loader: Any) -> Any:
    """A copy of ``loader`` that reads its dataset in order (DataLoader subclasses and every other setting kept).

    A loader over an iterable dataset has no order to change, and one with a custom batch sampler owns its
    order: both are returned as they are.
    """
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        return loader
    sampler = SequentialSampler(loader.dataset)
    new = copy.copy(loader)
    # DataLoader refuses new samplers once built; the copy is a fresh object with the same settings
    object.__setattr__(new, "sampler", sampler)
    if batch_sampler is not None:
        batched = BatchSampler(sampler, batch_sampler.batch_size, batch_sampler.drop_last)
        object.__setattr__(new, "batch_sampler", batched)
    object.__setattr__(new, "_iterator", None)
    return new


def seed_workers(loader: Any) -> Any:
    """Installs Lightning's worker seeding when ``seed_everything(workers=True)`` was used."""
    if (
        isinstance(loader, DataLoader)
        and loader.num_workers > 0
        and loader.worker_init_fn is None
        and os.environ.get("PL_SEED_WORKERS", "0") == "1"
    ):
        from functools import partial

        from trainer.seed import worker_init_fn

        loader.worker_init_fn = partial(worker_init_fn, rank=0)
    return loader


class Fetcher:
    """Lightning's ``_PrefetchDataFetcher``: sized loaders are fetched lazily (``done`` from the length);
    loaders without a length are fetched one batch ahead so the loop knows which batch is the last.

    Fetching at the same points as Lightning keeps RNG consumption (sampler seeds, random
    transforms) in Lightning's order, which the parity tests rely on.
    """

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable
        self.iterator: Optional[Iterator[Any]] = None
        self._buffer: List[Any] = []
        self.done = False
        self.fetched = 0
        self.length: Optional[int] = None
        self._profiled: Optional[Tuple[Any, str]] = None

    def profile_fetches(self, profiler: Any, action: str) -> None:
        """Each fetch is recorded by ``profiler`` (when enabled) as ``action``, Lightning's
        ``[<loop>].<stage>_next``."""
        self._profiled = (profiler, action) if profiler.enabled else None

    def reset_iterator(self) -> None:
        self.iterator = iter(self.iterable)
        self.fetched = 0
        self._buffer = []
        self.length = sized_len(self.iterable)
        self.done = self.length == 0
        if self.length is None:
            try:
                self._buffer.append(self._raw_next())
            except StopIteration:
                pass

    def _raw_next(self) -> Any:
        assert self.iterator is not None
        try:
            if self._profiled is None:
                batch = next(self.iterator)
            else:
                with self._profiled[0].profile(self._profiled[1]):
                    batch = next(self.iterator)
        except StopIteration:
            self.done = True
            raise
        self.fetched += 1
        if self.length is not None:
            self.done = self.fetched >= self.length
        return batch

    def __next__(self) -> Any:
        if self.iterator is None:
            self.reset_iterator()
        if self._buffer:
            batch = self._buffer.pop(0)
            try:
                self._buffer.append(self._raw_next())
            except StopIteration:
                self.done = not self._buffer
            return batch
        if not self.done:
            return self._raw_next()
        raise StopIteration


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Calls ``set_epoch`` once on each distinct sampler of ``loader`` (e.g. a DistributedSampler)."""
    seen = set()
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        for candidate in (obj, getattr(obj, "sampler", None)):
            if candidate is None or id(candidate) in seen:
                continue
            seen.add(id(candidate))
            fn = getattr(candidate, "set_epoch", None)
            if callable(fn):
                fn(epoch)


def is_inf(x: Number) -> bool:
    return isinstance(x, float) and math.isinf(x)


__all__ = [
    "Fetcher", "combine", "loader_iter", "loader_length", "parse_num_batches", "request_dataloader", "has_source", "sized_len",
    "set_sampler_epoch", "resolve_overfit_batches", "with_sequential_sampler", "seed_workers", "check_iterable",
    "is_inf",
]
