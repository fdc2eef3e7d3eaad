"""The small public helpers of Lightning's ``utilities``, and the classes whose package cannot run here, each
against pytorch-lightning 2.6.6."""
from __future__ import annotations

import warnings

import pytest
import pytorch_lightning.utilities as PU
import torch
from torch import nn

import trainer.utilities as TU


def _tied():
    m = nn.Module()
    m.enc = nn.Linear(3, 4)
    m.dec = nn.Linear(4, 3)
    m.head = nn.Linear(3, 4)
    m.head.weight = m.enc.weight
    return m


def test_shared_parameters_found_and_tied_again_as_lightning():
    m = _tied()
    assert TU.find_shared_parameters(m) == PU.find_shared_parameters(m) == [["enc.weight", "head.weight"]]
    untied = _tied()
    untied.head.weight = nn.Parameter(untied.head.weight.detach().clone())  # e.g. after a load into copies
    assert TU.find_shared_parameters(untied) == []
    TU.set_shared_parameters(untied, [["enc.weight", "head.weight"]])
    assert untied.head.weight is untied.enc.weight


def test_enums_compare_as_lightning():
    from pytorch_lightning.utilities.enums import GradClipAlgorithmType as PG

    assert TU.GradClipAlgorithmType.NORM == "NORM" and PG.NORM == "NORM"
    assert TU.GradClipAlgorithmType.from_str("value") is TU.GradClipAlgorithmType.VALUE
    assert [m.value for m in TU.GradClipAlgorithmType] == [m.value for m in PG]
    with pytest.raises(ValueError, match="Invalid match"):
        TU.GradClipAlgorithmType.from_str("norm2")
    with pytest.raises(ValueError, match="Invalid match"):
        PG.from_str("norm2")


def test_suggested_max_num_workers_and_measure_flops_as_lightning():
    for n in (1, 2, 64):
        assert TU.suggested_max_num_workers(n) == PU.suggested_max_num_workers(n)
    with pytest.raises(ValueError, match="should be >= 1"):
        TU.suggested_max_num_workers(0)
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
        x = torch.randn(4, 32)
    fwd = TU.measure_flops(model, lambda: model(x))
    assert fwd == PU.measure_flops(model, lambda: model(x)) == 2 * 4 * (32 * 64 + 64 * 8)
    both = TU.measure_flops(model, lambda: model(x), lambda y: y.sum())
    assert both == PU.measure_flops(model, lambda: model(x), lambda y: y.sum()) and both > fwd


def test_disable_possible_user_warnings():
    from trainer.utilities.warnings import PossibleUserWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TU.disable_possible_user_warnings()
        warnings.warn("maybe a mistake", PossibleUserWarning)
        warnings.warn("surely a warning", UserWarning)
    assert [str(w.message) for w in caught] == ["surely a warning"]


def test_is_shared_filesystem_single_process(tmp_path):
    import trainer as TL

    strategy = TL.Trainer(accelerator="cpu", devices=1, logger=False).strategy
    assert TU.is_shared_filesystem(strategy, tmp_path) is True
    assert TU.is_shared_filesystem(strategy, "s3://bucket/x") is True


@pytest.mark.parametrize("path, name, package", [
    ("trainer.loggers", "CometLogger", "comet_ml"),
    ("trainer.plugins", "XLAPrecision", "torch_xla"),
    ("trainer.plugins", "XLACheckpointIO", "torch_xla"),
    ("trainer.plugins", "BitsandbytesPrecision", "bitsandbytes"),
    ("trainer.plugins.precision", "TransformerEnginePrecision", "transformer_engine"),
])
def test_unavailable_classes_name_their_package(path, name, package):
    import importlib
    import importlib.util

    if importlib.util.find_spec(package) is not None:  # pragma: no cover - not on the CI machine
        pytest.skip(f"{package} is installed here: the class then says trainer does not implement it")
    cls = getattr(importlib.import_module(path), name)
    with pytest.raises(ModuleNotFoundError, match=f"`{package}`.*pip install"):
        cls()


@pytest.mark.parametrize("exception", [
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous"
                 " input."),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to"
                 " allocate 1099511627776 bytes."),
    RuntimeError("CUDA out of memory.", "a second argument"),  # not ATen's one-message form
    ValueError("CUDA out of memory."),
    RuntimeError("shape mismatch"),
], ids=["cuda", "cudnn", "cpu", "two_args", "value_error", "other"])
def test_out_of_memory_predicates_as_lightning(exception):
    import pytorch_lightning.utilities.memory as PM

    import trainer.utilities.memory as TM

    for name in ("is_oom_error", "is_cuda_out_of_memory", "is_cudnn_snafu", "is_out_of_cpu_memory"):
        assert getattr(TM, name)(exception) == getattr(PM, name)(exception), name
