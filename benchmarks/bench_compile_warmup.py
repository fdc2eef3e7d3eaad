"""Compiled-engine warm-up: time to the first compiled step, cold and from the on-disk cache.

    python benchmarks/bench_compile_warmup.py [--rounds 3]

Workload: MLP 32-64-64-10, batch 32, AdamW, ``Trainer(compile=True, max_steps=4)``. Each
measurement is a fresh Python process (what a user's script pays); the cases are interleaved
round-robin so load from other jobs on a shared machine hits all of them alike; medians reported.

- ``first ever``: fresh ``TORCHINDUCTOR_CACHE_DIR`` and fresh ``TRAINER_CACHE_DIR`` (also no
  remembered CPU vector-ISA probe: a new machine or a new torch);
- ``cold``: fresh ``TORCHINDUCTOR_CACHE_DIR`` (a new model/graph on a machine that compiled before);
- ``warm``: the inductor cache of the previous ``cold`` run (the same script run again);
- ``eager``: ``compile=False``, for the fit-time difference.

``compile s`` is ``trainer.compile_report.compile_seconds`` (capture + passes + inductor, including
its imports); ``fit s`` is the whole ``Trainer.fit`` wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

CHILD = r'''
import json, sys, time
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
import trainer as L

class M(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(128, 32, generator=g), torch.randint(0, 10, (128,), generator=g)),
                          batch_size=32)

compile = sys.argv[1] == "1"
t0 = time.perf_counter()
tr = L.Trainer(max_steps=4, compile=compile, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0)
tr.fit(M())
r = tr.compile_report
print("RESULT " + json.dumps({"fit_s": time.perf_counter() - t0, "compile_s": r.compile_seconds if r else 0.0,
                              "mode": r.mode if r else None}))
'''


def run(compile: bool, inductor_dir: str, trainer_dir: str) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=inductor_dir, TRAINER_CACHE_DIR=trainer_dir)
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if compile else "0"], env=env, capture_output=True,
                         text=True, check=True).stdout
    res = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    if compile:
        assert res["mode"] == "full", res
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="warmup-")
    shared_trainer = os.path.join(root, "trainer-shared")
    results: dict = {k: [] for k in ("first ever", "cold", "warm", "eager")}
    try:
        run(True, os.path.join(root, "prime"), shared_trainer)  # the machine has compiled before
        for i in range(args.rounds):
            results["first ever"].append(run(True, os.path.join(root, f"fe{i}"), os.path.join(root, f"fet{i}")))
            cold_dir = os.path.join(root, f"cold{i}")
            results["cold"].append(run(True, cold_dir, shared_trainer))
            results["warm"].append(run(True, cold_dir, shared_trainer))
            results["eager"].append(run(False, os.path.join(root, "eager"), shared_trainer))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    eager_fit = statistics.median(r["fit_s"] for r in results["eager"])
    print("| case | compile s (median) | fit s (median) | fit − eager fit s | runs (compile s) |")
    print("|---|---:|---:|---:|---|")
    for case, rs in results.items():
        comp = statistics.median(r["compile_s"] for r in rs)
        fit = statistics.median(r["fit_s"] for r in rs)
        runs = ", ".join(f"{r['compile_s']:.1f}" for r in rs)
        print(f"| {case} | {comp:.2f} | {fit:.2f} | {fit - eager_fit:+.2f} | {runs} |")


if __name__ == "__main__":
    main()
