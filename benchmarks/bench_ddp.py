"""DDP scaling on CPU: samples/s with 2 processes vs 2 x one process, `trainer` vs Lightning.

Workload: the compute-bound MLP 784-1024-1024-10 (GELU), batch 128 *per process*, SGD, random data
made once. Every process uses one intra-op thread (``torch.set_num_threads(1)``) so that 1 process uses
one core and 2 processes use two; on a 2-vCPU machine the 2 processes compete for both cores with
everything else running there.

    python benchmarks/bench_ddp.py                 # both frameworks, 1 and 2 processes
    python benchmarks/bench_ddp.py --steps 40 --warmup 10 --repeats 2 --json /tmp/ddp.json

FSDP row (``--fsdp``): 2 processes, ``FSDPStrategy(auto_wrap_policy={Block})`` on 4 pre-LayerNorm residual MLP
blocks (width ``--width``, 4x hidden, GELU) between an input and a head layer, AdamW, clipping at 1.0, batch
``--batch`` per process: the eager engine vs the compiled step (each block's forward+backward compiled between
FSDP2's hooks, one compiled update over the local shards), ms per optimizer step, alternating, best of
``--repeats``.

    python benchmarks/bench_ddp.py --fsdp --width 256 --batch 64 --steps 40 --repeats 3

Scaling efficiency = samples/s(2 processes) / (2 x samples/s(1 process)). Each configuration is a fresh
subprocess (the 2-process runs are launched by the framework itself: `Trainer(devices=2, strategy="ddp")`);
rank 0 times ``--steps`` optimizer steps after ``--warmup`` steps, from batch start to batch start.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _worker(args: argparse.Namespace) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    if args.framework == "lightning":
        import pytorch_lightning as L
    else:
        sys.path.insert(0, ROOT)
        import trainer as L

    total = args.warmup + args.steps + 1
    g = torch.Generator().manual_seed(0)
    n = total * args.batch * args.devices
    data = TensorDataset(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(784, 1024), nn.GELU(), nn.Linear(1024, 1024), nn.GELU(), nn.Linear(1024, 10))
            self.times = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def on_train_batch_start(self, batch, batch_idx):
            self.times.append(time.perf_counter())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = MLP()
    extra = {} if args.framework == "lightning" else {"compile": args.framework == "trainer"}
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto", max_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **extra,
    )
    trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=False))
    if trainer.global_rank == 0:
        t = model.times
        seconds = t[args.warmup + args.steps] - t[args.warmup]
        samples = args.steps * args.batch * args.devices
        with open(args.result, "w") as f:
            json.dump({"samples_per_s": samples / seconds, "seconds": seconds}, f)


def _fsdp_worker(args: argparse.Namespace) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    sys.path.insert(0, ROOT)
    import trainer as L
    from trainer.strategies import FSDPStrategy

    d = args.width

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)

        def forward(self, x):
            return x + self.fc2(nn.functional.gelu(self.fc1(self.ln(x))))

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.inp = nn.Linear(64, d)
            self.b0, self.b1, self.b2, self.b3 = Block(), Block(), Block(), Block()
            self.head = nn.Linear(d, 10)
            self.times = []

        def forward(self, x):
            return self.head(self.b3(self.b2(self.b1(self.b0(self.inp(x))))))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def on_train_batch_start(self, batch, batch_idx):
            self.times.append(time.perf_counter())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    n = (args.warmup + args.steps + 1) * args.batch * 2
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g))
    model = Net()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=FSDPStrategy(auto_wrap_policy={Block}), max_epochs=1,
        gradient_clip_val=1.0, compile=args.framework == "compiled", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=args.batch, shuffle=False))
    if trainer.global_rank == 0:
        t = model.times
        seconds = t[args.warmup + args.steps] - t[args.warmup]
        report = trainer.compile_report
        with open(args.result, "w") as f:
            json.dump({"ms_per_step": 1000 * seconds / args.steps,
                       "samples_per_s": args.steps * args.batch * 2 / seconds,
                       "compile": str(report) if report is not None else "off"}, f)


def _fsdp(args: argparse.Namespace) -> None:
    import torch

    best: dict = {}
    for _ in range(args.repeats):  # alternating: the machine is shared
        for engine in ("eager", "compiled"):
            with tempfile.TemporaryDirectory() as tmp:
                result = os.path.join(tmp, "r.json")
                env = {k: v for k, v in os.environ.items()
                       if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
                env["OMP_NUM_THREADS"] = "1"
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--fsdp", "--framework", engine,
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
                       "--width", str(args.width), "--result", result]
                proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    raise RuntimeError(f"fsdp {engine} failed:\n{proc.stderr[-3000:]}")
                with open(result) as f:
                    r = json.load(f)
            if engine not in best or r["ms_per_step"] < best[engine]["ms_per_step"]:
                best[engine] = r
    for engine, r in best.items():
        print(f"fsdp {engine:9s} {r['ms_per_step']:7.1f} ms/step | {r['samples_per_s']:8.1f} samples/s | {r['compile']}")
    speedup = best["eager"]["ms_per_step"] / best["compiled"]["ms_per_step"]
    print(f"fsdp compiled speedup {speedup:.2f}x")
    meta = {"torch": torch.__version__, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "width": args.width, "steps": args.steps, "warmup": args.warmup, "batch_per_process": args.batch}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fsdp": best, "speedup": speedup, "meta": meta}, f, indent=1)


def _run(framework: str, devices: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "r.json")
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--framework", framework, "--devices",
               str(devices), "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
               "--result", result]
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{framework} devices={devices} failed:\n{proc.stderr[-3000:]}")
        with open(result) as f:
            return json.load(f)["samples_per_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--framework", default="trainer")
    # "trainer": the compiled engine (the default; under DDP the all-reduce is in the step graph);
    # "trainer-eager": Trainer(compile=False); "lightning": pytorch_lightning
    p.add_argument("--frameworks", nargs="+", default=["trainer", "trainer-eager", "lightning"])
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--result", default="")
    p.add_argument("--json", default="")
    p.add_argument("--fsdp", action="store_true", help="the FSDP row: eager vs compiled step, 2 processes")
    p.add_argument("--width", type=int, default=256)
    args = p.parse_args()
    if args.worker:
        return _fsdp_worker(args) if args.fsdp else _worker(args)
    if args.fsdp:
        return _fsdp(args)
    import torch

    rows = {}
    for framework in args.frameworks:
        best = {}
        for devices in (1, 2):  # best of --repeats (the machine is shared)
            best[devices] = max(_run(framework, devices, args) for _ in range(args.repeats))
        eff = best[2] / (2 * best[1])
        rows[framework] = {"1 process": best[1], "2 processes": best[2], "efficiency": eff}
        print(f"{framework:10s} 1 proc {best[1]:8.1f} samples/s | 2 procs {best[2]:8.1f} samples/s |"
              f" scaling efficiency {eff:.2f}", flush=True)
    meta = {"torch": torch.__version__, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "steps": args.steps, "warmup": args.warmup, "batch_per_process": args.batch}
    try:
        import pytorch_lightning

        meta["pytorch_lightning"] = pytorch_lightning.__version__
    except ImportError:
        pass
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": rows, "meta": meta}, f, indent=1)


if __name__ == "__main__":
    main()
