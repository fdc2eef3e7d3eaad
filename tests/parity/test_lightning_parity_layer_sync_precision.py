"""Strategy precision plugins (``FSDPPrecision``, ``DeepSpeedPrecision``) and layer-sync plugins (``LayerSync``,
``TorchSyncBatchNorm``, ``Trainer(sync_batchnorm=True)``) against pytorch-lightning 2.6.6 (issue 15).

Lightning's outcome is asserted first (the oracle), then ours. Lightning's FSDP refuses the CPU, so the FSDP
plugin and strategy wiring are compared on the objects themselves, and our CPU FSDP fit (gloo, 2 processes) is
checked on its own. ``SyncBatchNorm`` under DDP needs GPU modules: on CPU both frameworks convert the model and
then fail with torch's same error, which shows the conversion happens under DDP and not on one device."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from typing import Any, Dict

import pytest
import torch
from helpers import boring_model_class, import_framework, quiet_trainer_kwargs
from torch import nn

pytestmark = [pytest.mark.parity]
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layer_sync_script.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRECISIONS = ("32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")


def _kw(tmp_path: Any, **kw: Any) -> Dict[str, Any]:
    return {**quiet_trainer_kwargs(tmp_path), **kw}


def _mod(name: str, sub: str) -> Any:
    return importlib.import_module(("pytorch_lightning" if name == "lightning" else "trainer") + sub)


def _outcome(fn: Any) -> Any:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = fn()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc).__name__, str(exc).split(" object at ")[0].split("<")[0]
    return "ok", value, sorted({str(w.message) for w in caught if "precision" in str(w.message)})


# ---------------------------------------------------------------- precision plugins
def _plugin_behaviour(name: str, cls_name: str, precision: str) -> Dict[str, Any]:
    cls = getattr(_mod(name, ".plugins"), cls_name)
    plugin = cls(precision)
    module = plugin.convert_module(nn.Linear(2, 2))
    with plugin.tensor_init_context():
        created = torch.empty(1)
    data = plugin.convert_input({"x": torch.ones(2), "i": torch.ones(2, dtype=torch.long)})
    out = {
        "precision": plugin.precision, "module": str(module.weight.dtype), "init": str(created.dtype),
        "input": (str(data["x"].dtype), str(data["i"].dtype)),
        "scaler": type(getattr(plugin, "scaler", None)).__name__,
        "state_dict_keys": sorted(plugin.state_dict()),
    }
    if cls_name == "FSDPPrecision":
        with plugin.module_init_context():
            out["module_init"] = str(torch.empty(1).dtype)
        config = _outcome(lambda: plugin.mixed_precision_config)
        out["mp_config"] = (type(config[1]).__name__, str(config[1].param_dtype), str(config[1].reduce_dtype),
                            str(config[1].buffer_dtype), config[2])
        out["output"] = str(plugin.convert_output(torch.ones(1, dtype=torch.float16)).dtype)
    return out


@pytest.mark.parametrize("cls_name", ["FSDPPrecision", "DeepSpeedPrecision"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_strategy_precision_plugin_matches_lightning(cls_name, precision):
    pl = _plugin_behaviour("lightning", cls_name, precision)
    assert pl["precision"] == precision
    if "true" in precision and precision != "32-true":
        assert pl["module"] == pl["init"] != "torch.float32"
    assert pl["input"][1] == "torch.int64"
    assert _plugin_behaviour("trainer", cls_name, precision) == pl


@pytest.mark.parametrize("cls_name, args", [
    ("FSDPPrecision", ("64-true",)), ("FSDPPrecision", ("16",)), ("FSDPPrecision", ("bf16-mixed", "not a scaler")),
    ("DeepSpeedPrecision", ("64-true",)), ("DeepSpeedPrecision", ("16",)), ("DeepSpeedPrecision", ("transformer-engine",)),
])
def test_strategy_precision_plugin_rejects_what_lightning_rejects(cls_name, args):
    pl = _outcome(lambda: getattr(_mod("lightning", ".plugins"), cls_name)(*args))
    assert pl[0] == "ValueError"
    assert _outcome(lambda: getattr(_mod("trainer", ".plugins"), cls_name)(*args)) == pl


def test_fsdp_precision_keeps_a_given_sharded_scaler_for_16_mixed():
    """Lightning 2.6.6 checks the scaler against the class default precision ("32-true") before setting its own,
    so it refuses any scaler (and would drop one); we keep the scaler its docstring asks for."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    from trainer.plugins import FSDPPrecision

    scaler = ShardedGradScaler(init_scale=8.0)
    assert FSDPPrecision("16-mixed", scaler=scaler).scaler is scaler
    with pytest.raises(ValueError, match="does not use a scaler"):
        FSDPPrecision("bf16-mixed", scaler=scaler)


