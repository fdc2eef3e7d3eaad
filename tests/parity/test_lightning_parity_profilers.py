"""Profiler parity (issue 15): ``trainer.profilers`` at Lightning's path, ``Trainer(profiler=...)``'s names and
errors, the reports' form and file names, and ``profiler="pytorch"`` writing Chrome traces where Lightning does, with
the compiled training step visible in them as its graphs.

Each case runs the same script under pytorch-lightning 2.6.6 (the oracle, asserted first) and under `trainer`."""
from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any, Dict, List

import pytest
from helpers import boring_model_class, compiled_engine, import_framework, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

_NAMES = ("AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler", "XLAProfiler")


def _profilers(name: str) -> Any:
    return importlib.import_module("pytorch_lightning.profilers" if name == "lightning" else "trainer.profilers")


def _outcome(fn: Any) -> Any:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc).__name__, str(exc)
    return None


def test_public_names_and_the_old_path():
    pl = _profilers("lightning")
    ours = _profilers("trainer")
    assert set(_NAMES) <= set(pl.__all__)
    assert set(pl.__all__) <= set(ours.__all__)
    import trainer.profiler as old_path

    for name in _NAMES:  # one implementation: the old module re-exports the package's classes
        assert getattr(old_path, name) is getattr(ours, name)


def test_profiler_argument_errors_match_lightning(tmp_path):
    results = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        results[name] = {
            "unknown name": _outcome(lambda: L.Trainer(profiler="fast", **quiet_trainer_kwargs(tmp_path))),
            "xla name": _outcome(lambda: L.Trainer(profiler="xla", **quiet_trainer_kwargs(tmp_path))),
            "xla class": _outcome(lambda: _profilers(name).XLAProfiler()),
            "bad sort key": _outcome(lambda: _profilers(name).PyTorchProfiler(sort_by_key="wall")),
            "bad table key": _outcome(lambda: _profilers(name).PyTorchProfiler(table_kwargs={"row_limit": 3})),
            "bad schedule": _outcome(lambda: _profilers(name).PyTorchProfiler(schedule=3)),
            "name in capitals": _outcome(lambda: L.Trainer(profiler="Simple", **quiet_trainer_kwargs(tmp_path))),
        }
    pl, ours = results["lightning"], results["trainer"]
    assert pl["xla class"][0] == "ModuleNotFoundError" and "torch_xla" in pl["xla class"][1]
    assert pl["name in capitals"] is None
    for case, expected in pl.items():  # the sort keys are a set: its printed order is not compared
        got = ours[case]
        assert (got is None) == (expected is None), case
        if expected is not None:
            assert got[0] == expected[0], case
            assert got[1].split("{")[0] == expected[1].split("{")[0], case


def _run_with(name: str, tmp_path: Any, profiler: Any, **trainer_kw: Any) -> Any:
    L = import_framework(name)
    kw = quiet_trainer_kwargs(tmp_path)
    kw.update(trainer_kw)
    trainer = L.Trainer(max_epochs=1, profiler=profiler, **kw)
    trainer.fit(boring_model_class(L)(n=32))
    return trainer


@pytest.mark.parametrize("kind", ["simple", "advanced"])
def test_report_file_name_and_header(tmp_path, kind):
    """``filename=`` writes ``<dirpath>/fit-<filename>.txt`` headed ``FIT Profiler Report``; the simple report's
    table has Lightning's columns and a Total row; both reports name the same kinds of actions."""
    texts = {}
    for name in ("lightning", "trainer"):
        cls = getattr(_profilers(name), f"{kind.capitalize()}Profiler")
        _run_with(name, tmp_path / name, cls(filename="perf"))
        files = sorted(os.listdir(tmp_path / name))
        assert "fit-perf.txt" in files, (name, files)
        texts[name] = (tmp_path / name / "fit-perf.txt").read_text()
    for text in texts.values():
        assert text.startswith("FIT Profiler Report")
        assert "run_training_epoch" in text and "training_step" in text and "validation_step" in text
    if kind == "simple":
        def header(text: str) -> List[str]:
            row = next(line for line in text.splitlines() if line.startswith("|  Action"))
            return [c.strip() for c in row.strip("|").split("|")]

        assert header(texts["trainer"]) == header(texts["lightning"])
        assert "|  Total" in texts["trainer"]
    else:
        assert "Profile stats for: run_training_epoch" in texts["trainer"]


