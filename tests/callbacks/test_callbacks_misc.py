"""LearningRateMonitor, Timer, LambdaCallback, ModelSummary and the progress bars, compared with
pytorch-lightning's callbacks where their output is deterministic."""
from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl  # noqa: E402  (test extra: a missing oracle fails)
import torch

import trainer.callbacks as C
from trainer.callbacks import (
    Callback,
    LambdaCallback,
    LearningRateMonitor,
    ModelSummary,
    ProgressBar,
    Timer,
    TQDMProgressBar,
)
from trainer.callbacks.model_summary import get_human_readable_count, summarize
from trainer.exceptions import MisconfigurationException

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of", "ignore:You have set log_momentum")
pl_callbacks = pl.callbacks


def test_exports():
    for name in (
        "Callback", "Checkpoint", "ModelCheckpoint", "EarlyStopping", "TQDMProgressBar", "ProgressBar",
        "ModelSummary", "LearningRateMonitor", "LambdaCallback", "Timer",
    ):
        assert hasattr(C, name), name
    assert issubclass(C.ModelCheckpoint, C.Checkpoint) and issubclass(C.TQDMProgressBar, C.ProgressBar)


# ----------------------------------------------------------------------------------------------- LR monitor


class RecordingLogger:
    def __init__(self):
        self.rows = []
        self.save_dir, self.name, self.version = None, "rec", 0

    def log_metrics(self, metrics, step=None):
        self.rows.append((dict(metrics), step))


def _optim_setup():
    p1 = [torch.nn.Parameter(torch.zeros(2))]
    p2 = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    p3 = [torch.nn.Parameter(torch.zeros(2))]
    adam = torch.optim.Adam(p1, lr=0.01)
    sgd = torch.optim.SGD([{"params": p2[:1]}, {"params": p2[1:], "lr": 0.5}], lr=0.1, momentum=0.9, weight_decay=0.01)
    sgd2 = torch.optim.SGD(p3, lr=0.2)
    step_sched = torch.optim.lr_scheduler.StepLR(adam, step_size=1, gamma=0.5)
    epoch_sched = torch.optim.lr_scheduler.ExponentialLR(sgd, gamma=0.9)
    configs = [
        SimpleNamespace(scheduler=step_sched, interval="step", name=None, opt_idx=0, frequency=1),
        SimpleNamespace(scheduler=epoch_sched, interval="epoch", name=None, opt_idx=1, frequency=1),
    ]
    return [adam, sgd, sgd2], configs


@pytest.mark.parametrize("interval", [None, "step", "epoch"])
@pytest.mark.parametrize("extras", [dict(), dict(log_momentum=True, log_weight_decay=True)])
def test_lr_monitor_parity_with_lightning(interval, extras, tmp_path, fake_trainer, drive_fit):
    results = []
    for cls in (LearningRateMonitor, pl_callbacks.LearningRateMonitor):
        optimizers, configs = _optim_setup()
        logger = RecordingLogger()
        trainer = fake_trainer(tmp_path, loggers=[logger], optimizers=optimizers, lr_scheduler_configs=configs)
        cb = cls(logging_interval=interval, **extras)

        class Stepper(Callback):  # steps the schedulers like the loop does
            def on_train_batch_end(self, trainer, *args):
                configs[0].scheduler.step()

            def on_train_epoch_end(self, trainer, *args):
                configs[1].scheduler.step()

        stepper = Stepper()

        class Both(Callback):
            def __getattribute__(self, name):
                if name.startswith("on_") or name == "setup":
                    def call(*args, **kwargs):
                        getattr(cb, name)(*args, **kwargs)
                        getattr(stepper, name)(*args, **kwargs)
                    return call
                return object.__getattribute__(self, name)

        drive_fit(trainer, Both(), [{}, {}], batches=2, validate=False)
        metrics = {k: round(float(v), 8) for k, v in trainer.callback_metrics.items()}
        results.append((logger.rows, cb.lrs, metrics))
    assert results[0] == results[1]
    names = {k for row, _ in results[0][0] for k in row}
    assert "lr-Adam" in names or interval == "epoch" or "lr-SGD/pg1" in names