def _fsdp_strategy_wiring(name: str) -> Dict[str, Any]:
    S = _mod(name, ".strategies")
    P = _mod(name, ".plugins")
    from torch.distributed.fsdp import MixedPrecision as TorchMixedPrecision

    default = S.FSDPStrategy()
    given = S.FSDPStrategy(precision_plugin=P.FSDPPrecision("bf16-mixed"))
    explicit = S.FSDPStrategy(precision_plugin=P.FSDPPrecision("bf16-mixed"),
                              mixed_precision=TorchMixedPrecision(param_dtype=torch.float16))

    def set_plain() -> Any:
        S.FSDPStrategy().precision_plugin = P.MixedPrecision("bf16-mixed", "cpu")

    return {
        "default": (type(default.precision_plugin).__name__, default.precision_plugin.precision),
        "given": str(given.mixed_precision_config.param_dtype),
        "explicit wins": str(explicit.mixed_precision_config.param_dtype),
        "plain plugin": _outcome(set_plain)[0:2],
        "plain in constructor": _outcome(lambda: S.FSDPStrategy(precision_plugin=P.DoublePrecision()))[0:2],
    }


def test_fsdp_strategy_precision_wiring_matches_lightning():
    pl = _fsdp_strategy_wiring("lightning")
    assert pl["default"] == ("FSDPPrecision", "32-true") and pl["explicit wins"] == "torch.float16"
    assert pl["plain plugin"][0] == "TypeError"
    assert _fsdp_strategy_wiring("trainer") == pl


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_trainer_gives_fsdp_an_fsdp_precision_plugin(precision, tmp_path):
    """Lightning's accelerator connector: ``strategy="fsdp"`` with ``precision=`` builds an ``FSDPPrecision``
    (Lightning's FSDP refuses the CPU at construction, ours runs there)."""
    import trainer as L
    from trainer.plugins import FSDPPrecision

    t = L.Trainer(**_kw(tmp_path, strategy="fsdp", devices=2, precision=precision))
    assert type(t.precision_plugin) is FSDPPrecision and t.precision == precision
    t = L.Trainer(**_kw(tmp_path, strategy="fsdp", devices=2, plugins=[FSDPPrecision(precision)]))
    assert t.precision == precision and t.strategy.precision_plugin.trainer is t


def _run(lib: str, mode: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    os.makedirs(out, exist_ok=True)
    return subprocess.run([sys.executable, "-W", "ignore", SCRIPT, "--lib", lib, "--mode", mode, "--out", out, *extra],
                          env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("precision, bn_dtype", [("bf16-mixed", "torch.float32"), ("bf16-true", "torch.bfloat16")])
def test_fsdp_precision_plugin_trains_two_processes_in_bf16(tmp_path, precision, bn_dtype):
    """``plugins=[FSDPPrecision("bf16-mixed")]`` with ``strategy="fsdp"``: FSDP computes with bf16 parameters
    (Lightning's ``mixed_precision_config``) on both ranks; under "bf16-mixed" batch norms stay in fp32 as FSDP1
    keeps them, under "bf16-true" the whole module is bf16."""
    proc = _run("trainer", "fsdp", str(tmp_path), "--precision", precision)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        with open(tmp_path / f"result_{rank}.json") as f:
            r = json.load(f)
        assert (r["plugin"], r["precision"], r["global_step"]) == ("FSDPPrecision", precision, 2)
        assert r["param_dtype"] == r["out_dtype"] == "torch.bfloat16"
        assert r["bn_param_dtype"] == bn_dtype
        assert r["mp_config"] == ["torch.bfloat16"] * 3


# ---------------------------------------------------------------- layer sync
class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm1d(3)
        self.block = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, affine=False))


def _layer_sync_round_trip(name: str) -> Dict[str, Any]:
    P = _mod(name, ".plugins")
    torch.manual_seed(0)
    model = _BNNet()
    model.bn1.running_mean.fill_(0.5)
    weight = model.bn1.weight
    plugin = P.TorchSyncBatchNorm()
    applied = plugin.apply(model)
    types_applied = [type(m).__name__ for m in applied.modules()]
    reverted = plugin.revert(applied)
    bn = reverted.bn1
    out = reverted.block[1](torch.randn(2, 2, 3, 3))  # a reverted layer accepts the input of its original rank
    return {
        "same root": applied is model and reverted is model,
        "applied": types_applied,
        "reverted": [type(m).__name__ for m in reverted.modules()],
        "shares weight": bn.weight is weight, "running mean": bn.running_mean.tolist(),
        "affine": (bn.affine, reverted.block[1].affine), "out": tuple(out.shape),
        "is LayerSync": isinstance(plugin, P.LayerSync),
    }


