"""``DeepSpeedStrategy`` on the real DeepSpeed engine: 2 processes, DeepSpeed's CPU accelerator, gloo.

Each DeepSpeed run is a subprocess of ``deepspeed_script.py`` (the model and data of ``ddp_script.py``); the
reference is one process without DeepSpeed, batch 2b (= 2 ranks x b), the eager engine. ``deepspeed`` is in the test
extra (scripts/setup.sh installs it with ``DS_BUILD_OPS=0`` where there is no CUDA toolkit); these tests skip only where it
is not installed, and ``tests/strategies/test_deepspeed_strategy.py::test_deepspeed_is_installed`` then fails the suite.

Tolerances (relative: max abs diff / max abs weight), 8 steps; the runs differ only by the order of fp32 sums
(DeepSpeed's reduce-scatter/all-reduce of averaged gradients vs one mean over the batch):

* fp32, ZeRO 1/2/3, SGD: ``RTOL = 1e-6`` (measured 1.1e-7; ZeRO 1 and 2 run the same optimizer class).
* fp32, ZeRO 2, AdamW, 2 accumulated micro-batches, clipping by norm 0.5 (both DeepSpeed's: ``gradient_clipping``,
  accumulation boundary): ``RTOL = 1e-6`` (measured 1.5e-7); clipping is active (the unclipped reference is >1e-3 away).
* ZeRO 3 + CPU offload with ``DeepSpeedCPUAdam`` against ``torch.optim.AdamW``: ``RTOL_OFFLOAD = 1e-5`` (measured 1e-6;
  a different Adam kernel).
* bf16-mixed (DeepSpeed's bf16: bf16 weights, fp32 master copy) against the fp32 reference: ``RTOL_BF16 = 2e-2``
  (measured 4.6e-3).

A ZeRO-3 run resumed from its checkpoint folder continues bit-exactly.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
from distributed._runner import HERE, Run, max_diff, run_in_process, run_script

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="deepspeed is not installed (`pip install -e .[test]`; without a CUDA toolkit DS_BUILD_OPS=0)"),
    pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]
SCRIPT = os.path.join(HERE, "deepspeed_script.py")
RTOL = 1e-6
RTOL_OFFLOAD = 1e-5
RTOL_BF16 = 2e-2
_cache: dict = {}


def _run(out: str, *args: str, timeout: float = 240) -> Run:
    return run_script(out, *args, script=SCRIPT, timeout=timeout, extra_env={"DS_ACCELERATOR": "cpu"})


def _reference(out: str, *args: str) -> Run:
    """One process, no DeepSpeed (``strategy='auto'``), in this process."""
    return run_in_process(out, "--devices", "1", "--strategy", "auto", *args, module="deepspeed_script")


def _rel(a: dict, b: dict) -> float:
    return max_diff(a, b) / max(v.abs().max().item() for v in b.values())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("deepspeed")


def _ref_sgd(workdir) -> Run:
    if "ref" not in _cache:
        _cache["ref"] = _reference(str(workdir / "ref"), "--batch", "8")
    return _cache["ref"]


def _stage3_checkpointed(workdir) -> Run:
    """ZeRO-3, AdamW, one epoch (8 steps), ModelCheckpoint writing folders (``epoch=0-step=8.ckpt``, ``last.ckpt``)."""
    if "s3" not in _cache:
        _cache["s3"] = _run(str(workdir / "s3"), "--strategy", "deepspeed_stage_3", "--optimizer", "adamw",
                            "--checkpointing")
    return _cache["s3"]


@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_zero_two_processes_match_one_process_double_batch(workdir, strategy):
    ref = _ref_sgd(workdir)
    run = _run(str(workdir / strategy), "--strategy", strategy, "--batch", "4")
    res = run.result(0)
    assert res["engine"] == "DeepSpeedEngine" and res["world_size"] == 2, res
    assert res["optimizer"] == ("DeepSpeedZeroOptimizer_Stage3" if strategy.endswith("3") else "DeepSpeedZeroOptimizer")
    assert res["global_step"] == 8 == ref.result()["global_step"]
    assert _rel(run.weights(0), ref.weights()) < RTOL
    assert max_diff(run.weights(0), run.weights(1)) == 0.0
    assert res["metrics"]["train_loss"] == pytest.approx(ref.result()["metrics"]["train_loss"], rel=1e-5)
    assert res["metrics"]["val_loss"] == pytest.approx(ref.result()["metrics"]["val_loss"], rel=1e-5)


def test_accumulation_and_clipping_are_deepspeeds_and_match(workdir):
    common = ("--optimizer", "adamw", "--accumulate", "2", "--clip", "0.5")
    ref = _reference(str(workdir / "ref_acc"), "--batch", "4", *common)
    unclipped = _reference(str(workdir / "ref_acc_noclip"), "--batch", "4", "--optimizer", "adamw", "--accumulate", "2")
    run = _run(str(workdir / "acc"), "--strategy", "deepspeed_stage_2", "--batch", "2", *common)
    assert run.result(0)["global_step"] == 8 == ref.result()["global_step"]  # 16 micro-batches, 8 steps
    assert _rel(run.weights(0), ref.weights()) < RTOL
    assert _rel(unclipped.weights(), ref.weights()) > 1e-3  # the clipping mattered


def test_stage3_checkpoint_folder_resumes_exactly(workdir):
    first = _stage3_checkpointed(workdir)
    folder = os.path.join(first.out, "ckpts", "epoch=0-step=8.ckpt")
    assert os.path.isdir(folder)
    files = set(os.listdir(os.path.join(folder, "checkpoint")))
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    assert os.path.isdir(os.path.join(first.out, "ckpts", "last.ckpt"))  # save_last: a folder (or a link to one)
    common = ("--strategy", "deepspeed_stage_3", "--optimizer", "adamw", "--max-epochs", "2", "--max-steps", "12")
    full = _run(str(workdir / "s3_full"), *common)
    resumed = _run(str(workdir / "s3_resumed"), *common, "--ckpt", os.path.join(first.out, "ckpts", "last.ckpt"))
    assert resumed.result(0)["global_step"] == 12 and resumed.result(0)["epoch"] == 2
    assert max_diff(resumed.weights(0), full.weights(0)) == 0.0  # weights and Adam state came back
    assert max_diff(resumed.weights(1), full.weights(1)) == 0.0


def test_validate_from_stage3_folder_without_fit(workdir):
    """validate(ckpt_path=folder) on a fresh module: DeepSpeed's inference engine cannot load a ZeRO-3 folder, so the
    strategy loads the consolidated fp32 weights before ``deepspeed.initialize`` partitions them."""
    first = _stage3_checkpointed(workdir)
    run = _run(str(workdir / "s3_validate"), "--strategy", "deepspeed_stage_3", "--validate-only",
               "--ckpt", os.path.join(first.out, "ckpts", "last.ckpt"))
    (metrics,) = run.result(0)["val"]
    assert metrics["val_loss"] == pytest.approx(first.result(0)["metrics"]["val_loss"], rel=1e-6)
    assert max_diff(run.weights(0), first.weights(0)) == 0.0


def test_manual_optimization_matches_automatic_and_validate_reuses_the_engine(workdir):
    ref = _ref_sgd(workdir)
    run = _run(str(workdir / "manual"), "--strategy", "deepspeed_stage_2", "--manual", "--validate")
    res = run.result(0)
    assert res["global_step"] == 8
    assert _rel(run.weights(0), ref.weights()) < RTOL
    (metrics,) = res["val"]  # trainer.validate after fit: the fit's engine runs it
    assert metrics["val_loss"] == pytest.approx(ref.result()["metrics"]["val_loss"], rel=1e-5)


def test_converted_fp32_checkpoint_loads_into_single_device_trainer(workdir, tmp_path):
    import trainer as L
    from trainer.checkpoint import CheckpointError
    from trainer.strategies import convert_zero_checkpoint_to_fp32_state_dict

    sys.path.insert(0, HERE)
    try:
        from deepspeed_script import DSNet, dataset
    finally:
        sys.path.remove(HERE)
    run = _stage3_checkpointed(workdir)
    out = str(tmp_path / "single.ckpt")
    ckpt = convert_zero_checkpoint_to_fp32_state_dict(os.path.join(run.out, "ckpts", "last.ckpt"), out)
    assert os.path.isfile(out)
    assert ckpt["global_step"] == 8 and "loops" in ckpt and "optimizer_states" not in ckpt
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())
    assert max_diff(ckpt["state_dict"], run.weights(0)) == 0.0

    model = DSNet.load_from_checkpoint(out)
    assert max_diff(model.state_dict(), run.weights(0)) == 0.0
    loader = torch.utils.data.DataLoader(dataset(), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    (metrics,) = trainer.validate(DSNet(), loader, ckpt_path=out, verbose=False)
    assert metrics["val_loss"] == pytest.approx(run.result(0)["metrics"]["val_loss"], rel=1e-5)
    # no optimizer state in the converted file (as Lightning's): resuming a fit from it is refused clearly
    fit_trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, max_epochs=2,
                            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    with pytest.raises(CheckpointError, match="only weights"):
        fit_trainer.fit(DSNet(), loader, ckpt_path=out)


def test_compiled_engine_falls_back_to_eager(workdir):
    run = _run(str(workdir / "compiled"), "--strategy", "deepspeed_stage_2", "--compile", "1")
    res = run.result(0)
    assert res["compile_mode"] == "eager", res
    train_warnings = [w for w in res["compile_warnings"] if "running the eager engine instead" in w]
    assert train_warnings == [
        "trainer.compile: running the eager engine instead: strategy DeepSpeedStrategy is not supported by the"
        " compiled engine"
    ], res["compile_warnings"]
    assert _rel(run.weights(0), _ref_sgd(workdir).weights()) < RTOL


def test_bf16_mixed_through_deepspeed_config(workdir):
    run = _run(str(workdir / "bf16"), "--strategy", "deepspeed_stage_2", "--precision", "bf16-mixed")
    res = run.result(0)
    assert res["param_dtype"] == "torch.bfloat16"  # DeepSpeed's bf16: the engine cast the module
    assert res["global_step"] == 8
    assert _rel(run.weights(0), _ref_sgd(workdir).weights()) < RTOL_BF16


def test_stage3_cpu_offload_with_deepspeed_cpu_adam(workdir):
    """ZeRO-Offload needs DeepSpeed's CPU Adam (DeepSpeed refuses torch optimizers there unless the config sets
    ``zero_force_ds_cpu_optimizer: false``). Its C++ op is JIT-built on first use (~50 s on 2 cores, then cached)."""
    from deepspeed.ops.op_builder import CPUAdamBuilder

    if not CPUAdamBuilder().is_compatible():
        pytest.skip("DeepSpeed's cpu_adam op cannot be built here")
    ref = _reference(str(workdir / "ref_adamw"), "--batch", "8", "--optimizer", "adamw")
    run = _run(str(workdir / "offload"), "--strategy", "deepspeed_stage_3_offload", "--optimizer", "cpuadam",
               timeout=400)
    assert run.result(0)["optimizer"] == "DeepSpeedZeroOptimizer_Stage3"
    assert _rel(run.weights(0), ref.weights()) < RTOL_OFFLOAD


def test_fp16_through_deepspeed_loss_scaler(workdir):
    """``precision="16-true"``: DeepSpeed's fp16 (fp16 weights, fp32 master copy, dynamic loss scale from 2**16): the
    first steps overflow and are skipped while the scale comes down (as on a GPU), then training proceeds.

    DeepSpeed's CPU accelerator offers fp16 only where oneDNN has fp16 kernels (AVX512-FP16/AMX-FP16 CPUs); elsewhere
    ``deepspeed.initialize`` refuses with "Type fp16 is not supported on your device."."""
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    if not CPU_Accelerator().is_fp16_supported():
        pytest.skip("DeepSpeed's CPU accelerator has no fp16 on this CPU (oneDNN without fp16: no AVX512-FP16/AMX-FP16)")
    run = _run(str(workdir / "fp16"), "--strategy", "deepspeed_stage_2", "--precision", "16-true", "--max-epochs", "3")
    res = run.result(0)
    assert res["param_dtype"] == "torch.float16"
    assert res["global_step"] == 24 and 1 <= res["skipped_steps"] <= 6, res  # measured 3
    assert res["metrics"]["train_loss"] < 0.3, res  # fp32 reference: 0.66 after epoch 1
