"""Loggers write on global rank 0 only (Lightning's ``rank_zero_only`` / ``rank_zero_experiment``)."""
from __future__ import annotations

import os

import pytest

from trainer.loggers import CSVLogger, TensorBoardLogger
from trainer.loggers.utilities import DummyExperiment, rank_zero_only


@pytest.fixture
def rank_one():
    before = rank_zero_only.rank
    rank_zero_only.rank = 1
    yield
    rank_zero_only.rank = before


@pytest.mark.parametrize("cls", [CSVLogger, TensorBoardLogger])
def test_other_ranks_write_nothing(tmp_path, rank_one, cls):
    logger = cls(str(tmp_path))
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert isinstance(logger.experiment, DummyExperiment)
    logger.experiment.add_scalar("x", 1.0)  # user code calling the experiment: a no-op
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cls", [CSVLogger, TensorBoardLogger])
def test_rank_zero_writes(tmp_path, cls):
    logger = cls(str(tmp_path))
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert not isinstance(logger.experiment, DummyExperiment)
    assert os.listdir(tmp_path)