def test_lr_monitor_names_and_errors(tmp_path, fake_trainer):
    optimizers, configs = _optim_setup()
    configs[1].name = "custom"
    trainer = fake_trainer(tmp_path, loggers=[RecordingLogger()], optimizers=optimizers, lr_scheduler_configs=configs)
    cb = LearningRateMonitor()
    cb.on_train_start(trainer)
    assert list(cb.lrs) == ["lr-Adam", "custom/pg1", "custom/pg2", "lr-SGD"]

    with pytest.raises(MisconfigurationException, match="Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger."):  # noqa: E501
        LearningRateMonitor().on_train_start(fake_trainer(tmp_path))
    with pytest.raises(MisconfigurationException, match="logging_interval should be `step` or `epoch` or `None`."):
        LearningRateMonitor(logging_interval="batch")

    dup = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "name": "x"},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "name": "x"}], lr=0.1)
    with pytest.raises(MisconfigurationException, match="duplicated parameter group names"):
        LearningRateMonitor().on_train_start(fake_trainer(tmp_path, loggers=[RecordingLogger()], optimizers=[dup]))


def test_lr_monitor_step_is_batches_that_stepped(tmp_path, fake_trainer):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    logger = RecordingLogger()
    trainer = fake_trainer(tmp_path, loggers=[logger], optimizers=[opt])
    del trainer._logger_connector  # exercise our own log_every_n_steps rule
    trainer.log_every_n_steps = 2
    cb = LearningRateMonitor()
    cb.on_train_start(trainer)
    for stepped in range(4):
        trainer.fit_loop.epoch_loop._batches_that_stepped = stepped
        cb.on_train_batch_start(trainer)
    assert logger.rows == [({"lr-SGD": 0.3}, 1), ({"lr-SGD": 0.3}, 3)]


# ----------------------------------------------------------------------------------------------- Timer


