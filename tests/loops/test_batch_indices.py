"""The predict loader's index-recording batch sampler (trainer/loops/batch_indices.py)."""
from __future__ import annotations

import copy
import pickle

import torch
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from trainer.loops.batch_indices import IndexBatchSamplerWrapper, recorded_batch_indices, with_batch_index_recording


def _dataset(n: int = 7) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32))


def test_rebuilt_loader_yields_the_same_batches_and_records_their_indices():
    loader = DataLoader(_dataset(), batch_size=3, drop_last=False)
    rebuilt = with_batch_index_recording(loader)
    assert rebuilt is not loader and isinstance(rebuilt.batch_sampler, IndexBatchSamplerWrapper)
    assert [b[0].tolist() for b in rebuilt] == [b[0].tolist() for b in loader]
    assert recorded_batch_indices(rebuilt) == [[0, 1, 2], [3, 4, 5], [6]]
    # a new epoch starts a new record; the wrapped sampler's attributes still read through
    list(iter(rebuilt))
    assert recorded_batch_indices(rebuilt) == [[0, 1, 2], [3, 4, 5], [6]]
    assert rebuilt.batch_sampler.batch_size == 3 and isinstance(rebuilt.batch_sampler.sampler, SequentialSampler)
    assert len(rebuilt) == 3


def test_loaders_without_dataset_indices_are_kept():
    class MyLoader(DataLoader):
        pass

    subclassed = MyLoader(_dataset(), batch_size=2)
    unbatched = DataLoader(_dataset(), batch_size=None)
    for loader in (subclassed, unbatched, [torch.zeros(2)]):
        assert with_batch_index_recording(loader) is loader
        assert recorded_batch_indices(loader) is None
    already = with_batch_index_recording(DataLoader(_dataset(), batch_size=2))
    assert with_batch_index_recording(already) is already


def test_wrapper_copies_and_pickles_without_recursing():
    wrapper = IndexBatchSamplerWrapper(torch.utils.data.BatchSampler(SequentialSampler(range(4)), 2, False))
    list(wrapper)
    for clone in (copy.deepcopy(wrapper), pickle.loads(pickle.dumps(wrapper))):
        assert clone.seen_batch_indices == [[0, 1], [2, 3]] and list(clone) == [[0, 1], [2, 3]]
