"""``trainer.utilities.combined_loader.CombinedLoader`` against Lightning 2.6.6's (the oracle).

Every case builds the same iterables twice, iterates Lightning's CombinedLoader first and ours second, and
compares what a loop sees: each ``(batch, batch_idx, dataloader_idx)``, ``len()``, the ``iterables`` /
``flattened`` / ``sampler`` structures, and the errors (class and Lightning's wording).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable

import pytest
import torch
from pytorch_lightning.utilities.combined_loader import CombinedLoader as LightningCombinedLoader
from torch.utils.data import DataLoader, IterableDataset, RandomSampler

import trainer.utilities as utilities
from trainer.utilities.combined_loader import CombinedLoader

MODES = ["min_size", "max_size_cycle", "max_size", "sequential"]


class _Stream(IterableDataset):
    """An iterable dataset without a length."""

    def __init__(self, n: int, start: int = 0) -> None:
        self.n, self.start = n, start

    def __iter__(self):
        return iter(range(self.start, self.start + self.n))


def _plain(x: Any) -> Any:
    """Batches as nested Python values, so both frameworks' outputs compare with ``==``."""
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x) if not hasattr(x, "_fields") else tuple(_plain(v) for v in x)
    return x


def _run(cls: type, make: Callable[[], Any], mode: str, limits: Any = None) -> dict:
    loader = cls(make(), mode)
    if limits is not None:
        loader.limits = limits
    iter(loader)
    length = len(loader) if limits is None or all(isinstance(v, int) for v in loader.limits) else None
    return {"len": length, "steps": [(_plain(b), i, d) for b, i, d in loader]}


