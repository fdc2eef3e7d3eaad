"""Which dataset indices each predict batch holds, for prediction writers (Lightning's
``_IndexBatchSamplerWrapper``): the predict loader's batch sampler is wrapped so that every batch
it yields is remembered, and batch ``i`` of the epoch maps to ``seen_batch_indices[i]``.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator, List, Optional

from torch.utils.data import DataLoader, IterableDataset


class IndexBatchSamplerWrapper:
    """A batch sampler that yields what it wraps and records each batch's indices (reset per epoch)."""

    def __init__(self, batch_sampler: Any) -> None:
        self._batch_sampler = batch_sampler
        self.seen_batch_indices: List[List[int]] = []

    def __iter__(self) -> Iterator[List[int]]:
        self.seen_batch_indices = []
        for batch in self._batch_sampler:
            self.seen_batch_indices.append(list(batch))
            yield batch

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def __getattr__(self, name: str) -> Any:
        # `sampler`, `batch_size`, `drop_last`, `set_epoch`...: the wrapped sampler's, so the loader and
        # code that inspects `loader.batch_sampler` see what they saw before
        if name == "_batch_sampler":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self._batch_sampler, name)


def with_batch_index_recording(loader: Any) -> Any:
    """``loader`` rebuilt around an ``IndexBatchSamplerWrapper``, or ``loader`` itself when its batches have no
    dataset indices (an iterable dataset, no batch sampler) or it is not a plain ``DataLoader`` (a subclass's
    constructor may need arguments we cannot know)."""
    if type(loader) is not DataLoader or isinstance(loader.dataset, IterableDataset):
        return loader
    batch_sampler = loader.batch_sampler
    if batch_sampler is None or isinstance(batch_sampler, IndexBatchSamplerWrapper):
        return loader
    return DataLoader(loader.dataset, batch_sampler=IndexBatchSamplerWrapper(batch_sampler), **_loader_options(loader))


def recorded_batch_indices(loader: Any) -> Optional[List[List[int]]]:
    """The indices ``loader`` has yielded this epoch, batch by batch; None when it does not record them."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if isinstance(batch_sampler, IndexBatchSamplerWrapper):
        return batch_sampler.seen_batch_indices
    return None


# DataLoader arguments that neither choose nor batch the samples; copied as they are
_PASSED_THROUGH = ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
                   "generator", "prefetch_factor", "persistent_workers", "pin_memory_device", "in_order")


def _loader_options(loader: DataLoader) -> dict:
    accepted = inspect.signature(DataLoader.__init__).parameters
    options = {name: getattr(loader, name) for name in _PASSED_THROUGH if name in accepted and hasattr(loader, name)}
    if loader.num_workers == 0:  # torch rejects these without workers
        options.pop("prefetch_factor", None)
        options["persistent_workers"] = False
    return options


__all__ = ["IndexBatchSamplerWrapper", "recorded_batch_indices", "with_batch_index_recording"]