def test_timer_stops_and_reports(tmp_path, fake_trainer, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("trainer.callbacks.timer.time.monotonic", lambda: clock[0])
    trainer = fake_trainer(tmp_path)
    timer = Timer(duration="00:00:00:10", interval="step")
    timer.on_fit_start(trainer, None)
    timer.on_train_start(trainer, None)
    assert timer.start_time() == 100.0 and timer.end_time() is None
    clock[0] = 105.0
    timer.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop and timer.time_elapsed() == 5.0 and timer.time_remaining() == 5.0
    clock[0] = 111.0
    timer.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.should_stop
    timer.on_train_end(trainer, None)
    clock[0] = 200.0
    assert timer.time_elapsed("train") == 11.0
    assert timer.time_elapsed("validate") == 0 and timer.start_time("test") is None
    state = timer.state_dict()
    assert state == {"time_elapsed": {"train": 11.0, "sanity_check": 0, "validate": 0, "test": 0, "predict": 0}}
    resumed = Timer(duration=timedelta(seconds=10))
    resumed.load_state_dict(state)
    t2 = fake_trainer(tmp_path)
    resumed.on_fit_start(t2, None)  # already over budget when resuming
    assert t2.should_stop


def test_timer_parsing_and_errors():
    assert Timer(duration={"minutes": 2}).time_remaining() == 120
    assert Timer(duration="01:00:00:01")._duration == 86401
    assert Timer().time_remaining() is None
    with pytest.raises(MisconfigurationException, match="is not a valid duration"):
        Timer(duration="1:2")
    with pytest.raises(MisconfigurationException, match=r"Unsupported parameter value `Timer\(interval=batch\)`"):
        Timer(interval="batch")
    theirs = pl_callbacks.Timer(duration="00:00:00:01")
    assert set(Timer().state_dict()["time_elapsed"]) == set(theirs.state_dict()["time_elapsed"])


def test_timer_epoch_interval(tmp_path, fake_trainer, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("trainer.callbacks.timer.time.monotonic", lambda: clock[0])
    trainer = fake_trainer(tmp_path)
    timer = Timer(duration=timedelta(seconds=1), interval="epoch")
    timer.on_train_start(trainer, None)
    clock[0] = 5.0
    timer.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop
    timer.on_train_epoch_end(trainer, None)
    assert trainer.should_stop


# ----------------------------------------------------------------------------------------------- Lambda


def test_lambda_callback(tmp_path, fake_trainer, drive_fit):
    calls = []
    cb = LambdaCallback(
        on_train_epoch_end=lambda trainer, module: calls.append(("epoch_end", trainer.current_epoch)),
        setup=lambda trainer, module, stage: calls.append(("setup", stage)),
    )
    drive_fit(fake_trainer(tmp_path), cb, [{}, {}], batches=1, validate=False)
    assert calls == [("setup", "fit"), ("epoch_end", 0), ("epoch_end", 1)]
    assert "on_train_epoch_end" in vars(cb) and "on_fit_start" not in vars(cb)
    from trainer.hooks import is_overridden

    assert is_overridden("on_train_epoch_end", cb) and not is_overridden("on_fit_start", cb)


# ----------------------------------------------------------------------------------------------- ModelSummary


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        self.bn = torch.nn.BatchNorm1d(2)
        self.bn.eval()
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.extra = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return self.frozen(self.bn(self.net(x)))


def _pl_twin(example):
    class Twin(pl.LightningModule):
        def __init__(self):
            super().__init__()
            src = _Net()
            self.net, self.bn, self.frozen, self.extra = src.net, src.bn, src.frozen, src.extra
            self.example_input_array = example

        def forward(self, x):
            return self.frozen(self.bn(self.net(x)))

    return Twin()


@pytest.mark.parametrize("depth", [0, 1, 2, -1])
@pytest.mark.parametrize("example", [None, torch.randn(4, 8)])
def test_summary_table_matches_lightning(depth, example):
    from pytorch_lightning.utilities.model_summary import summarize as pl_summarize

    ours = _Net()
    ours.example_input_array = example
    assert summarize(ours, depth) == str(pl_summarize(_pl_twin(example), max_depth=depth))


def test_summary_counts_and_callback(caplog):
    table = summarize(_Net(), 1)
    assert table.splitlines()[0].startswith("  | Name ")
    assert "Trainable params" in table and "Non-trainable params" in table
    assert "Total estimated model params size (MB)" in table and "Modules in eval mode" in table
    assert [get_human_readable_count(n) for n in (0, 999, 1234, 2_000_000, 3 * 10**12)] == [
        "0  ", "999  ", "1.2 K", "2.0 M", "3.0 T"]
    trainer = SimpleNamespace(is_global_zero=True)
    with caplog.at_level(logging.INFO, logger="trainer.callbacks.model_summary"):
        ModelSummary(max_depth=1).on_fit_start(trainer, _Net())
        ModelSummary(max_depth=0).on_fit_start(trainer, _Net())
    assert len(caplog.records) == 1 and caplog.records[0].getMessage() == "\n" + table
    with pytest.raises(ValueError, match="`max_depth` can be -1, 0 or > 0, got -2"):
        summarize(_Net(), -2)


# ----------------------------------------------------------------------------------------------- progress bars


def test_progress_bar_base_and_metrics(tmp_path, fake_trainer):
    bar = ProgressBar()
    with pytest.raises(TypeError, match="reference has not been set yet"):
        bar.trainer
    with pytest.raises(NotImplementedError):
        bar.disable()
    logger = SimpleNamespace(version=7)
    trainer = fake_trainer(tmp_path, loggers=[logger], progress_bar_metrics={"loss": torch.tensor(0.25), "acc": 0.5})
    bar.setup(trainer, None, "fit")
    assert bar.get_metrics(trainer, None) == {"v_num": 7, "loss": 0.25, "acc": 0.5}
    trainer.loggers = [SimpleNamespace(version="abcdefg")]
    assert bar.get_metrics(trainer, None)["v_num"] == "defg"
    trainer.loggers = [SimpleNamespace(version=1), SimpleNamespace(version="x")]
    assert bar.get_metrics(trainer, None)["v_num"] == "1_x"
    trainer.loggers = []
    assert "v_num" not in bar.get_metrics(trainer, None)
    trainer.progress_bar_metrics = {"v_num": 1.0}
    trainer.loggers = [logger]
    with pytest.warns(UserWarning, match="already tracks a metric with the name"):
        bar.get_metrics(trainer, None)
    # totals
    assert bar.total_train_batches == 4 and bar.total_val_batches == 2
    trainer.max_epochs, trainer.max_steps, trainer.global_step = -1, 5, 3
    assert bar.total_train_batches == 2
    trainer.check_val_every_n_epoch = 2
    assert bar.total_val_batches == 0


def _run_bars(bar, trainer, drive_fit):
    module = SimpleNamespace(automatic_optimization=True)
    bar.setup(trainer, module, "fit")
    trainer.sanity_checking = True
    bar.on_sanity_check_start(trainer, module)
    bar.on_validation_start(trainer, module)
    for i in range(2):
        bar.on_validation_batch_start(trainer, module, None, i)
        bar.on_validation_batch_end(trainer, module, None, None, i)
    bar.on_validation_end(trainer, module)
    bar.on_sanity_check_end(trainer, module)
    trainer.sanity_checking = False
    drive_fit(trainer, bar, [{}, {}], batches=4, validate=False)


def test_tqdm_bar_output_and_postfix(tmp_path, fake_trainer, drive_fit, capsys):
    trainer = fake_trainer(tmp_path, loggers=[SimpleNamespace(version=3)], progress_bar_metrics={"loss": 1.5})
    bar = TQDMProgressBar()
    _run_bars(bar, trainer, drive_fit)
    out, err = capsys.readouterr()
    # like Lightning 2.6, the bars go to stdout
    assert "Epoch 1: 100%" in out and "4/4" in out and "v_num=3" in out and "loss=1.500" in out
    assert "Sanity Checking DataLoader 0" in out
    assert bar.train_progress_bar.n == 4 and bar.train_progress_bar.total == 4


def test_tqdm_bar_same_postfix_as_lightning(tmp_path, fake_trainer, drive_fit, capsys):
    postfixes = []
    for cls in (TQDMProgressBar, pl_callbacks.TQDMProgressBar):
        trainer = fake_trainer(tmp_path, loggers=[SimpleNamespace(version=3)], progress_bar_metrics={"loss": 1.5, "acc": 0.123456})  # noqa: E501
        bar = cls(refresh_rate=2)
        _run_bars(bar, trainer, drive_fit)
        postfixes.append((bar.train_progress_bar.postfix, bar.train_progress_bar.desc, bar.train_progress_bar.n))
    assert postfixes[0] == postfixes[1]


def test_tqdm_disabled_writes_nothing(tmp_path, fake_trainer, drive_fit, capsys):
    trainer = fake_trainer(tmp_path)
    bar = TQDMProgressBar()
    bar.disable()
    assert bar.is_disabled
    _run_bars(bar, trainer, drive_fit)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    bar.enable()
    assert bar.is_enabled
    assert TQDMProgressBar(refresh_rate=0).is_disabled
    # non-zero ranks disable their bar at setup
    other = TQDMProgressBar()
    other.setup(fake_trainer(tmp_path, is_global_zero=False), None, "fit")
    assert other.is_disabled


def test_tqdm_validate_test_predict(tmp_path, fake_trainer, capsys):
    trainer = fake_trainer(tmp_path)
    bar = TQDMProgressBar()
    bar.setup(trainer, None, "validate")
    trainer.state.fn = "validate"
    bar.on_validation_start(trainer, None)
    bar.on_validation_batch_start(trainer, None, None, 0)
    bar.on_validation_batch_end(trainer, None, None, None, 0)
    bar.on_validation_end(trainer, None)
    trainer.state.fn = "test"
    bar.on_test_start(trainer, None)
    for i in range(2):
        bar.on_test_batch_start(trainer, None, None, i)
        bar.on_test_batch_end(trainer, None, None, None, i)
    bar.on_test_end(trainer, None)
    trainer.state.fn = "predict"
    bar.on_predict_start(trainer, None)
    for i in range(2):
        bar.on_predict_batch_start(trainer, None, None, i)
        bar.on_predict_batch_end(trainer, None, None, None, i)
    bar.on_predict_end(trainer, None)
    out = capsys.readouterr().out
    assert "Validation DataLoader 0" in out and "Testing DataLoader 0" in out and "Predicting DataLoader 0" in out
    assert bar.test_progress_bar.n == 2 and bar.predict_progress_bar.n == 2


def test_tqdm_leave_creates_bar_per_epoch(tmp_path, fake_trainer, drive_fit, capsys):
    trainer = fake_trainer(tmp_path)
    bar = TQDMProgressBar(leave=True)
    bars = []
    orig = bar.init_train_tqdm

    def spy():
        b = orig()
        bars.append(b)
        return b

    bar.init_train_tqdm = spy
    drive_fit(trainer, bar, [{}, {}], batches=2, validate=False)
    assert len(bars) == 3  # one at train start, one per epoch


def test_rich_model_summary_matches_lightning(capsys):
    import rich  # noqa: F401  (test extra: a missing package fails)
    from rich import get_console

    from trainer.callbacks import RichModelSummary

    get_console().width = 120
    example = torch.randn(4, 8)
    ours = _Net()
    ours.example_input_array = example
    RichModelSummary().on_fit_start(SimpleNamespace(is_global_zero=True), ours)
    mine = capsys.readouterr().out
    twin = _pl_twin(example)
    theirs_cb = pl_callbacks.RichModelSummary()
    from pytorch_lightning.utilities.model_summary import summarize as pl_summarize

    s = pl_summarize(twin, max_depth=1)
    theirs_cb.summarize(s._get_summary_data(), s.total_parameters, s.trainable_parameters, s.model_size,
                        s.total_training_modes, total_flops=s.total_flops)
    assert mine == capsys.readouterr().out
    assert "Trainable params" in mine
