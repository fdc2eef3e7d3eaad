"""Plugins and ``Trainer.init_module`` parity (issue 15): ``Trainer(plugins=...)`` accepts what Lightning accepts and
rejects what it rejects with its errors; a precision plugin trains as its ``precision=`` flag does; a checkpoint IO
plugin writes the checkpoints; ``init_module`` creates parameters where and in the dtype Lightning does.

Each case runs the same script under pytorch-lightning 2.6.6 (the oracle, asserted first) and under `trainer`."""
from __future__ import annotations

import importlib
import os
from typing import Any, Dict, List

import pytest
import torch
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]


def _mod(name: str, sub: str) -> Any:
    return importlib.import_module(("pytorch_lightning" if name == "lightning" else "trainer") + sub)


def _outcome(fn: Any) -> Any:
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc).__name__, str(exc).split(" object at ")[0].split("<")[0]
    return "ok", value


def _constructions(name: str, tmp_path: Any) -> Dict[str, Any]:
    L = import_framework(name)
    P = _mod(name, ".plugins")
    E = _mod(name, ".plugins.environments")

    def build(**kw: Any) -> Any:
        t = L.Trainer(**quiet_trainer_kwargs(tmp_path), **kw)
        return t.precision, type(t.precision_plugin).__name__, type(t.strategy.checkpoint_io).__name__

    return {
        "empty list": _outcome(lambda: build(plugins=[])),
        "None": _outcome(lambda: build(plugins=None)),
        "one precision plugin": _outcome(lambda: build(plugins=P.DoublePrecision())),
        "half bf16": _outcome(lambda: build(plugins=[P.HalfPrecision("bf16-true")])),
        "half default": _outcome(lambda: build(plugins=[P.HalfPrecision()])),
        "mixed bf16": _outcome(lambda: build(plugins=[P.MixedPrecision("bf16-mixed", "cpu")])),
        "environment and io": _outcome(lambda: build(plugins=[E.LightningEnvironment(), P.TorchCheckpointIO()])),
        "async io": _outcome(lambda: build(plugins=[P.AsyncCheckpointIO()])),
        "precision conflict": _outcome(lambda: build(plugins=[P.DoublePrecision()], precision="16-mixed")),
        "precision conflict 32": _outcome(lambda: build(plugins=[P.DoublePrecision()], precision="32-true")),
        "two precision plugins": _outcome(lambda: build(plugins=[P.DoublePrecision(), P.HalfPrecision()])),
        "two environments": _outcome(lambda: build(plugins=[E.SLURMEnvironment(), E.LightningEnvironment()])),
        "unknown plugin": _outcome(lambda: build(plugins=["x"])),
    }


def test_plugins_argument_matches_lightning(tmp_path):
    pl = _constructions("lightning", tmp_path)
    assert pl["empty list"] == ("ok", ("32-true", "Precision", "TorchCheckpointIO"))
    assert pl["precision conflict"][0] == "ValueError" and pl["unknown plugin"][0] == "MisconfigurationException"
    ours = _constructions("trainer", tmp_path)
    assert ours == pl


def test_public_names():
    for sub in (".plugins", ".plugins.precision"):
        ours = _mod("trainer", sub)
        for name in ("Precision", "MixedPrecision", "HalfPrecision", "DoublePrecision"):
            assert getattr(ours, name) is getattr(importlib.import_module("trainer.precision"), name)
    envs = _mod("trainer", ".plugins.environments")
    for name in ("ClusterEnvironment", "LightningEnvironment", "SLURMEnvironment", "TorchElasticEnvironment"):
        assert getattr(envs, name) is getattr(importlib.import_module("trainer.strategies.environment"), name)
    for name in ("CheckpointIO", "TorchCheckpointIO", "AsyncCheckpointIO"):
        assert hasattr(_mod("trainer", ".plugins"), name) and hasattr(_mod("lightning", ".plugins"), name)