def _traces(folder: Any) -> Dict[str, Any]:
    """``{action: trace}`` for the Chrome traces in ``folder`` (the file's trailing id dropped)."""
    out = {}
    for f in os.listdir(folder):
        m = re.fullmatch(r"(fit-.+)\.\d+\.pt\.trace\.json", f)
        if m:
            with open(os.path.join(folder, f)) as fh:
                out[m.group(1)] = json.load(fh)
    return out


def test_pytorch_profiler_writes_chrome_traces_where_lightning_does(tmp_path):
    """``profiler="pytorch"`` without a logger: one Chrome trace per step kind in ``default_root_dir``, named
    ``fit-<action>.<id>.pt.trace.json``; the training trace holds the step and the summary is logged as the
    ``FIT Profiler Report``. Under the compiled engine the step appears as its graph ``[trainer][compiled]step``."""
    pl = _traces(tmp_path / "lightning") if _run_with("lightning", tmp_path / "lightning", "pytorch") else {}
    assert sorted(pl) == ["fit-[Strategy]SingleDeviceStrategy.training_step",
                          "fit-[Strategy]SingleDeviceStrategy.validation_step"]
    trainer = _run_with("trainer", tmp_path / "trainer", "pytorch")
    ours = _traces(tmp_path / "trainer")
    # the same files; the action naming the file may be the module's step instead of the strategy's (both are
    # recorded, as in Lightning: whichever step action ends the profiler's cycle names it)
    pattern = r"fit-\[(Strategy\]SingleDeviceStrategy|LightningModule\]BoringModel)\.{}_step"
    assert len(ours) == 2, sorted(ours)
    train = next(k for k in ours if re.fullmatch(pattern.format("training"), k))
    assert any(re.fullmatch(pattern.format("validation"), k) for k in ours), sorted(ours)
    events = {e.get("name") for e in ours[train]["traceEvents"]}
    assert "[pl][profile][Strategy]SingleDeviceStrategy.training_step" in events
    if compiled_engine():
        assert trainer.compile_report.mode == "full", str(trainer.compile_report)
        assert "[trainer][compiled]step" in events
    else:
        assert "[pl][module]torch.nn.modules.linear.Linear: layer" in events  # module names, as Lightning


def test_pytorch_profiler_dirpath_and_filename(tmp_path):
    """``dirpath``/``filename`` as Lightning: traces ``<dirpath>/fit-<filename>-<action>...`` and the report in
    ``<dirpath>/fit-<filename>.txt``."""
    names = {}
    for name in ("lightning", "trainer"):
        out = tmp_path / name / "prof"
        _run_with(name, tmp_path / name, _profilers(name).PyTorchProfiler(dirpath=str(out), filename="p"))
        names[name] = sorted(_traces(out))
        assert (out / "fit-p.txt").read_text().startswith("FIT Profiler Report")
    assert names["lightning"] == ["fit-p-[Strategy]SingleDeviceStrategy.training_step",
                                  "fit-p-[Strategy]SingleDeviceStrategy.validation_step"]
    assert len(names["trainer"]) == 2 and all(n.startswith("fit-p-[") for n in names["trainer"]), names["trainer"]
    assert sorted(n.rsplit(".", 1)[1] for n in names["trainer"]) == ["training_step", "validation_step"]


