"""Dataloader plumbing: Fetcher, batch limits, sequential samplers for overfit_batches, the fast loader iterator."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler, TensorDataset

from trainer.exceptions import MisconfigurationException
from trainer.loops.data import Fetcher, parse_num_batches, sized_len, with_sequential_sampler


class Counting:
    """An iterable that records how many items were pulled."""

    def __init__(self, n, sized=True):
        self.n, self.sized, self.pulled = n, sized, 0

    def __iter__(self):
        for i in range(self.n):
            self.pulled += 1
            yield i

    def __len__(self):
        if not self.sized:
            raise TypeError("no len")
        return self.n


def test_fetcher_sized_is_lazy_and_done_on_last():
    src = Counting(3)
    f = Fetcher(src)
    f.reset_iterator()
    assert src.pulled == 0 and not f.done
    seen = []
    for _ in range(3):
        seen.append(next(f))
        assert src.pulled == len(seen)  # nothing fetched ahead
        assert f.done == (len(seen) == 3)
    assert seen == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(f)


def test_fetcher_unsized_fetches_one_ahead():
    src = Counting(3, sized=False)
    f = Fetcher(src)
    f.reset_iterator()
    assert src.pulled == 1 and not f.done
    assert next(f) == 0 and src.pulled == 2 and not f.done
    assert next(f) == 1 and not f.done
    assert next(f) == 2 and f.done  # known to be last when it is handed out
    with pytest.raises(StopIteration):
        next(f)


def test_fetcher_empty_and_reset():
    f = Fetcher(Counting(0))
    f.reset_iterator()
    assert f.done
    with pytest.raises(StopIteration):
        next(f)
    f = Fetcher(Counting(0, sized=False))
    f.reset_iterator()
    with pytest.raises(StopIteration):
        next(f)
    g = Fetcher([1, 2])
    assert next(g) == 1  # lazily starts
    g.reset_iterator()
    assert [next(g), next(g)] == [1, 2]


@pytest.mark.parametrize("length, limit, expected", [
    (10, 1.0, 10), (10, 0.5, 5), (10, 3, 3), (10, 20, 10), (10, 0.0, 0), (10, 0, 0), (0, 0.5, 0),
    (float("inf"), 1.0, float("inf")), (float("inf"), 7, 7),
])
def test_parse_num_batches(length, limit, expected):
    assert parse_num_batches("train", length, limit) == expected


def test_parse_num_batches_errors():
    with pytest.raises(MisconfigurationException, match="limit_val_batches=0.1"):
        parse_num_batches("val", 10, 0.05)
    with pytest.raises(MisconfigurationException, match="IterableDataset"):
        parse_num_batches("train", float("inf"), 0.5)


def test_with_sequential_sampler_keeps_the_loader_but_its_order():
    class MyLoader(DataLoader):
        pass

    ds = TensorDataset(torch.arange(8.0))
    shuffled = MyLoader(ds, batch_size=3, shuffle=True, drop_last=True)
    plain = with_sequential_sampler(shuffled)
    assert type(plain) is MyLoader and plain is not shuffled
    assert isinstance(plain.sampler, SequentialSampler) and isinstance(shuffled.sampler, RandomSampler)
    assert plain.batch_sampler.sampler is plain.sampler
    assert plain.batch_size == 3 and plain.drop_last and plain.dataset is ds
    assert [b[0].tolist() for b in plain] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    unbatched = with_sequential_sampler(DataLoader(ds, batch_size=None, shuffle=True))
    assert isinstance(unbatched.sampler, SequentialSampler) and [int(b[0]) for b in unbatched][:3] == [0, 1, 2]


def test_with_sequential_sampler_leaves_what_it_cannot_reorder():
    class It(IterableDataset):
        def __iter__(self):
            return iter([1, 2])

    iterable = DataLoader(It())
    assert with_sequential_sampler(iterable) is iterable
    ds = TensorDataset(torch.arange(8.0))
    custom = DataLoader(ds, batch_sampler=[[0, 1], [2, 3]])
    assert with_sequential_sampler(custom) is custom
    assert with_sequential_sampler([1, 2]) == [1, 2]


def test_sized_len():
    class It(IterableDataset):
        def __iter__(self):
            return iter([1])

    assert sized_len([1, 2]) == 2 and sized_len(Counting(3, sized=False)) is None
    assert sized_len(DataLoader(It())) is None


# --------------------------------------------------------------------------- loader_iter fast path

class _Items(torch.utils.data.Dataset):
    """A map-style dataset of (x, y) items, with or without ``__getitems__``."""

    def __init__(self, n, getitems=False):
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n, 3, generator=g), torch.randint(0, 5, (n,), generator=g)
        if getitems:
            self.__getitems__ = lambda idx: [self[i] for i in idx]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _assert_same_batch(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        assert torch.equal(a, b)
        return
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_batch(x, y)
        return
    assert a == b


def _tensor_dataset(n=23):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, 2, generator=g), torch.randint(0, 10, (n,), generator=g),
                         torch.rand(n, generator=g).double(), torch.randint(0, 2, (n, 3), generator=g).bool())


def _loaders():
    td = _tensor_dataset()
    yield "tensors seq", lambda: DataLoader(td, batch_size=4)
    yield "tensors shuffle", lambda: DataLoader(td, batch_size=4, shuffle=True)
    yield "tensors shuffle drop_last", lambda: DataLoader(td, batch_size=5, shuffle=True, drop_last=True)
    yield "tensors batch 1", lambda: DataLoader(td, batch_size=1, shuffle=True)
    yield "tensors own generator", lambda: DataLoader(td, batch_size=3, shuffle=True,
                                                      generator=torch.Generator().manual_seed(7))
    yield "tensors replacement", lambda: DataLoader(
        td, batch_size=4, sampler=RandomSampler(td, replacement=True, num_samples=17))
    yield "tensors batch_size None", lambda: DataLoader(td, batch_size=None, shuffle=True)
    yield "tensors custom collate", lambda: DataLoader(td, batch_size=4, shuffle=True, collate_fn=lambda b: b)
    yield "items", lambda: DataLoader(_Items(11), batch_size=4, shuffle=True)
    yield "items getitems", lambda: DataLoader(_Items(11, getitems=True), batch_size=4, shuffle=True)
    yield "items batch_size None", lambda: DataLoader(_Items(6), batch_size=None, shuffle=True)
    yield "ready batches", lambda: DataLoader([(torch.randn(2, 3), torch.arange(2)) for _ in range(4)],
                                              batch_size=None)
    yield "non-contiguous tensors", lambda: DataLoader(TensorDataset(torch.randn(3, 10).t()), batch_size=4,
                                                       shuffle=True)
    yield "subclass", lambda: type("DL", (DataLoader,), {})(td, batch_size=4, shuffle=True)


@pytest.mark.parametrize("name,make", list(_loaders()), ids=[n for n, _ in _loaders()])
def test_loader_iter_matches_dataloader(name, make):
    """Batches bit-identical to DataLoader's, and the same global RNG state after every batch."""
    from trainer.loops.data import loader_iter

    results = []
    for fn in (iter, loader_iter):
        torch.manual_seed(123)
        loader = make()
        batches, states = [], [torch.get_rng_state()]
        for epoch in range(2):
            it = fn(loader)
            states.append(torch.get_rng_state())
            for b in it:
                batches.append(b)
                states.append(torch.get_rng_state())
        gen = loader.generator.get_state() if loader.generator is not None else None
        results.append((batches, states, gen))
    (b0, s0, g0), (b1, s1, g1) = results
    assert len(b0) == len(b1) > 0
    for a, b in zip(b0, b1):
        _assert_same_batch(a, b)
    assert all(torch.equal(x, y) for x, y in zip(s0, s1)) and len(s0) == len(s1)
    if g0 is not None:
        assert torch.equal(g0, g1)


