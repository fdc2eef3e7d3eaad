"""What Lightning tells the user (issue 18, item 3), and ``fast_dev_run``'s dummy logger (item 5).

Each test runs the same code under pytorch-lightning 2.6.6 (the oracle, asserted first) and under
`trainer`, and compares: info lines by logger (Lightning's ``pytorch_lightning.utilities.rank_zero``,
ours ``trainer.utilities.rank_zero``), level and exact message; warnings by class name and message
(ours may add to Lightning's words, after them); files written.
"""
from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, List, Tuple

import pytest
import torch
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs

pytestmark = pytest.mark.parity

FRAMEWORKS = ("lightning", "trainer")
# Lightning advertises its cloud logger at every Trainer construction; `trainer` does not carry the advert.
_ADVERT = "💡 Tip: For seamless cloud logging"


def _rank_zero_logger(L: ModuleType) -> str:
    return f"{L.__name__}.utilities.rank_zero"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: List[Tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


@contextmanager
def info_lines(L: ModuleType) -> Iterator[List[Tuple[str, str]]]:
    """(level, message) of every record on the framework's rank-zero logger, the advert left out."""
    logger = logging.getLogger(_rank_zero_logger(L))
    handler = _Records()
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    out: List[Tuple[str, str]] = []
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
        out.extend(r for r in handler.records if not r[1].startswith(_ADVERT))


def _kwargs(tmp_path, **kw: Any) -> dict:
    base = quiet_trainer_kwargs(tmp_path)
    base.update(kw)
    return base


def _both(fn) -> dict:
    return {name: fn(import_framework(name)) for name in FRAMEWORKS}


# --------------------------------------------------------------------------------------------
# Info lines at construction
# --------------------------------------------------------------------------------------------

FLAG_CASES = [
    dict(limit_train_batches=1),
    dict(limit_train_batches=1.0),
    dict(limit_val_batches=1),
    dict(limit_val_batches=1.0),
    dict(limit_test_batches=1),
    dict(limit_test_batches=1.0),
    dict(limit_predict_batches=1),
    dict(limit_predict_batches=1.0),
    dict(overfit_batches=1),
    dict(overfit_batches=1.0),
    dict(val_check_interval=1),
    dict(val_check_interval=1.0),
    dict(limit_train_batches=2, limit_val_batches=0.5),  # no line for anything but 1 / 1.0
    dict(limit_train_batches=1, limit_val_batches=1.0, limit_test_batches=1, limit_predict_batches=1.0,
         val_check_interval=1),  # Lightning's order
    dict(overfit_batches=1, limit_train_batches=1, limit_val_batches=1.0, limit_test_batches=1),  # overfit wins
    dict(fast_dev_run=True, limit_train_batches=1, limit_test_batches=1.0, val_check_interval=1),  # fast_dev_run wins
    dict(fast_dev_run=3, overfit_batches=1.0),
    dict(barebones=True, logger=None, enable_checkpointing=None, enable_progress_bar=None,
         enable_model_summary=None),
]


@pytest.mark.parametrize("flags", FLAG_CASES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_construction_info_lines(tmp_path, flags):
    def run(L):
        with info_lines(L) as lines:
            L.Trainer(**_kwargs(tmp_path, **flags))
        return lines

    got = _both(run)
    lightning = got["lightning"]
    assert ("INFO", "TPU available: False, using: 0 TPU cores") in lightning
    ones = [f for f, v in flags.items() if v in (1, 1.0) and f not in ("fast_dev_run", "barebones")]
    if ones and not flags.get("fast_dev_run"):
        assert any("was configured so" in m for _, m in lightning), "oracle changed: no info line for a 1 / 1.0 flag"
    assert got["trainer"] == lightning


def test_info_line_wording_is_lightnings(tmp_path):
    """The exact sentences (Lightning writes a double full stop after the 1.0 variants; kept)."""
    L = import_framework("lightning")
    with info_lines(L) as lines:
        L.Trainer(**_kwargs(tmp_path, limit_train_batches=1.0, val_check_interval=1))
    expected = [
        "`Trainer(limit_train_batches=1.0)` was configured so 100% of the batches per epoch will be used..",
        "`Trainer(val_check_interval=1)` was configured so validation will run after every batch.",
    ]
    assert [m for _, m in lines if "configured" in m] == expected
    T = import_framework("trainer")
    with info_lines(T) as ours:
        T.Trainer(**_kwargs(tmp_path, limit_train_batches=1.0, val_check_interval=1))
    assert [m for _, m in ours if "configured" in m] == expected


def test_restore_info_lines(tmp_path):
    """'Restoring states from the checkpoint path at ...' then 'Restored all states ...' (fit) or
    'Loaded model weights ...' (validate)."""

    def run(L):
        model = boring_model_class(L)(n=8)
        trainer = L.Trainer(**_kwargs(tmp_path / L.__name__, max_epochs=1))
        trainer.fit(model)
        path = str(tmp_path / f"{L.__name__}.ckpt")
        trainer.save_checkpoint(path)
        with info_lines(L) as lines:
            L.Trainer(**_kwargs(tmp_path / L.__name__, max_epochs=2)).fit(model, ckpt_path=path)
            L.Trainer(**_kwargs(tmp_path / L.__name__)).validate(model, ckpt_path=path, verbose=False)
        return [m.replace(path, "<ckpt>") for _, m in lines if "checkpoint" in m]

    got = _both(run)
    assert got["lightning"] == [
        "Restoring states from the checkpoint path at <ckpt>",
        "Restored all states from the checkpoint at <ckpt>",
        "Restoring states from the checkpoint path at <ckpt>",
        "Loaded model weights from the checkpoint at <ckpt>",
    ]
    assert got["trainer"] == got["lightning"]


# --------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------


def _warnings_of(fn) -> List[Tuple[str, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [(w.category.__name__, str(w.message)) for w in caught]


def _matching(found: List[Tuple[str, str]], fragment: str) -> List[Tuple[str, str]]:
    return [w for w in found if fragment in w[1]]


def _assert_same_warning(got: dict, fragment: str, count: int = 1) -> None:
    lightning = _matching(got["lightning"], fragment)
    ours = _matching(got["trainer"], fragment)
    assert len(lightning) == count, f"oracle: {got['lightning']}"
    assert len(ours) == count, f"`trainer` warned {got['trainer']}"
    for (l_cls, l_msg), (o_cls, o_msg) in zip(lightning, ours):
        assert o_cls == l_cls
        assert o_msg.startswith(l_msg), (o_msg, l_msg)


def test_possible_user_warning_at_lightnings_path():
    from pytorch_lightning.utilities.warnings import PossibleUserWarning as LightningPUW

    from trainer.utilities.warnings import PossibleUserWarning

    assert issubclass(LightningPUW, UserWarning)
    assert issubclass(PossibleUserWarning, UserWarning)
    assert PossibleUserWarning.__name__ == LightningPUW.__name__


def test_max_epochs_not_set_warning(tmp_path):
    def run(L):
        model = boring_model_class(L)(n=4)
        trainer = L.Trainer(**_kwargs(tmp_path, max_steps=-1, limit_train_batches=1, limit_val_batches=0))
        trainer.should_stop = False

        class StopAfterFirst(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                trainer.should_stop = True

        trainer.callbacks.append(StopAfterFirst())
        found = _warnings_of(lambda: trainer.fit(model))
        assert trainer.max_epochs == 1000
        return found

    got = _both(run)
    _assert_same_warning(got, "`max_epochs` was not set")
    assert _matching(got["trainer"], "`max_epochs` was not set")[0][0] == "PossibleUserWarning"


def test_max_epochs_not_set_is_filterable_by_class(tmp_path):
    """A user silences it by its class at Lightning's path, as with Lightning's."""
    from trainer.utilities.warnings import PossibleUserWarning

    T = import_framework("trainer")

    class StopAfterFirst(T.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    def fit():
        T.Trainer(**_kwargs(tmp_path, limit_train_batches=1, limit_val_batches=0),
                  callbacks=[StopAfterFirst()]).fit(boring_model_class(T)(n=4))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    assert [w.category for w in caught if "max_epochs" in str(w.message)] == [PossibleUserWarning]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        fit()
    assert not [w for w in caught if "max_epochs" in str(w.message)]


def _plateau_model(L: ModuleType, strict: bool):
    base = boring_model_class(L)

    class PlateauModel(base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "absent", "strict": strict}}

    return PlateauModel(n=8)


def test_reduce_on_plateau_missing_monitor_warns_and_skips(tmp_path):
    def run(L):
        model = _plateau_model(L, strict=False)
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=3, limit_val_batches=0))
        found = _warnings_of(lambda: trainer.fit(model))
        sched = trainer.lr_scheduler_configs[0].scheduler
        return found, sched.last_epoch, trainer.optimizers[0].param_groups[0]["lr"]

    got = _both(run)
    l_warn, l_epoch, l_lr = got["lightning"]
    o_warn, o_epoch, o_lr = got["trainer"]
    fragment = "ReduceLROnPlateau conditioned on metric absent which is not available but strict is set to `False`"
    assert _matching(l_warn, fragment) and all(c == "RuntimeWarning" for c, _ in _matching(l_warn, fragment))
    assert _matching(o_warn, fragment) and all(c == "RuntimeWarning" for c, _ in _matching(o_warn, fragment))
    assert _matching(o_warn, fragment)[0][1] == _matching(l_warn, fragment)[0][1]
    assert (l_epoch, l_lr) == (0, 0.1)  # the step is skipped: the scheduler never ran
    assert (o_epoch, o_lr) == (l_epoch, l_lr)


def test_reduce_on_plateau_missing_monitor_strict_raises(tmp_path):
    def run(L):
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=1, limit_val_batches=0))
        try:
            trainer.fit(_plateau_model(L, strict=True))
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__, str(exc)
        return None

    got = _both(run)
    assert got["lightning"] is not None and got["lightning"][0] == "MisconfigurationException"
    assert got["trainer"] == got["lightning"]


def test_checkpoint_with_callbacks_no_longer_present_warns(tmp_path):
    def run(L):
        class KeepsState(L.Callback):
            def state_dict(self):
                return {"a": 1}

        model = boring_model_class(L)(n=8)
        root = tmp_path / L.__name__
        chk = L.callbacks.ModelCheckpoint(dirpath=root, save_last=True)
        kw = _kwargs(root, max_epochs=1, enable_checkpointing=True)
        L.Trainer(**kw, callbacks=[chk, KeepsState()]).fit(model)
        kw["max_epochs"] = 2
        return _warnings_of(lambda: L.Trainer(**kw).fit(model, ckpt_path=chk.last_model_path))

    got = _both(run)
    _assert_same_warning(got, "Be aware that when using `ckpt_path`")
    assert "KeepsState']" in _matching(got["trainer"], "Be aware")[0][1]


def test_checkpoint_with_all_callbacks_present_does_not_warn(tmp_path):
    def run(L):
        model = boring_model_class(L)(n=8)
        root = tmp_path / L.__name__
        chk = L.callbacks.ModelCheckpoint(dirpath=root, save_last=True)
        kw = _kwargs(root, max_epochs=1, enable_checkpointing=True)
        L.Trainer(**kw, callbacks=[chk]).fit(model)
        kw["max_epochs"] = 2
        return _warnings_of(lambda: L.Trainer(**kw).fit(model, ckpt_path=chk.last_model_path))

    got = _both(run)
    assert not _matching(got["lightning"], "Be aware")
    assert not _matching(got["trainer"], "Be aware")


class _NotStateful:
    """A sized iterable of 3 batches that cannot save its position."""

    def __init__(self) -> None:
        self.index = 0

    def __iter__(self):
        for i in range(self.index, len(self)):
            yield torch.full((2, 32), float(i))

    def __len__(self) -> int:
        return 3


class _Stateful(_NotStateful):
    def state_dict(self):
        return {"index": self.index}

    def load_state_dict(self, state):
        self.index = state["index"]


def _resume_warnings(L: ModuleType, tmp_path, loader_cls: type, resume_step: int) -> List[Tuple[str, str]]:
    from pytorch_lightning.demos.boring_classes import BoringModel as LightningBoring

    if L.__name__ == "pytorch_lightning":
        model_cls = LightningBoring
    else:
        class model_cls(L.LightningModule):  # noqa: N801 - the same network as Lightning's BoringModel
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(32, 2)

            def training_step(self, batch, batch_idx):
                return self.layer(batch).sum()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

    root = tmp_path / f"{L.__name__}-{loader_cls.__name__}-{resume_step}"
    kw = _kwargs(root, max_epochs=1)
    chk = L.callbacks.ModelCheckpoint(dirpath=root / "ckpts", every_n_train_steps=1, save_top_k=-1)
    L.Trainer(**dict(kw, enable_checkpointing=True), callbacks=[chk]).fit(model_cls(), loader_cls())
    path = root / "ckpts" / f"epoch=0-step={resume_step}.ckpt"
    return _warnings_of(lambda: L.Trainer(**kw).fit(model_cls(), loader_cls(), ckpt_path=path))


@pytest.mark.parametrize(("loader_cls", "resume_step", "warns"), [
    (_NotStateful, 1, True),    # mid-epoch, the loader cannot restore its position
    (_NotStateful, 3, False),   # the last batch of the epoch: nothing left to misplace
    (_Stateful, 1, False),      # mid-epoch, the loader restores its position itself
])
def test_resume_mid_epoch_warning(tmp_path, loader_cls, resume_step, warns):
    got = {name: _resume_warnings(import_framework(name), tmp_path, loader_cls, resume_step) for name in FRAMEWORKS}
    fragment = "resuming from a checkpoint that ended before the epoch ended"
    if warns:
        _assert_same_warning(got, fragment)
        assert _matching(got["trainer"], fragment)[0][0] == "PossibleUserWarning"
    else:
        assert not _matching(got["lightning"], fragment)
        assert not _matching(got["trainer"], fragment)


# --------------------------------------------------------------------------------------------
# fast_dev_run: the dummy logger, nothing written
# --------------------------------------------------------------------------------------------


def test_fast_dev_run_dummy_logger_writes_nothing(tmp_path):
    def run(L):
        root = tmp_path / L.__name__
        root.mkdir()
        logger = L.loggers.CSVLogger(save_dir=str(root / "csv"))
        trainer = L.Trainer(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=str(root), fast_dev_run=2, logger=logger)
        dummy = trainer.logger
        seen = dict(
            cls=type(dummy).__name__,
            loggers_is_dummy=trainer.loggers == [dummy],
            experiment_call=dummy.experiment.add_image("x", torch.zeros(1), whatever=1),
            experiment_index=dummy[0] is dummy,
            name=dummy.name,
            version=dummy.version,
            save_dir=dummy.save_dir,
            log_dir=trainer.log_dir,
        )

        class UsesLogger(boring_model_class(L)):
            def training_step(self, batch, batch_idx):
                self.logger.experiment.anything(1, 2, key=3)
                self.log("loss", self.loss(batch))
                return self.loss(batch)

        trainer.fit(UsesLogger(n=8))
        trainer.test(UsesLogger(n=8), verbose=False)
        seen["files"] = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        seen["global_step"] = trainer.global_step
        return seen

    got = _both(run)
    assert got["lightning"]["cls"] == "DummyLogger"
    assert got["lightning"]["files"] == []  # neither logs nor checkpoints
    assert got["trainer"] == got["lightning"]


def test_fast_dev_run_without_logger_has_no_loggers(tmp_path):
    got = _both(lambda L: L.Trainer(**_kwargs(tmp_path, fast_dev_run=True, logger=False)).loggers)
    assert got == {"lightning": [], "trainer": []}


def test_fast_dev_run_default_logger_becomes_dummy(tmp_path):
    def run(L):
        trainer = L.Trainer(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=str(tmp_path / L.__name__), fast_dev_run=True)
        trainer.fit(boring_model_class(L)(n=8))
        return type(trainer.logger).__name__, len(trainer.loggers), os.path.exists(tmp_path / L.__name__)

    got = _both(run)
    assert got["lightning"] == ("DummyLogger", 1, False)
    assert got["trainer"] == got["lightning"]


def test_default_root_dir_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    got = _both(lambda L: L.Trainer(**dict(_kwargs(tmp_path), default_root_dir="~/runs/../x")).default_root_dir)
    assert got["lightning"] == os.path.join(str(tmp_path), "x")
    assert got["trainer"] == got["lightning"]


def test_default_root_dir_url_kept(tmp_path):
    got = _both(lambda L: L.Trainer(**dict(_kwargs(tmp_path), default_root_dir="memory://runs/x")).default_root_dir)
    assert got["lightning"] == "memory://runs/x"
    assert got["trainer"] == got["lightning"]


def test_info_lines_reach_the_rank_zero_logger_through_propagation(tmp_path, caplog):
    """``caplog.at_level(logging.INFO, logger=<rank-zero logger>)``, as Lightning's tests listen, sees them."""
    for name in FRAMEWORKS:
        L = import_framework(name)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=_rank_zero_logger(L)):
            L.Trainer(**_kwargs(tmp_path, limit_test_batches=1))
        assert "`Trainer(limit_test_batches=1)` was configured so 1 batch will be used." in caplog.text, name


