"""seed_everything and RNG isolation."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from trainer.seed import collect_rng_states, isolate_rng, reset_seed, seed_everything, set_rng_states


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    with isolate_rng():
        yield


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_seed_everything_sets_env_and_reproduces():
    assert seed_everything(42) == 42
    assert os.environ["PL_GLOBAL_SEED"] == "42" and os.environ["PL_SEED_WORKERS"] == "0"
    a = _draw()
    seed_everything(42, workers=True)
    assert os.environ["PL_SEED_WORKERS"] == "1"
    b = _draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    seed_everything(43)
    assert not torch.equal(_draw()[2], a[2])


def test_seed_everything_matches_lightning():
    import pytorch_lightning as pl

    seed_everything(7)
    ours = _draw()
    pl.seed_everything(7)
    theirs = _draw()
    assert ours[0] == theirs[0] and ours[1] == theirs[1] and torch.equal(ours[2], theirs[2])


def test_seed_from_env_and_out_of_bounds(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "123")
    assert seed_everything() == 123
    monkeypatch.setenv("PL_GLOBAL_SEED", "not-a-number")
    assert seed_everything() == 0
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert seed_everything() == 0
    assert seed_everything(2 ** 40) == 0
    assert seed_everything(-1) == 0


def test_reset_seed():
    reset_seed()  # no PL_GLOBAL_SEED: no-op
    seed_everything(5)
    a = _draw()
    reset_seed()
    b = _draw()
    assert torch.equal(a[2], b[2]) and a[0] == b[0]


def test_isolate_rng_restores_every_generator():
    seed_everything(1)
    with isolate_rng():
        _draw()
        torch.manual_seed(99)
        random.seed(99)
    a = _draw()
    seed_everything(1)
    b = _draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_isolate_rng_restores_on_exception():
    seed_everything(3)
    state = torch.get_rng_state()
    with pytest.raises(KeyError):
        with isolate_rng():
            torch.rand(10)
            raise KeyError
    assert torch.equal(torch.get_rng_state(), state)


def test_collect_and_set_rng_states_roundtrip():
    states = collect_rng_states()
    assert set(states) >= {"torch", "numpy", "python"}
    a = _draw()
    set_rng_states(states)
    b = _draw()
    assert torch.equal(a[2], b[2]) and a[0] == b[0]


def test_top_level_export():
    import trainer

    assert trainer.seed_everything is seed_everything
