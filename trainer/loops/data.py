"""Dataloader plumbing: requesting loaders, batch limits, combined loaders and a one-ahead fetcher."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from trainer.exceptions import MisconfigurationException
from trainer.hooks import is_overridden

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

Number = Union[int, float]


def sized_len(obj: Any) -> Optional[int]:
    try:
        return len(obj)
    except (TypeError, NotImplementedError):
        return None


def flatten_loaders(loaders: Any) -> Tuple[List[Any], Any]:
    """Flattens a loader, list/tuple or dict of loaders; returns the flat list and a rebuild spec."""
    if isinstance(loaders, dict):
        keys = list(loaders.keys())
        return [loaders[k] for k in keys], ("dict", keys)
    if isinstance(loaders, (list, tuple)):
        return list(loaders), ("list", type(loaders))
    return [loaders], ("single", None)


def _rebuild(spec: Any, items: List[Any]) -> Any:
    kind, info = spec
    if kind == "dict":
        return dict(zip(info, items))
    if kind == "list":
        return info(items) if info is tuple else list(items)
    return items[0]


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


def disable_shuffle(loader: Any) -> Any:
    """A copy of ``loader`` with a SequentialSampler (``overfit_batches``)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, SequentialSampler):
        return loader
    if not isinstance(loader.sampler, RandomSampler):
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


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


class TrainLoader:
    """Training loaders combined as Lightning's ``max_size_cycle``: shorter loaders restart until the longest ends."""

    def __init__(self, loaders: Any, limits: Optional[List[Number]] = None) -> None:
        self.flattened, self._spec = flatten_loaders(loaders)
        self.limits = limits

    def _lengths(self) -> List[Number]:
        out: List[Number] = []
        for i, dl in enumerate(self.flattened):
            n = sized_len(dl)
            length: Number = float("inf") if n is None else n
            if self.limits is not None:
                length = min(length, self.limits[i])
            out.append(length)
        return out

    def __len__(self) -> int:
        lengths = self._lengths()
        m = max(lengths) if lengths else 0
        if m == float("inf"):
            raise TypeError("infinite")
        return int(m)

    def __iter__(self) -> Iterator[Any]:
        if len(self.flattened) == 1:
            it = loader_iter(self.flattened[0])
            limit = self.limits[0] if self.limits is not None else float("inf")
            n = sized_len(self.flattened[0])
            if limit == float("inf") or (n is not None and limit >= n):  # the limit cuts nothing
                if self._spec[0] == "single":
                    return it
                return (_rebuild(self._spec, [b]) for b in it)
            return _limited(it, int(limit), self._spec)
        return self._cycle()

    def _cycle(self) -> Iterator[Any]:
        lengths = self._lengths()
        total = max(lengths)
        iterators = [loader_iter(dl) for dl in self.flattened]
        count = 0
        while count < total:
            batches = []
            for i, dl in enumerate(self.flattened):
                try:
                    if count and lengths[i] != float("inf") and count % int(lengths[i]) == 0:
                        raise StopIteration
                    batches.append(next(iterators[i]))
                except StopIteration:
                    iterators[i] = loader_iter(dl)
                    batches.append(next(iterators[i]))
            count += 1
            yield _rebuild(self._spec, batches)


def loader_iter(loader: Any) -> Iterator[Any]:
    """``iter(loader)``, or for a plain in-process ``DataLoader`` over a map-style dataset an
    equivalent iterator without the per-batch machinery of DataLoader's iterator object (profiler
    scope, fetcher indirection, bookkeeping that only matters with workers or iterable datasets).

    Same batches, same order, same RNG consumption: the sampler is iterated exactly as DataLoader
    iterates it, and the random draw DataLoader's iterator makes when it is created (its
    ``_base_seed``) is made here too, at the same point. Over a ``TensorDataset`` of plain contiguous
    tensors with the default sampler, batch sampler and ``default_collate``, a batch is each tensor
    indexed with the batch's indices (one gather instead of ``batch_size`` item lookups and a
    ``torch.stack``); the result is bit-identical, a list like ``default_collate`` returns.

    Anything else (a DataLoader subclass, workers, pinned memory, a timeout, an iterable dataset or
    datapipe, an active autograd profiler, which records DataLoader's ``__next__`` scope) gets
    ``iter(loader)`` itself.
    """
    if not _plain_loader(loader):
        return iter(loader)
    dataset = loader.dataset
    collate = loader.collate_fn
    sampler_iter = iter(loader._index_sampler)  # the order of _BaseDataLoaderIter.__init__: sampler, then seed
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)  # its _base_seed draw
    if not loader._auto_collation:  # batch_size=None: the dataset's items are the batches
        return (collate(dataset[index]) for index in sampler_iter)
    tensors = _gatherable_tensors(loader)
    if tensors is not None:
        return _gathered_batches(sampler_iter, tensors, dataset, collate)
    getitems = getattr(dataset, "__getitems__", None)
    if getitems:
        return (collate(getitems(indices)) for indices in sampler_iter)
    return (collate([dataset[i] for i in indices]) for indices in sampler_iter)


def _plain_loader(loader: Any) -> bool:
    if type(loader) is not DataLoader or loader.num_workers != 0 or loader.pin_memory or loader.timeout != 0:
        return False
    from torch.utils.data import IterableDataset
    from torch.utils.data.datapipes.datapipe import IterDataPipe, MapDataPipe

    if isinstance(loader.dataset, (IterableDataset, IterDataPipe, MapDataPipe)):
        return False
    return not torch.autograd._profiler_enabled()


def _gatherable_tensors(loader: DataLoader) -> Optional[Tuple[torch.Tensor, ...]]:
    """The TensorDataset's tensors when a batch of them can be gathered instead of collated."""
    from torch.utils.data import default_collate

    dataset = loader.dataset
    if type(dataset) is not TensorDataset or loader.collate_fn is not default_collate:
        return None
    batch_sampler = loader.batch_sampler
    # the default samplers yield lists of Python ints (a list holding tensors would index differently)
    if type(batch_sampler) is not BatchSampler or type(batch_sampler.sampler) not in (SequentialSampler, RandomSampler):
        return None
    tensors = dataset.tensors
    for t in tensors:
        if (type(t) is not torch.Tensor or t.layout != torch.strided or t.requires_grad or t.is_quantized
                or t.is_conj() or t.is_neg() or not t.is_contiguous() or t.dim() == 0):
            return None
    return tensors


def _gathered_batches(sampler_iter: Iterator[Any], tensors: Tuple[torch.Tensor, ...], dataset: Any,
                      collate: Any) -> Iterator[Any]:
    for indices in sampler_iter:
        if type(indices) is list and indices:
            yield [t[indices] for t in tensors]
        else:  # pragma: no cover - BatchSampler yields non-empty lists
            yield collate([dataset[i] for i in indices])


def _limited(it: Iterator[Any], limit: int, spec: Any) -> Iterator[Any]:
    single = spec[0] == "single"
    for i, batch in enumerate(it):
        if i >= limit:
            return
        yield batch if single else _rebuild(spec, [batch])


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
    "Fetcher", "TrainLoader", "loader_iter", "parse_num_batches", "request_dataloader", "has_source", "sized_len",
    "flatten_loaders", "set_sampler_epoch", "disable_shuffle", "seed_workers", "check_iterable", "is_inf",
]