def test_fewer_batches_than_the_logging_interval_warns(tmp_path):
    def run(L):
        logger = L.loggers.CSVLogger(save_dir=str(tmp_path / L.__name__))
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=2, limit_val_batches=0, logger=logger))
        return _warnings_of(lambda: trainer.fit(boring_model_class(L)(n=8)))

    got = _both(run)
    _assert_same_warning(got, "is smaller than the logging interval")
    assert _matching(got["trainer"], "logging interval")[0][0] == "PossibleUserWarning"


def test_fewer_batches_than_the_logging_interval_is_quiet_without_logger(tmp_path):
    def run(L):
        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=1, limit_val_batches=0, logger=False))
        return _warnings_of(lambda: trainer.fit(boring_model_class(L)(n=8)))

    got = _both(run)
    assert not _matching(got["lightning"], "logging interval")
    assert not _matching(got["trainer"], "logging interval")


def test_validation_step_without_val_dataloader_warns(tmp_path):
    def run(L):
        class NoValLoader(boring_model_class(L)):
            val_dataloader = None

        trainer = L.Trainer(**_kwargs(tmp_path, max_epochs=1))
        return _warnings_of(lambda: trainer.fit(NoValLoader(n=8)))

    got = _both(run)
    _assert_same_warning(got, "You defined a `validation_step` but have no `val_dataloader`")
    assert _matching(got["trainer"], "You defined a `validation_step`")[0][0] == "PossibleUserWarning"


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluating_without_a_model_uses_best_and_says_so(tmp_path, stage):
    def run(L):
        root = tmp_path / L.__name__
        trainer = L.Trainer(**_kwargs(root, max_epochs=1, enable_checkpointing=True))
        trainer.fit(boring_model_class(L)(n=8))
        found = _warnings_of(lambda: getattr(trainer, stage)(**({} if stage == "predict" else {"verbose": False})))
        return found, os.path.basename(trainer.ckpt_path)

    got = _both(run)
    _assert_same_warning({k: v[0] for k, v in got.items()}, f"`.{stage}(ckpt_path=None)` was called without a model")
    assert got["trainer"][1] == got["lightning"][1] == "epoch=0-step=2.ckpt"