def test_precision_plugin_trains_as_its_flag(tmp_path):
    """``plugins=[DoublePrecision()]`` gives Lightning's weights, and the same as ``precision="64-true"``."""
    weights = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        for how, kw in (("plugin", dict(plugins=[_mod(name, ".plugins").DoublePrecision()])),
                        ("flag", dict(precision="64-true"))):
            model = boring_model_class(L)(n=16)
            L.Trainer(max_epochs=2, **quiet_trainer_kwargs(tmp_path / name / how), **kw).fit(model)
            weights[name, how] = model.layer.weight.detach().clone()
    assert weights["lightning", "plugin"].dtype == torch.float64
    assert torch.equal(weights["lightning", "plugin"], weights["lightning", "flag"])
    assert torch.equal(weights["trainer", "plugin"], weights["trainer", "flag"])
    torch.testing.assert_close(weights["trainer", "plugin"], weights["lightning", "plugin"], rtol=1e-12, atol=1e-12)


def test_checkpoint_io_plugin_writes_the_checkpoints(tmp_path):
    """A user's CheckpointIO sees every save (ModelCheckpoint's and ``trainer.save_checkpoint``) and the load of
    ``fit(ckpt_path=...)``; AsyncCheckpointIO's file is whole once the fit returns."""
    seen = {}
    for name in ("lightning", "trainer"):
        L = import_framework(name)
        P = _mod(name, ".plugins")
        calls: List[Any] = []

        class Recording(P.TorchCheckpointIO):
            def save_checkpoint(self, checkpoint, path, storage_options=None):
                calls.append(("save", os.path.basename(path), sorted(checkpoint)[:3]))
                return super().save_checkpoint(checkpoint, path, storage_options)

            def load_checkpoint(self, path, map_location=None, **kwargs):
                calls.append(("load", os.path.basename(path)))
                return super().load_checkpoint(path, map_location, **kwargs)

        kw = quiet_trainer_kwargs(tmp_path / name)
        kw["enable_checkpointing"] = True
        trainer = L.Trainer(max_epochs=1, plugins=[Recording()], **kw)
        trainer.fit(boring_model_class(L)(n=8))
        trainer.save_checkpoint(str(tmp_path / name / "manual.ckpt"))
        again = L.Trainer(max_epochs=2, plugins=[Recording()], **quiet_trainer_kwargs(tmp_path / name))
        again.fit(boring_model_class(L)(n=8), ckpt_path=str(tmp_path / name / "manual.ckpt"))
        async_trainer = L.Trainer(max_epochs=1, plugins=[P.AsyncCheckpointIO()], **kw)
        async_trainer.fit(boring_model_class(L)(n=8))
        async_trainer.save_checkpoint(str(tmp_path / name / "async.ckpt"))
        async_trainer.strategy.checkpoint_io.teardown()
        loaded = torch.load(str(tmp_path / name / "async.ckpt"), weights_only=False)
        seen[name] = (calls, sorted(loaded["state_dict"]))
    assert [c[0] for c in seen["lightning"][0]] == ["save", "save", "load"]
    assert seen["trainer"] == seen["lightning"]


def _init_module_cases(name: str, tmp_path: Any) -> List[Any]:
    L = import_framework(name)
    out = []
    for precision in ("32-true", "64-true", "bf16-true", "16-true", "bf16-mixed"):
        trainer = L.Trainer(precision=precision, **quiet_trainer_kwargs(tmp_path))
        with trainer.init_module():
            made = torch.nn.Linear(2, 2)
        torch.manual_seed(0)
        with trainer.init_module(empty_init=True):
            empty = torch.nn.Linear(4, 4)
        torch.manual_seed(0)
        reference = torch.nn.Linear(4, 4)
        out.append((precision, made.weight.dtype, made.weight.device.type, torch.get_default_dtype(),
                    empty.weight.dtype, torch.equal(empty.weight.float(), reference.weight)))
    return out


def test_init_module_matches_lightning(tmp_path):
    pl = _init_module_cases("lightning", tmp_path)
    assert pl[1][1] == torch.float64 and pl[4][1] == torch.float32 and all(row[3] == torch.float32 for row in pl)
    assert not any(row[5] for row in pl)  # empty_init=True: nn.init did not run
    assert _init_module_cases("trainer", tmp_path) == pl
