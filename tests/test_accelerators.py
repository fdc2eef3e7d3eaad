"""Accelerator and devices resolution on a CPU-only machine."""
from __future__ import annotations

import pytest
import torch
from helpers import misconfiguration_exception

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="these tests assume a machine without CUDA")


def _trainer(L, **kw):
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, **kw)


def test_auto_is_cpu_here(L):
    t = _trainer(L)
    assert t.num_devices == 1 and t.device_ids == [0]
    assert t.strategy.root_device == torch.device("cpu")


def test_auto_is_cpu_here_trainer(TL):
    from trainer.accelerators import resolve_accelerator

    assert type(_trainer(TL).accelerator).__name__ == "CPUAccelerator"
    assert resolve_accelerator("auto") == "cpu" and resolve_accelerator("CPU") == "cpu"


@pytest.mark.parametrize("acc", ["gpu", "cuda", "mps"])
def test_gpu_accelerators_raise_without_device(L, acc):
    with pytest.raises(misconfiguration_exception(L)):
        _trainer(L, accelerator=acc)


def test_tpu_raises_without_torch_xla(L):
    expected = misconfiguration_exception(L) if L.__name__ == "trainer" else ModuleNotFoundError
    with pytest.raises(expected, match="torch_xla"):
        _trainer(L, accelerator="tpu")


@pytest.mark.parametrize("acc", ["abc", 3, None])
def test_unknown_accelerator_raises(TL, acc):
    with pytest.raises(TL.MisconfigurationException, match="accelerator"):
        _trainer(TL, accelerator=acc)


@pytest.mark.parametrize("devices", ["auto", 1, "1", " 1 "])
def test_one_device(L, devices):
    t = _trainer(L, accelerator="cpu", devices=devices)
    assert t.num_devices == 1 and t.device_ids == [0]


def test_device_list_on_cpu(TL):
    # Lightning raises TypeError for a list on CPU; trainer treats [0] as one device
    t = _trainer(TL, accelerator="cpu", devices=[0])
    assert t.num_devices == 1 and t.device_ids == [0]


def test_zero_devices_raises(L):
    with pytest.raises(misconfiguration_exception(L)):
        _trainer(L, accelerator="cpu", devices=0)


@pytest.mark.parametrize("devices", ["a", 0, -2, [], [-1], True, 1.5, "0,a"])
def test_bad_devices_raise(TL, devices):
    with pytest.raises(TL.MisconfigurationException, match="devices"):
        _trainer(TL, accelerator="cpu", devices=devices)


@pytest.mark.parametrize("devices", [-1, 2, "2", "0,1", [0, 1]])
def test_more_than_one_device_selects_ddp(TL, devices, monkeypatch):
    """strategy='auto' with several devices is DDP (Lightning's choice); nothing starts before fit."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    t = _trainer(TL, accelerator="cpu", devices=devices)
    assert type(t.strategy).__name__ == "DDPStrategy" and t.num_devices == 2


def test_num_nodes_selects_ddp(TL):
    t = _trainer(TL, num_nodes=2)
    assert type(t.strategy).__name__ == "DDPStrategy" and t.strategy.num_nodes == 2


def test_single_device_strategy_on_two_devices_raises(TL):
    with pytest.raises(TL.MisconfigurationException, match="single-device"):
        _trainer(TL, accelerator="cpu", devices=2, strategy="single_device")


def test_resolve_devices_unit():
    from trainer.accelerators import resolve_devices

    assert resolve_devices("auto", "cpu").device_ids == [0]
    assert resolve_devices(3, "cpu").device_ids == [0, 1, 2]
    assert resolve_devices("0,1", "cpu").num_devices == 2
    spec = resolve_devices([2], "mps")
    assert spec.device_ids == [2] and spec.accelerator == "mps"
    assert resolve_devices(1, "cpu").root_device() == torch.device("cpu")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "ddp_spawn"])
def test_distributed_strategies_construct(TL, strategy):
    t = _trainer(TL, strategy=strategy)
    assert t.strategy.strategy_name == strategy.split("_")[0] or t.strategy.strategy_name == strategy


def test_accelerator_property_is_an_accelerator_object(TL):
    acc = _trainer(TL).accelerator
    assert type(acc).__name__ == "CPUAccelerator"
