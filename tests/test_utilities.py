"""Helpers in trainer.utilities: AttributeDict, apply_to_collection, batch sizes, device moves, float dicts."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict, namedtuple

import pytest
import torch

from trainer.utilities import (
    AttributeDict,
    apply_to_collection,
    extract_batch_size,
    is_param_in_signature,
    move_data_to_device,
    to_float_dict,
)


def test_attribute_dict():
    d = AttributeDict(a=1)
    d.b = 2
    assert d["b"] == 2 and d.a == 1
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError):
        d.missing
    with pytest.raises(AttributeError):
        del d.missing
    assert repr(AttributeDict()) == ""
    assert repr(AttributeDict(bb=1, a=2)).splitlines() == ['"a":  2', '"bb": 1']


def test_attribute_dict_repr_matches_lightning():
    from lightning_fabric.utilities.data import AttributeDict as PLAttributeDict

    data = {"lr": 0.1, "layers": [1, 2], "name": "x"}
    assert repr(AttributeDict(data)) == repr(PLAttributeDict(data))


Point = namedtuple("Point", ["x", "y"])


@dataclasses.dataclass
class Pair:
    a: torch.Tensor
    b: int


def test_apply_to_collection_nested():
    t = torch.ones(2)
    data = {"l": [t, (t, 3)], "nt": Point(t, "s"), "dc": Pair(t, 4), "od": OrderedDict(k=t)}
    out = apply_to_collection(data, torch.Tensor, lambda x: x * 2)
    assert torch.equal(out["l"][0], 2 * t) and isinstance(out["l"][1], tuple) and out["l"][1][1] == 3
    assert isinstance(out["nt"], Point) and torch.equal(out["nt"].x, 2 * t) and out["nt"].y == "s"
    assert isinstance(out["dc"], Pair) and torch.equal(out["dc"].a, 2 * t) and out["dc"].b == 4
    assert isinstance(out["od"], OrderedDict)
    assert torch.equal(data["l"][0], t)  # input untouched
    dd = defaultdict(list, {"k": t})
    assert torch.equal(apply_to_collection(dd, torch.Tensor, lambda x: x + 1)["k"], t + 1)
    assert apply_to_collection(5, torch.Tensor, lambda x: x) == 5


@pytest.mark.parametrize("batch, size", [
    (torch.zeros(5, 3), 5),
    (torch.tensor(1.0), 1),
    ([torch.zeros(3, 2), torch.zeros(7)], 3),
    ({"x": torch.zeros(4, 1), "y": torch.zeros(2)}, 4),
    ((torch.zeros(2), ["str", 1]), 2),
])
def test_extract_batch_size(batch, size):
    assert extract_batch_size(batch) == size


def test_extract_batch_size_matches_lightning():
    from pytorch_lightning.utilities.data import extract_batch_size as pl_extract

    for batch in (torch.zeros(5, 3), [torch.zeros(3, 2)], {"x": torch.zeros(4, 1)}, (torch.zeros(2), "abc")):
        assert extract_batch_size(batch) == pl_extract(batch)


def test_extract_batch_size_skips_strings():
    assert extract_batch_size({"meta": "abc", "x": torch.zeros(6)}) == 6
    assert extract_batch_size((["str", 1], torch.zeros(2))) == 2


def test_extract_batch_size_dataclass():
    assert extract_batch_size(Pair(torch.zeros(5, 1), 3)) == 5


def test_extract_batch_size_fails_clearly():
    from trainer.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="batch_size"):
        extract_batch_size({"a": 1})


def test_move_data_to_device_keeps_same_device_tensors():
    t = torch.ones(2)
    moved = move_data_to_device({"a": [t]}, torch.device("cpu"))
    assert moved["a"][0] is t
    assert move_data_to_device(t, torch.device("cpu")) is t


def test_move_data_to_device_moves_objects_with_to():
    class Custom:
        def __init__(self):
            self.device = None

        def to(self, device):
            self.device = device
            return self

    c = move_data_to_device(Custom(), torch.device("cpu"))
    assert c.device == torch.device("cpu")


def test_is_param_in_signature():
    def f(batch, batch_idx): ...

    def g(batch): ...

    def h(*args): ...

    assert is_param_in_signature(f, "batch_idx")
    assert not is_param_in_signature(g, "batch_idx")
    assert is_param_in_signature(h, "batch_idx")
    assert is_param_in_signature(lambda a, b, c: None, "dataloader_idx", min_args=3)
    assert not is_param_in_signature(lambda a, b: None, "dataloader_idx", min_args=3)


def test_to_float_dict_values_and_order():
    metrics = {"b": torch.tensor(2.5), "a": 3, "c": torch.tensor([1.5]), "flag": True, "s": "skip",
               "h": torch.tensor(0.5, dtype=torch.bfloat16), "i": torch.tensor(7)}
    out = to_float_dict(metrics)
    assert list(out) == ["b", "a", "c", "flag", "h", "i"]
    # like Lightning's convert_tensors_to_scalars (.item()): ints stay ints
    assert out == {"b": 2.5, "a": 3, "c": 1.5, "flag": True, "h": 0.5, "i": 7}
    assert [type(v) for v in out.values()] == [float, int, float, bool, float, int]
    assert to_float_dict({}) == {}


def _count_calls(monkeypatch, name):
    calls = []
    orig = getattr(torch.Tensor, name)

    def wrapper(self, *args, **kwargs):
        calls.append(name)
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def _no_item(monkeypatch):
    def item(self):
        raise AssertionError(".item() called")

    monkeypatch.setattr(torch.Tensor, "item", item)


def test_to_float_dict_one_tolist_without_item(monkeypatch):
    metrics = {f"m{i}": torch.tensor(float(i)) for i in range(5)}
    _no_item(monkeypatch)
    tolist = _count_calls(monkeypatch, "tolist")
    out = to_float_dict(metrics)
    assert len(tolist) == 1
    assert out == {f"m{i}": float(i) for i in range(5)}


def test_to_float_dict_one_device_to_host_copy(monkeypatch):
    metrics = {f"m{i}": torch.tensor(float(i)) for i in range(5)}
    _no_item(monkeypatch)
    cpu = _count_calls(monkeypatch, "cpu")
    to_float_dict(metrics)
    assert len(cpu) <= 1