def test_torch_sync_batchnorm_apply_and_revert_match_lightning():
    pl = _layer_sync_round_trip("lightning")
    assert pl["applied"].count("SyncBatchNorm") == 2 and pl["reverted"].count("_BatchNormXd") == 2
    assert pl["shares weight"] and pl["same root"]
    assert _layer_sync_round_trip("trainer") == pl


def _layer_sync_flags(name: str, tmp_path: Any) -> Dict[str, Any]:
    L = import_framework(name)
    P = _mod(name, ".plugins")

    class Custom(P.LayerSync):
        def apply(self, model):
            return model

        def revert(self, model):
            return model

    def synced(**kw: Any) -> Any:
        t = L.Trainer(**_kw(tmp_path, **kw))
        layer_sync = getattr(t.strategy, "_layer_sync" if name == "lightning" else "layer_sync", "absent")
        return type(t.strategy).__name__, type(layer_sync).__name__

    return {
        "flag ddp": _outcome(lambda: synced(strategy="ddp", devices=2, sync_batchnorm=True)),
        "plugin ddp": _outcome(lambda: synced(strategy="ddp", devices=2, plugins=[P.TorchSyncBatchNorm()])),
        "custom ddp": _outcome(lambda: synced(strategy="ddp_spawn", devices=2, plugins=[Custom()])),
        "none ddp": _outcome(lambda: synced(strategy="ddp", devices=2)),
        "flag one device": _outcome(lambda: synced(sync_batchnorm=True)),
        "flag and custom": _outcome(lambda: synced(strategy="ddp", devices=2, sync_batchnorm=True,
                                                   plugins=[Custom()])),
        "flag and torch plugin": _outcome(lambda: synced(strategy="ddp", devices=2, sync_batchnorm=True,
                                                         plugins=[P.TorchSyncBatchNorm()])),
        "two": _outcome(lambda: synced(strategy="ddp", devices=2, plugins=[Custom(), P.TorchSyncBatchNorm()])),
        "not a bool": _outcome(lambda: synced(sync_batchnorm="yes"))[0],
    }


def test_layer_sync_plugins_and_sync_batchnorm_flag_match_lightning(tmp_path):
    pl = _layer_sync_flags("lightning", tmp_path)
    assert pl["flag ddp"][1] == ("DDPStrategy", "TorchSyncBatchNorm")
    assert pl["custom ddp"][1] == ("DDPStrategy", "Custom")
    assert pl["flag one device"][1] == ("SingleDeviceStrategy", "str")  # no layer sync on one device
    assert pl["flag and custom"][0] == "MisconfigurationException" and pl["two"][0] == "MisconfigurationException"
    ours = _layer_sync_flags("trainer", tmp_path)
    assert {k: v for k, v in ours.items() if k not in ("not a bool",)} == \
        {k: v for k, v in pl.items() if k not in ("not a bool",)}
    assert ours["not a bool"] in ("MisconfigurationException", "TypeError", "ValueError")


@pytest.mark.parametrize("mode", ["syncbn", "plugin"])
def test_sync_batchnorm_converts_under_two_process_ddp_like_lightning(mode, tmp_path):
    """On CPU, torch's DDP refuses SyncBatchNorm layers: both frameworks convert the BatchNorm when fit sets up
    and then fail on every rank with torch's error (on GPUs the same conversion trains)."""
    needle = "SyncBatchNorm layers only work with GPU modules"
    pl = _run("lightning", mode, str(tmp_path / "pl"))
    assert pl.returncode != 0 and needle in pl.stderr, pl.stderr[-3000:]
    ours = _run("trainer", mode, str(tmp_path / "ours"))
    assert ours.returncode != 0 and needle in ours.stderr, ours.stdout[-3000:] + ours.stderr[-3000:]


def _ddp_teardown_reverts(name: str, tmp_path: Any, fn: str) -> Any:
    """The DDP strategy's teardown after a run of ``fn`` with a converted model (no process group needed)."""
    L = import_framework(name)
    trainer = L.Trainer(**_kw(tmp_path, strategy="ddp", devices=2, sync_batchnorm=True))
    model = boring_model_class(L)(n=8)
    model.bn = nn.BatchNorm1d(2)
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trainer.strategy.connect(model)
    model.trainer = trainer
    trainer.state.fn = fn
    trainer.strategy.teardown()
    return type(trainer.strategy.lightning_module.bn).__name__


@pytest.mark.parametrize("fn", ["fit", "validate"])
def test_ddp_teardown_reverts_the_layer_sync_after_fit_only(tmp_path, fn):
    pl = _ddp_teardown_reverts("lightning", tmp_path / "pl", fn)
    assert pl == ("_BatchNormXd" if fn == "fit" else "SyncBatchNorm")
    assert _ddp_teardown_reverts("trainer", tmp_path / "ours", fn) == pl