def _recorded_actions(name: str, tmp_path: Any, overrides: bool) -> Dict[str, List[str]]:
    """The SimpleProfiler action names of one fit (with validation), then validate, test and predict."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    L = import_framework(name)

    class Recorded(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("v", self.layer(batch[0]).mean())

        def test_step(self, batch, batch_idx):
            self.log("t", self.layer(batch[0]).mean())

        def predict_step(self, batch, batch_idx):
            return self.layer(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if overrides:  # hooks inside the step overridden: the compiled engine splits the step there

        class Recorded(Recorded):  # type: ignore[no-redef]
            def on_before_backward(self, loss):
                self.seen_loss = float(loss)

            def on_before_optimizer_step(self, optimizer):
                self.seen_step = True

    def loader() -> Any:
        return DataLoader(TensorDataset(torch.randn(8, 4, generator=torch.Generator().manual_seed(0))), batch_size=4)

    profiler = _profilers(name).SimpleProfiler()
    kwargs = quiet_trainer_kwargs(tmp_path / name)
    t = L.Trainer(**{**kwargs, "max_epochs": 2, "profiler": profiler})
    model = Recorded()
    t.fit(model, loader(), loader())
    fit = sorted(profiler.recorded_durations)
    t.validate(model, loader())
    t.test(model, loader())
    t.predict(model, loader())
    return {"fit": fit, "all": sorted(profiler.recorded_durations)}


# hooks that run inside the compiled training step's graph (the backward, the optimizer update and the calls
# between them): the compiled engine runs no host-side call to time for them, so it records no action for them
_IN_GRAPH = {"[LightningModule]Recorded.configure_gradient_clipping", "[LightningModule]Recorded.on_after_backward",
             "[LightningModule]Recorded.on_before_backward", "[LightningModule]Recorded.on_before_optimizer_step",
             "[LightningModule]Recorded.optimizer_step", "[LightningModule]Recorded.optimizer_zero_grad",
             "[Strategy]SingleDeviceStrategy.backward"}


@pytest.mark.parametrize("overrides", [False, True])
def test_simple_profiler_records_lightnings_actions(tmp_path, overrides):
    """The same fit/validate/test/predict records the same action names as Lightning: every module hook (no-op
    defaults included), the strategy's hooks and steps (``[Strategy]...training_step``, ``batch_to_device``,
    ``backward``), ``run_training_batch`` and the loops' ``[_TrainingEpochLoop].train_dataloader_next``,
    ``[_EvaluationLoop].val_next``/``test_next`` and ``[_PredictionLoop].predict_next``."""
    pl = _recorded_actions("lightning", tmp_path, overrides)
    for action in ("run_training_batch", "[_TrainingEpochLoop].train_dataloader_next", "[_EvaluationLoop].val_next",
                   "[_PredictionLoop].predict_next", "[Strategy]SingleDeviceStrategy.training_step",
                   "[Strategy]SingleDeviceStrategy.batch_to_device", "[LightningModule]Recorded.on_train_start"):
        assert action in pl["fit"] or action in pl["all"], action
    assert "[LightningModule]Recorded.training_step" not in pl["all"]
    ours = _recorded_actions("trainer", tmp_path, overrides)
    if not compiled_engine():
        assert ours == pl
        return
    in_graph = set(_IN_GRAPH)
    if overrides:  # the split step calls these hooks on the host, between its graphs
        in_graph -= {"[LightningModule]Recorded.on_before_backward",
                     "[LightningModule]Recorded.on_before_optimizer_step"}
    for stage in ("fit", "all"):
        assert set(pl[stage]) - set(ours[stage]) <= in_graph
        assert set(ours[stage]) <= set(pl[stage])


def _manual_actions(name: str, tmp_path: Any) -> List[str]:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    L = import_framework(name)

    class Manual(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(self.layer(batch[0]).pow(2).mean())
            opt.step()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    profiler = _profilers(name).SimpleProfiler()
    t = L.Trainer(**{**quiet_trainer_kwargs(tmp_path / name), "max_epochs": 1, "profiler": profiler})
    t.fit(Manual(), DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4))
    return sorted(profiler.recorded_durations)


def test_simple_profiler_actions_under_manual_optimization_match_lightning(tmp_path):
    pl = _manual_actions("lightning", tmp_path)
    assert "[Strategy]SingleDeviceStrategy.training_step" in pl and "optimizer_step" in pl
    assert _manual_actions("trainer", tmp_path) == pl
