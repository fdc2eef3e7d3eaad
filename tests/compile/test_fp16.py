"""fp16 ``16-mixed`` in the graph: loss scaling, unscale + inf check fused into the update, skipped
steps on the device, GradScaler state updated in the graph.

Lightning (and this Trainer) turn ``16-mixed`` into ``bf16-mixed`` on CPU, so the CPU test installs
the fp16 precision plugin by hand (CPU autocast to float16 works in torch >= 2.3) to check the
graph logic against the eager engine; the CUDA test runs the real configuration."""
from __future__ import annotations

import pytest
import torch

import trainer as L
from trainer.compile import CompileConfig
from trainer.precision import MixedPrecision

from .models import MLP, max_rel_diff


def _fp16_fit(compile, opt, accelerator="cpu", **kw):
    model = MLP(opt=opt)
    trainer = L.Trainer(max_epochs=3, compile=compile, accelerator=accelerator, precision="bf16-mixed"
                        if accelerator == "cpu" else "16-mixed", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)
    # 2**20 overflows fp16 in the backward: the first steps are skipped and the scale backs off;
    # growth_interval=3 then grows it again (more skips): every branch of GradScaler runs
    scaler = torch.amp.GradScaler(accelerator, init_scale=2.0 ** 20, growth_interval=3)
    plugin = MixedPrecision("16-mixed", accelerator, scaler=scaler)
    plugin.trainer = trainer
    trainer.strategy.precision_plugin = plugin
    assert trainer.precision == "16-mixed"
    trainer.fit(model)
    return trainer, scaler


def test_cpu_autocast_float16_works():
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.nn.Linear(4, 2)(torch.randn(3, 4)).dtype == torch.float16


@pytest.mark.parametrize("opt, kw", [("adamw", dict(gradient_clip_val=0.5)),
                                     ("sgd", dict(accumulate_grad_batches=2, gradient_clip_val=0.05,
                                                  gradient_clip_algorithm="value"))], ids=["adamw_clipnorm",
                                                                                          "sgd_accum2_clipvalue"])
def test_fp16_graph_matches_eager_gradscaler(opt, kw):
    eager, eager_scaler = _fp16_fit(False, opt, **kw)
    compiled, scaler = _fp16_fit(CompileConfig(mode="strict"), opt, **kw)
    report = compiled.compile_report
    assert report.mode == "full", report
    sd_e, sd_c = eager_scaler.state_dict(), scaler.state_dict()
    assert sd_c == sd_e, (sd_c, sd_e)
    assert sd_e["scale"] < 2.0 ** 20  # steps were skipped and the scale backed off
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-3  # fp16 autocast rounding
    se, sc = eager.optimizers[0].state_dict(), compiled.optimizers[0].state_dict()
    assert se["state"].keys() == sc["state"].keys()
    for i in se["state"]:
        if "step" in se["state"][i]:  # skipped steps are not counted
            assert sc["state"][i]["step"].item() == se["state"][i]["step"].item()
    # the scaler's state goes into checkpoints as Lightning writes it
    assert compiled.precision_plugin.state_dict() == sd_e


def test_fp16_graph_has_fused_unscale_and_skip(tmp_path):
    debug = str(tmp_path)
    _fp16_fit(CompileConfig(mode="strict", debug_dir=debug), "adamw", gradient_clip_val=0.5)
    import glob
    import os

    after = open(sorted(glob.glob(os.path.join(debug, "step0.*.amp.after.py")))[0]).read()
    assert "found_inf" in after and "_amp_update_scale_" in after
    fused = open(sorted(glob.glob(os.path.join(debug, "step0.*.optimizer_fusion.after.py")))[0]).read()
    assert "count_step" in fused  # a skipped step is not counted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 16-mixed runs on CUDA only (CPU uses bf16)")
def test_fp16_cuda_matches_eager():
    eager, eager_scaler = _fp16_fit(False, "adamw", accelerator="cuda", gradient_clip_val=0.5)
    compiled, scaler = _fp16_fit(True, "adamw", accelerator="cuda", gradient_clip_val=0.5)
    assert compiled.compile_report.mode == "full"
    assert scaler.state_dict() == eager_scaler.state_dict()
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-3
