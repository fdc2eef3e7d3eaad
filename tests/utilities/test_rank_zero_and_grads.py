"""``trainer.utilities.rank_zero`` and ``trainer.utilities.grad_norm`` at Lightning's paths, against Lightning
2.6.6's (the oracle): same keys and values, same rank gating."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
from pytorch_lightning.utilities import grad_norm as lightning_grad_norm
from pytorch_lightning.utilities.rank_zero import rank_zero_only as lightning_rank_zero_only
from torch import nn

import trainer.loggers.utilities as logger_utilities
import trainer.utilities as utilities
from trainer.utilities import grad_norm
from trainer.utilities.rank_zero import (
    WarningCache,
    rank_prefixed_message,
    rank_zero_debug,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)


def _net_with_grads(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Linear(2, 2)).to(dtype)
    net[0].weight.requires_grad_(False)  # no gradient: no key
    net(torch.randn(5, 4, dtype=dtype)).pow(2).sum().backward()
    net[3].bias.grad = None
    return net


@pytest.mark.parametrize("norm_type", [1, 2, 2.5, "inf", "2"])
@pytest.mark.parametrize("separator", ["/", "."])
def test_grad_norm_matches_lightning(norm_type, separator):
    net = _net_with_grads()
    expected = lightning_grad_norm(net, norm_type, group_separator=separator)
    got = grad_norm(net, norm_type, group_separator=separator)
    assert list(got) == list(expected)  # same keys, same order
    p = float(norm_type)
    assert f"grad_{p}_norm_total" in got and f"grad_{p}_norm{separator}0.weight" not in got
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].device == expected[key].device, key
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_grad_norm_float64_and_no_gradients():
    net = _net_with_grads(torch.float64)
    expected, got = lightning_grad_norm(net, 2), grad_norm(net, 2)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert grad_norm(nn.Linear(2, 2), 2) == lightning_grad_norm(nn.Linear(2, 2), 2) == {}


@pytest.mark.parametrize("bad", [0, -1, "-2"])
def test_grad_norm_refuses_non_positive_norms_like_lightning(bad):
    with pytest.raises(ValueError) as theirs:
        lightning_grad_norm(nn.Linear(2, 2), bad)
    with pytest.raises(ValueError) as ours:
        grad_norm(nn.Linear(2, 2), bad)
    assert str(ours.value) == str(theirs.value)


def test_rank_zero_only_runs_on_rank_zero_only(monkeypatch):
    calls = []

    @rank_zero_only
    def record(x):
        calls.append(x)
        return x

    with_default = rank_zero_only(lambda: "ran", default="skipped")
    assert record(1) == 1 and with_default() == "ran"
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert record(2) is None and with_default() == "skipped"
    assert calls == [1]
    # the same switch for the whole package: the loggers' decorator is this one
    assert logger_utilities.rank_zero_only is rank_zero_only is utilities.rank_zero_only
    # Lightning's decorator behaves the same way
    monkeypatch.setattr(lightning_rank_zero_only, "rank", 1)
    assert lightning_rank_zero_only(lambda: "ran", default="skipped")() == "skipped"


def test_rank_zero_messages(monkeypatch, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank_zero_warn("careful", category=RuntimeWarning)
        cache = WarningCache()
        cache.warn("once")
        cache.warn("once")
        utilities.rank_zero_deprecation("old")
    assert [(w.category, str(w.message)) for w in caught] == [
        (RuntimeWarning, "careful"), (UserWarning, "once"), (DeprecationWarning, "old")]
    with caplog.at_level(logging.DEBUG, logger="trainer"):
        rank_zero_info("info line")
        rank_zero_debug("debug line")
    assert [r.getMessage() for r in caplog.records] == ["info line", "debug line"]
    monkeypatch.setattr(rank_zero_only, "rank", 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank_zero_warn("not on rank 3")
    assert caught == []
    assert rank_prefixed_message("hi", 2) == "[rank: 2] hi" and rank_prefixed_message("hi", None) == "hi"
