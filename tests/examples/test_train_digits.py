"""The main job, examples/train_digits.py, end to end: a real (short) training run on the bundled
digits data reaches >= 0.95 validation accuracy and leaves a loadable checkpoint and a CSV log.

Runs the script in a subprocess: the script picks its framework (`import trainer as L` or
`import pytorch_lightning as L`) at import time, as a user's script does, so one process per run.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_digits.py"
EPOCHS = 8  # reaches 0.96-0.98 on seeds 0-4 under Lightning (0.95 at 4 epochs); ~3 s of training


@pytest.mark.parametrize("framework", ["trainer", "lightning"])
def test_train_digits(framework: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--framework", framework, "--epochs", str(EPOCHS),
         "--out", str(tmp_path), "--no-progress-bar"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert "val accuracy" in proc.stdout and "samples/s" in proc.stdout

    [summary_path] = tmp_path.glob("logs/version_*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["val_acc"] >= 0.95, summary
    assert summary["train_samples_per_s"] > 0, summary
    # 1,437 training samples per epoch (80% of 1,797, stratified)
    assert summary["train_samples"] == EPOCHS * 1437, summary

    for key in ("best_checkpoint", "last_checkpoint"):
        ckpt_path = Path(summary[key])
        assert ckpt_path.is_file(), (key, ckpt_path)
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        assert "state_dict" in ckpt
        assert any(k.startswith("net.") for k in ckpt["state_dict"]), list(ckpt["state_dict"])[:5]
    assert Path(summary["last_checkpoint"]).name == "last.ckpt"

    metrics_csv = Path(summary["metrics_csv"])
    assert metrics_csv.is_file()
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and "val_acc" in rows[0], rows[:1]
    val_accs = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
    assert len(val_accs) == EPOCHS, val_accs  # one validation per epoch
    assert max(val_accs) >= 0.95
