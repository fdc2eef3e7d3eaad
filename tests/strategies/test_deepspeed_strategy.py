"""``DeepSpeedStrategy`` construction and config (one process, no launch); training runs are in
``tests/distributed/test_deepspeed.py``. The missing-package error is tested with ``deepspeed`` hidden, so it runs
whether or not it is installed; the rest needs it. ``deepspeed`` is in the test extra, so a test environment without it
fails ``test_deepspeed_is_installed`` instead of quietly skipping (TRAINER_ALLOW_MISSING_DEEPSPEED=1 opts out)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
import trainer.strategies.deepspeed as ds_mod
from trainer.exceptions import MisconfigurationException
from trainer.strategies import DeepSpeedStrategy

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (`pip install -e .[test]`; without a CUDA toolkit DS_BUILD_OPS=0)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the test extra installs deepspeed on Linux only")
def test_deepspeed_is_installed():
    """The test extra installs deepspeed (scripts/setup.sh); without it every DeepSpeed training test would only skip.

    TRAINER_ALLOW_MISSING_DEEPSPEED=1 is for a deliberate install without it, never CI."""
    if os.environ.get("TRAINER_ALLOW_MISSING_DEEPSPEED") == "1":
        pytest.skip("TRAINER_ALLOW_MISSING_DEEPSPEED=1: an install without deepspeed was asked for")
    try:
        import deepspeed  # noqa: F401
    except Exception as err:  # an ImportError, or a broken install failing at import
        pytest.fail(f"deepspeed does not import ({type(err).__name__}: {err}): `pip install --no-build-isolation -e "
                    ".[test]` installs it (scripts/setup.sh does, with DS_BUILD_OPS=0 where there is no CUDA toolkit)")


def _t(**kwargs):
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(**kwargs)


@pytest.mark.parametrize("make", [
    lambda: _t(strategy="deepspeed"),
    lambda: _t(strategy="deepspeed_stage_2"),
    lambda: _t(strategy="deepspeed_stage_3_offload", devices=2),
    lambda: DeepSpeedStrategy(stage=3),
])
def test_without_deepspeed_a_clear_error_says_how_to_install(monkeypatch, make):
    monkeypatch.setattr(ds_mod, "deepspeed_available", lambda: False)
    with pytest.raises(MisconfigurationException, match="pip install deepspeed"):
        make()


@needs_deepspeed
@pytest.mark.parametrize("name, stage, optimizer_device, param_device", [
    ("deepspeed", 2, None, None),
    ("deepspeed_stage_1", 1, None, None),
    ("deepspeed_stage_2", 2, None, None),
    ("deepspeed_stage_2_offload", 2, "cpu", None),
    ("deepspeed_stage_3", 3, None, None),
    ("deepspeed_stage_3_offload", 3, "cpu", "cpu"),
])
def test_registered_names_build_the_zero_config(name, stage, optimizer_device, param_device):
    t = _t(strategy=name, devices=2)
    s = t.strategy
    assert isinstance(s, DeepSpeedStrategy) and s.handles_gradient_accumulation
    assert (t.world_size, type(s.launcher).__name__) == (2, "SubprocessScriptLauncher")
    zero = s.config["zero_optimization"]
    assert zero["stage"] == stage and s.zero_stage_3 == (stage == 3)
    assert zero.get("offload_optimizer", {}).get("device") == optimizer_device
    assert zero.get("offload_param", {}).get("device") == param_device
    assert s.config["zero_allow_untested_optimizer"] is True


@needs_deepspeed
def test_nvme_offload_without_async_io_is_a_clear_error(monkeypatch):
    from deepspeed.ops.op_builder import AsyncIOBuilder

    monkeypatch.setattr(AsyncIOBuilder, "is_compatible", lambda self, verbose=False: False)
    with pytest.raises(MisconfigurationException, match="libaio"):
        _t(strategy="deepspeed_stage_3_offload_nvme")


@needs_deepspeed
@pytest.mark.parametrize("kwargs, match", [
    (dict(stage=4), "stages are 0-3"),
    (dict(stage=2, offload_parameters=True), "needs ZeRO stage 3"),
    (dict(load_full_weights=True), "load_full_weights"),
    (dict(stage=3, remote_device="cpu"), "zero.Init"),
    (dict(offload_optimizer=True, offload_optimizer_device="disk"), "offload_optimizer_device"),
    (dict(config="/no/such/ds_config.json"), "does not exist"),
    (dict(config={"gradient_accumulation_steps": 2}), "accumulate_grad_batches"),
    (dict(start_method="thread"), "start_method"),
])
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        DeepSpeedStrategy(**kwargs)


@needs_deepspeed
def test_double_precision_is_refused_at_trainer_construction():
    with pytest.raises(ValueError, match=r"`Trainer\(strategy=.deepspeed., precision=.64-true.\)` is not supported"):
        _t(strategy="deepspeed_stage_2", precision="64-true")


@needs_deepspeed
def test_user_config_dict_path_and_env_var(tmp_path, monkeypatch):
    cfg = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 3}
    assert DeepSpeedStrategy(config=cfg).config == cfg
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg))
    assert DeepSpeedStrategy(config=str(path)).zero_stage_3
    monkeypatch.setenv(ds_mod.DEEPSPEED_ENV_VAR, str(path))
    assert DeepSpeedStrategy().config == cfg


@needs_deepspeed
@pytest.mark.parametrize("precision, section", [("32-true", None), ("bf16-mixed", "bf16"), ("bf16-true", "bf16"),
                                                ("16-true", "fp16")])
def test_fit_config_takes_batch_size_accumulation_clipping_and_precision(precision, section):
    t = _t(strategy="deepspeed_stage_2", precision=precision, accumulate_grad_batches=4, gradient_clip_val=0.25)
    s = t.strategy
    assert s.precision_plugin.precision == precision and t.precision_plugin is s.precision_plugin
    loader = DataLoader(TensorDataset(torch.zeros(10, 2)), batch_size=5)
    fake = SimpleNamespace(accumulate_grad_batches=4, gradient_clip_val=0.25, datamodule=None,
                           _data_sources={"train_dataloader": loader})
    config = s._format_config(fake)
    assert config["gradient_accumulation_steps"] == 4 and config["gradient_clipping"] == 0.25
    assert config["train_micro_batch_size_per_gpu"] == 5
    for key in ("fp16", "bf16"):
        assert (key in config) == (key == section)
    if section:
        assert config[section]["enabled"] is True
    data = s.precision_plugin.convert_input({"x": torch.ones(2), "i": torch.ones(2, dtype=torch.long)})
    assert data["i"].dtype == torch.long
    assert data["x"].dtype == {None: torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[section]
    # a given logging_batch_size_per_gpu wins over the loader's
    s2 = DeepSpeedStrategy(logging_batch_size_per_gpu=7)
    s2.precision_plugin = L.Trainer(accelerator="cpu", logger=False).precision_plugin
    assert s2._format_config(fake)["train_micro_batch_size_per_gpu"] == 7


@needs_deepspeed
def test_resuming_from_a_file_says_a_folder_is_needed(tmp_path):
    f = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, f)
    with pytest.raises(MisconfigurationException, match="not a folder"):
        DeepSpeedStrategy().load_checkpoint(str(f))