@pytest.mark.filterwarnings("ignore:.pin_memory. argument")
def test_loader_iter_takes_the_fast_paths():
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    from trainer.loops.data import _gatherable_tensors, loader_iter

    td = _tensor_dataset()
    fast = DataLoader(td, batch_size=4, shuffle=True)
    assert not isinstance(loader_iter(fast), _BaseDataLoaderIter)
    assert _gatherable_tensors(fast) is td.tensors
    assert not isinstance(loader_iter(DataLoader(_Items(5), batch_size=None)), _BaseDataLoaderIter)
    # anything not plain keeps DataLoader's own iterator
    for dl in (DataLoader(td, batch_size=4, num_workers=1), DataLoader(td, batch_size=4, pin_memory=True),
               type("DL", (DataLoader,), {})(td, batch_size=4)):
        assert isinstance(loader_iter(dl), _BaseDataLoaderIter)
    # no gather for non-default collate, non-contiguous or grad-requiring tensors
    assert _gatherable_tensors(DataLoader(td, batch_size=4, collate_fn=lambda b: b)) is None
    assert _gatherable_tensors(DataLoader(TensorDataset(torch.randn(3, 10).t()), batch_size=2)) is None
    assert _gatherable_tensors(DataLoader(TensorDataset(torch.randn(4, requires_grad=True)), batch_size=2)) is None
    with torch.autograd.profiler.profile():
        assert isinstance(loader_iter(fast), _BaseDataLoaderIter)  # keeps DataLoader's profiler scope


def test_combined_loader_uses_loader_iter():
    from trainer.utilities.combined_loader import CombinedLoader

    td = _tensor_dataset()
    torch.manual_seed(3)
    ref = list(DataLoader(td, batch_size=6, shuffle=True))
    torch.manual_seed(3)
    got = [batch for batch, _, _ in CombinedLoader(DataLoader(td, batch_size=6, shuffle=True), "max_size_cycle")]
    for a, b in zip(ref, got):
        _assert_same_batch(a, b)
    assert len(ref) == len(got) == 4
