"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed from it ends with the
same weights, bit for bit, as a run that was never interrupted — mid-epoch and mid accumulation
window included (Lightning restarts the data from sample 0 there; this Trainer does not)."""
import os
import signal
import subprocess
import sys

import pytest
import torch

JOB = os.path.join(os.path.dirname(__file__), "helpers", "resume_job.py")


def _run(out, scenario, *extra, expect_kill=False):
    os.makedirs(out, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, JOB, str(out), scenario, *extra], capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if expect_kill:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_same_final(a, b):
    wa = torch.load(os.path.join(a, "final.pt"))
    wb = torch.load(os.path.join(b, "final.pt"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs after resume"
    oa = torch.load(os.path.join(a, "optim.pt"))
    ob = torch.load(os.path.join(b, "optim.pt"))
    for pid in oa["state"]:
        for name, t in oa["state"][pid].items():
            assert torch.equal(t, ob["state"][pid][name]), f"optimizer state {pid}.{name} differs"
    assert oa["param_groups"][0]["lr"] == ob["param_groups"][0]["lr"]


@pytest.mark.parametrize(
    "scenario, kill_at, ckpt",
    [
        # ModelCheckpoint(every_n_train_steps=4, save_last=True): last.ckpt written at global step 4
        # (epoch 0, batch 8), killed 5 batches later in epoch 1; resumed with ckpt_path="last".
        ("last_step", 16, "last"),
        # a checkpoint written in on_train_batch_end after the first micro-batch of a window
        ("mid_window", 18, "manual.ckpt"),
        # checkpoints written by validation in the middle of an epoch (val_check_interval=0.5)
        ("val_mid_epoch", 20, "last"),
        # end-of-epoch checkpoints with ReduceLROnPlateau on val_loss
        ("plateau", 25, "last"),
    ],
)
def test_sigkill_then_resume_is_bit_exact(tmp_path, scenario, kill_at, ckpt):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run(ref, scenario)
    _run(killed, scenario, "--kill-at-batch", str(kill_at), expect_kill=True)
    assert not (killed / "final.pt").exists()
    if ckpt == "last":
        assert (killed / "last.ckpt").exists()
        resume_arg = "last"
    else:
        resume_arg = str(killed / ckpt)
    # ckpt_path="last" looks the file up through ModelCheckpoint(dirpath=...) of the new run
    _run(killed, scenario, "--resume", resume_arg)
    start_step, start_epoch = (int(v) for v in (killed / "start.txt").read_text().split())
    assert start_step > 0, "the second run did not resume from the checkpoint"
    _assert_same_final(ref, killed)
