"""Iterating data: the length of anything that may have one, and a fast, equivalent ``iter(DataLoader)``.

Shared by :class:`~trainer.utilities.combined_loader.CombinedLoader` (which every loop iterates) and the
loops' own plumbing (``trainer.loops.data``).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset


def sized_len(obj: Any) -> Optional[int]:
    """``len(obj)``, or None when ``obj`` has no (implemented) length."""
    try:
        return len(obj)
    except (TypeError, NotImplementedError):
        return None



def has_iterable_dataset(dataloader: Any) -> bool:
    """Whether ``dataloader`` reads an ``IterableDataset`` (Lightning's ``has_iterable_dataset``)."""
    return hasattr(dataloader, "dataset") and isinstance(dataloader.dataset, torch.utils.data.IterableDataset)


def has_len_all_ranks(
    dataloader: Any, strategy: Any, allow_zero_length_dataloader_with_multiple_devices: bool = False
) -> bool:
    """Lightning's ``has_len_all_ranks``: whether ``dataloader`` has a length, with Lightning's warnings (a total
    length of zero across ranks; an ``IterableDataset`` that defines ``__len__``) and its error when only this
    rank's loader is empty (unless ``allow_zero_length_dataloader_with_multiple_devices``)."""
    from trainer.utilities.rank_zero import rank_zero_warn

    local_length = sized_len(dataloader)
    if local_length is None:
        return False
    total_length = strategy.reduce(torch.tensor(local_length, device=strategy.root_device), reduce_op="sum")
    name = type(dataloader).__name__
    if total_length == 0:
        rank_zero_warn(f"Total length of `{name}` across ranks is zero. Please make sure this was your intention.")
    if total_length > 0 and local_length == 0:
        if not allow_zero_length_dataloader_with_multiple_devices:
            raise RuntimeError(f"`{name}` within local rank has zero length. Please make sure that it returns at"
                               " least 1 batch.")
        rank_zero_warn(f"Total length of `{name}` across ranks is zero, but local rank has zero length. Please be"
                       " cautious of uneven batch length.")
    if has_iterable_dataset(dataloader):
        rank_zero_warn("Your `IterableDataset` has `__len__` defined. In combination with multi-process data loading"
                       " (when num_workers > 1), `__len__` could be inaccurate if each worker is not configured"
                       " independently to avoid having duplicate data.")
    return True


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



from trainer.utilities import extract_batch_size  # noqa: E402 - Lightning's path for it

__all__ = ["extract_batch_size", "has_iterable_dataset", "has_len_all_ranks", "loader_iter", "sized_len"]