STRUCTURES = {
    "single": lambda: DataLoader(range(5), batch_size=2),
    "list": lambda: [DataLoader(range(6), batch_size=4), DataLoader(range(15), batch_size=5)],
    "tuple": lambda: (DataLoader(range(3)), DataLoader(range(10, 15), batch_size=2)),
    "dict": lambda: {"a": DataLoader(range(6), batch_size=4), "b": DataLoader(range(15), batch_size=5)},
    "nested": lambda: {"a_b": [DataLoader(range(8), batch_size=2), DataLoader(range(2))],
                       "c": (DataLoader(range(3)),)},
    "ordered_dict": lambda: OrderedDict(z=DataLoader(range(4), batch_size=2), a=DataLoader(range(2))),
    "plain_lists": lambda: [[1, 2, 3], [4, 5]],  # lists of numbers are iterables, not containers
    "iterable_dataset": lambda: [DataLoader(_Stream(5), batch_size=2), DataLoader(range(4), batch_size=2)],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_batches_and_lengths_match_lightning(structure, mode):
    make = STRUCTURES[structure]
    if structure == "iterable_dataset" and mode != "min_size":
        # an unsized iterable: no length (len() raises) except where min_size bounds it
        lightning = LightningCombinedLoader(make(), mode)
        iter(lightning)
        with pytest.raises(TypeError):
            len(lightning)
        ours = CombinedLoader(make(), mode)
        iter(ours)
        with pytest.raises(TypeError):
            len(ours)
        assert [(_plain(b), i, d) for b, i, d in ours] == [(_plain(b), i, d) for b, i, d in lightning]
        return
    expected = _run(LightningCombinedLoader, make, mode)
    assert expected["steps"], "the oracle yields batches"
    assert _run(CombinedLoader, make, mode) == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("limits", [[2, 1], [1, 10], [0, 2], [float("inf"), 2], 1])
def test_limits_match_lightning(mode, limits):
    def make():
        return [DataLoader(range(6), batch_size=2), DataLoader(range(10, 18), batch_size=2)]

    expected = _run(LightningCombinedLoader, make, mode, copy.copy(limits))
    assert _run(CombinedLoader, make, mode, copy.copy(limits)) == expected
    if mode == "sequential" and limits == [2, 1]:  # the limits cut each iterable in sequential mode
        assert [(i, d) for _, i, d in expected["steps"]] == [(0, 0), (1, 0), (0, 1)]


def test_structure_properties_match_lightning():
    def make():
        ds = list(range(8))
        return {"a": DataLoader(ds, shuffle=True), "b": [DataLoader(ds, batch_size=4), [1, 2]]}

    theirs, ours = LightningCombinedLoader(make(), "max_size_cycle"), CombinedLoader(make(), "max_size_cycle")
    assert len(ours.flattened) == len(theirs.flattened) == 3
    assert ours.flattened[2] == theirs.flattened[2] == [1, 2]
    assert ours.iterables.keys() == theirs.iterables.keys()
    kinds = lambda tree: {k: [type(s).__name__ for s in v] if isinstance(v, list) else type(v).__name__  # noqa: E731
                          for k, v in tree.items()}
    assert kinds(ours.sampler) == kinds(theirs.sampler) == {"a": "RandomSampler", "b": ["SequentialSampler",
                                                                                         "NoneType"]}
    assert kinds(ours.batch_sampler) == kinds(theirs.batch_sampler)

    # replacing the leaves rebuilds the structure
    new = [DataLoader(range(3)), DataLoader(range(4)), [7]]
    ours.flattened = new
    assert ours.iterables["a"] is new[0] and ours.iterables["b"][0] is new[1] and ours.iterables["b"][1] == [7]


def test_errors_match_lightning():
    for cls in (LightningCombinedLoader, CombinedLoader):
        with pytest.raises(ValueError, match=r"Unsupported mode 'foo', please select one of: \['min_size', "
                                             r"'max_size_cycle', 'max_size', 'sequential'\]\."):
            cls([range(2)], "foo")
        loader = cls([DataLoader(range(2)), DataLoader(range(2))], "min_size")
        with pytest.raises(RuntimeError, match=r"Please call `iter\(combined_loader\)` first\."):
            len(loader)
        with pytest.raises(ValueError, match=r"Mismatch in flattened length \(1\) and existing length \(2\)"):
            loader.flattened = [DataLoader(range(2))]
        with pytest.raises(ValueError, match=r"Mismatch in number of limits \(3\) and number of iterables \(2\)"):
            loader.limits = [1, 2, 3]
    assert CombinedLoader(range(3)).mode == "min_size"  # Lightning's default mode


def test_max_size_cycle_restarts_shuffled_loaders_like_lightning():
    """A restarted loader draws a new order from the global RNG at the same moment as in Lightning."""

    def run(cls):
        torch.manual_seed(7)
        ds = list(range(4))
        loader = cls({"short": DataLoader(ds, sampler=RandomSampler(ds), batch_size=2),
                      "long": DataLoader(range(10), batch_size=2)}, "max_size_cycle")
        return [_plain(b) for b, _, _ in loader], torch.rand(1).item()

    assert run(CombinedLoader) == run(LightningCombinedLoader)


def test_reset_forgets_the_iterator_and_copies_leave_iterators_behind():
    loader = CombinedLoader({"a": DataLoader(range(4)), "b": DataLoader(range(2))}, "max_size_cycle")
    iter(loader)
    next(loader)
    clone = copy.deepcopy(loader)  # live generators cannot be copied: the copy is iterated afresh
    assert [i for _, i, _ in clone] == [0, 1, 2, 3]
    loader.reset()
    with pytest.raises(RuntimeError, match="iter"):
        len(loader)


def test_state_dicts_of_stateful_iterables():
    class Stateful(list):
        def __init__(self, *a):
            super().__init__(*a)
            self.state = 0

        def state_dict(self):
            return {"pos": self.state}

        def load_state_dict(self, state):
            self.state = state["pos"]

    loader = CombinedLoader([Stateful([1, 2]), DataLoader(range(2)), Stateful([3])], "max_size_cycle")
    assert loader._state_dicts() == [{"pos": 0}, {"pos": 0}]
    loader._load_state_dicts([{"pos": 4}, {"pos": 5}])
    assert [it.state for it in (loader.flattened[0], loader.flattened[2])] == [4, 5]
    with pytest.raises(RuntimeError, match="has 2 stateful loaders, but found 1 states"):
        loader._load_state_dicts([{"pos": 1}])


def test_dataset_length_follows_the_mode():
    def make():
        return [DataLoader(range(6), batch_size=4), DataLoader(range(15), batch_size=5), DataLoader(_Stream(3))]

    for mode in MODES:
        assert CombinedLoader(make(), mode)._dataset_length() == LightningCombinedLoader(make(), mode)._dataset_length()
    with pytest.raises(NotImplementedError, match="All datasets are iterable-style datasets."):
        CombinedLoader([DataLoader(_Stream(3))])._dataset_length()


def test_importable_at_lightnings_paths():
    assert utilities.CombinedLoader is CombinedLoader
    # everything the package exported before it became a package is still there
    for name in ("AttributeDict", "apply_to_collection", "move_data_to_device", "extract_batch_size",
                 "is_param_in_signature", "to_float_dict"):
        assert callable(getattr(utilities, name)), name
