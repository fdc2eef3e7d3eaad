"""Side by side, in one process: a hand-written training loop, Lightning's Trainer and trainer's
Trainer, on the same workloads (benchmarks/workloads.py), seed, batches and optimizer.

    python benchmarks/compare.py                          # all workloads, all available runners
    python benchmarks/compare.py --workloads tiny_mlp --repeats 7 --json out.json
    python benchmarks/compare.py --quick                  # smoke run: 1 short fit per runner

Method: each runner trains a freshly seeded model with AdamW(lr=1e-3) for ``warmup + epochs``
epochs over the same list of ready batches; an epoch's time is taken from the start to the end of
the training epoch (callbacks ``on_train_epoch_start``/``on_train_epoch_end`` for the Trainers,
the same two points in the hand loop), and the warm-up epochs are dropped. This is repeated
``--repeats`` times with the runner order rotated each repeat (so that a noisy neighbour or a
warm cache does not favour one runner), and the table reports the median samples/s of all measured
epochs. Framework start-up (``fit`` time outside the epochs) is reported separately.

The Trainers run as a benchmark should: no progress bar, model summary, logger, checkpointing,
sanity check or validation. The LightningModule's training_step is the hand loop's body (forward
and loss) and returns the loss; it does not call ``self.log``.

Adding a runner is one entry in ``RUNNERS``.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import inspect
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import WORKLOADS, Batch, Workload, make_loader  # noqa: E402

LR = 1e-3


@dataclass(frozen=True)
class RunConfig:
    epochs: int  # warm-up + measured epochs in one fit
    seed: int
    device: str


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def final_loss(model: torch.nn.Module, workload: Workload, batches: List[Batch], device: str) -> float:
    """Loss of the trained model on the last batch, computed after the fit (outside the timed
    epochs, so that no runner pays for keeping a loss around). Equal across runners when their
    updates are bit-identical, a cheap check that every runner trained the same thing."""
    x, y = batches[-1]
    return float(workload.loss_fn(model(x.to(device)), y.to(device)))


# --------------------------------------------------------------------------- runner: hand loop

def run_hand_loop(workload: Workload, batches: List[Batch], cfg: RunConfig) -> Dict[str, Any]:
    """nanoGPT's loop body: zero_grad, forward, loss, backward, step. No .item() per step."""
    t_fit = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = workload.make_model().to(cfg.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    loader = make_loader(batches)
    epoch_seconds = []
    for _ in range(cfg.epochs):
        _sync(cfg.device)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(cfg.device), y.to(cfg.device)
            optimizer.zero_grad(set_to_none=True)
            loss = workload.loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        _sync(cfg.device)
        epoch_seconds.append(time.perf_counter() - t0)
    fit_seconds = time.perf_counter() - t_fit
    return {"epoch_seconds": epoch_seconds, "fit_seconds": fit_seconds,
            "final_loss": final_loss(model, workload, batches, cfg.device)}


# --------------------------------------------------------------------------- runners: Trainers

@lru_cache(maxsize=None)
def _framework_classes(module_name: str) -> tuple:
    """The LightningModule and timing Callback, subclassing the given framework's classes."""
    L = importlib.import_module(module_name)

    class BenchModule(L.LightningModule):
        def __init__(self, net: torch.nn.Module, loss_fn: Callable) -> None:
            super().__init__()
            self.net = net
            self.loss_fn = loss_fn

        def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.loss_fn(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=LR)

    class EpochTimer(L.Callback):
        def __init__(self, device: str) -> None:
            self.device = device
            self.epoch_seconds: List[float] = []
            self._t0 = 0.0

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            _sync(self.device)
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            _sync(self.device)
            self.epoch_seconds.append(time.perf_counter() - self._t0)

    return L, BenchModule, EpochTimer


def _accepts_compile(module_name: str) -> bool:
    L = importlib.import_module(module_name)
    return "compile" in inspect.signature(L.Trainer.__init__).parameters


def framework_unavailable(module_name: str, compile: Optional[bool] = None) -> Optional[str]:
    """Why this Trainer cannot run here (a reason to print), or None."""
    try:
        L = importlib.import_module(module_name)
        for name in ("Trainer", "LightningModule", "Callback"):
            getattr(L, name)
    except Exception as e:  # noqa: BLE001 - any import-time failure means "not available"
        return f"{module_name} not importable: {e!r}"
    if compile and not _accepts_compile(module_name):
        return f"{module_name}.Trainer has no `compile` argument yet"
    return None


def framework_runner(module_name: str, compile: Optional[Union[bool, str]] = None,
                     **trainer_kwargs: Any) -> Callable[[Workload, List[Batch], RunConfig], Dict[str, Any]]:
    """A runner that trains with ``module_name``'s Trainer. ``compile`` is passed to the Trainer
    only where it takes that argument (a Trainer without it has only the eager engine)."""

    def run(workload: Workload, batches: List[Batch], cfg: RunConfig) -> Dict[str, Any]:
        t_fit = time.perf_counter()
        L, BenchModule, EpochTimer = _framework_classes(module_name)
        torch.manual_seed(cfg.seed)
        model = BenchModule(workload.make_model(), workload.loss_fn)
        timer = EpochTimer(cfg.device)
        extra = dict(trainer_kwargs)
        if compile is not None and _accepts_compile(module_name):
            extra["compile"] = compile
            if compile == "cudagraphs":  # the compiled step replayed as CUDA graphs (GPU only)
                extra["compile"] = importlib.import_module(f"{module_name}.compile").CompileConfig(cudagraphs=True)
        trainer = L.Trainer(
            accelerator="gpu" if cfg.device.startswith("cuda") else "cpu", devices=1,
            max_epochs=cfg.epochs,
            enable_progress_bar=False, enable_model_summary=False, logger=False,
            enable_checkpointing=False, num_sanity_val_steps=0,
            callbacks=[timer], **extra)
        trainer.fit(model, train_dataloaders=make_loader(batches))
        fit_seconds = time.perf_counter() - t_fit
        return {"epoch_seconds": timer.epoch_seconds, "fit_seconds": fit_seconds,
                "final_loss": final_loss(model.net, workload, batches, cfg.device)}

    return run


@dataclass(frozen=True)
class Runner:
    name: str
    run: Callable[[Workload, List[Batch], RunConfig], Dict[str, Any]]
    unavailable: Callable[[], Optional[str]] = lambda: None  # reason it cannot run here, or None


HAND, LIGHTNING, CUDAGRAPHS = "hand loop", "lightning", "trainer cudagraphs"

RUNNERS: List[Runner] = [
    Runner(HAND, run_hand_loop),
    Runner(LIGHTNING, framework_runner("pytorch_lightning"), lambda: framework_unavailable("pytorch_lightning")),
    Runner("trainer eager", framework_runner("trainer", compile=False), lambda: framework_unavailable("trainer")),
    Runner("trainer compiled", framework_runner("trainer", compile=True),
           lambda: framework_unavailable("trainer", compile=True)),
    Runner(CUDAGRAPHS, framework_runner("trainer", compile="cudagraphs"),
           lambda: framework_unavailable("trainer", compile=True) or (
               None if torch.cuda.is_available() else "CUDA graphs need a CUDA GPU")),
]


# --------------------------------------------------------------------------- a shared machine

def _cpu_seconds() -> tuple:
    """(CPU seconds used by the whole machine, by this process) so far. Linux only."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal, without guest (counted in user)
    t = os.times()
    return busy, t.user + t.system


def others_cpu(before: tuple, after: tuple, wall: float) -> float:
    """Cores' worth of CPU that other processes used between two ``_cpu_seconds()`` readings."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / max(wall, 1e-9)


def wait_until_quiet(max_others: float, timeout: float, probe: float = 0.5) -> float:
    """Waits (up to ``timeout`` s) until other processes use less than ``max_others`` cores over
    ``probe`` s; returns their last measured use. On a 2-vCPU machine shared with test suites, a
    neighbour on one core makes a 2-thread torch step 10-100x slower (its threads wait on each
    other), which no median over a handful of repeats survives."""
    deadline = time.monotonic() + timeout
    while True:
        t0, c0 = time.monotonic(), _cpu_seconds()
        time.sleep(probe)
        load = others_cpu(c0, _cpu_seconds(), time.monotonic() - t0)
        if load < max_others or time.monotonic() > deadline:
            return load


# --------------------------------------------------------------------------- measurement

@dataclass
class Result:
    workload: str
    runner: str
    batch_size: int
    steps_per_epoch: int
    samples_per_s: List[float] = field(default_factory=list)  # one per measured epoch
    fit_overhead_s: List[float] = field(default_factory=list)  # fit time outside the epochs
    final_loss: List[float] = field(default_factory=list)
    others_cpu: List[float] = field(default_factory=list)  # other processes' use, in cores, per kept fit
    discarded_fits: int = 0  # fits run again because other processes were busy during them
    error: Optional[str] = None
    flops_per_sample: float = float("nan")  # training FLOPs per sample (workloads.py)
    tokens_per_sample: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples_per_s) if self.samples_per_s else float("nan")

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.batch_size / self.median if self.samples_per_s else float("nan")


def measure(workloads: List[Workload], runners: List[Runner], *, repeats: int, warmup: int, epochs: int,
            steps: Optional[int], seed: int, device: str, verbose: bool = True,
            max_others: Optional[float] = None, retries: int = 0, quiet_timeout: float = 60.0) -> List[Result]:
    """``max_others`` (cores): wait for the machine to be that quiet before each fit, and run a fit
    again (up to ``retries`` times) when other processes used more than that during it."""
    results: List[Result] = []
    cfg = RunConfig(epochs=warmup + epochs, seed=seed, device=device)
    for w in workloads:
        n_steps = steps or w.steps_per_epoch
        batches = w.make_batches(n_steps, w.batch_size, seed)
        flops = w.flops_per_sample(w.make_model())
        by_runner = {r.name: Result(w.name, r.name, w.batch_size, n_steps, flops_per_sample=flops,
                                    tokens_per_sample=w.tokens_per_sample) for r in runners}
        for rep in range(repeats):
            order = runners[rep % len(runners):] + runners[:rep % len(runners)]  # rotate
            for r in order:
                res = by_runner[r.name]
                if res.error:
                    continue
                for attempt in range(retries + 1):
                    gc.collect()
                    if max_others is not None:
                        wait_until_quiet(max_others, quiet_timeout)
                    t0, c0 = time.monotonic(), _cpu_seconds()
                    try:
                        out = r.run(w, batches, cfg)
                    except Exception as e:  # noqa: BLE001 - report in the table, keep measuring the others
                        res.error = f"{type(e).__name__}: {e}"
                        if verbose:
                            print(f"  {w.name:9s} {r.name:16s} FAILED: {res.error}", file=sys.stderr)
                        break
                    load = others_cpu(c0, _cpu_seconds(), time.monotonic() - t0)
                    if max_others is None or load < max_others or attempt == retries:
                        break
                    res.discarded_fits += 1
                    if verbose:
                        print(f"  {w.name:9s} {r.name:16s} repeat {rep + 1}/{repeats}: other processes used "
                              f"{load:.2f} cores during the fit; running it again", file=sys.stderr)
                if res.error:
                    continue
                res.others_cpu.append(load)
                secs = out["epoch_seconds"]
                if len(secs) != cfg.epochs:
                    res.error = f"timed {len(secs)} epochs, expected {cfg.epochs}"
                    continue
                rates = [n_steps * w.batch_size / s for s in secs[warmup:]]
                res.samples_per_s += rates
                res.fit_overhead_s.append(out["fit_seconds"] - sum(secs))
                res.final_loss.append(out["final_loss"])
                if verbose:
                    print(f"  {w.name:9s} {r.name:16s} repeat {rep + 1}/{repeats}: "
                          + " ".join(f"{x:,.0f}" for x in rates) + f" samples/s (others {load:.2f} cores)",
                          file=sys.stderr)
        results += by_runner.values()
    return results


# --------------------------------------------------------------------------- reporting

def machine_info() -> Dict[str, Any]:
    model_name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model_name = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("pytorch_lightning", "trainer"):
        try:
            versions[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception:  # noqa: BLE001
            versions[mod] = None
    try:
        repo = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu": model_name,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
        "git_commit": commit,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# fp32 peak without TF32 (torch's default for matmuls), dense, TFLOP/s: the MFU denominator on GPUs
_GPU_FP32_PEAK_TFLOPS = (("H200", 67.0), ("H100 PCIe", 51.0), ("H100", 67.0), ("A100", 19.5), ("L40S", 91.6),
                         ("L4", 30.3), ("A10", 31.2), ("V100", 15.7))


def peak_tflops(device: str, given: Optional[float] = None) -> Tuple[Optional[float], str]:
    """The MFU denominator and where it came from: ``given`` (``--peak-tflops``), a datasheet fp32
    figure for a known GPU, else the best fp32 GEMM rate measured here (2048^3 matmuls, best of 10):
    on a CPU, "MFU" is then the fraction of what this machine's BLAS reaches on a large GEMM."""
    if given:
        return given, "given (--peak-tflops)"
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        for key, tflops in _GPU_FP32_PEAK_TFLOPS:
            if key in name:
                return tflops, f"{name} fp32 datasheet peak"
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(12):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12, f"measured fp32 GEMM {n}^3 on {device}"


def result_rows(results: List[Result], peak: Optional[float] = None) -> List[Dict[str, Any]]:
    rows = []
    for res in results:
        same = {r.runner: r for r in results if r.workload == res.workload}
        hand, light = same.get(HAND), same.get(LIGHTNING)
        ok = not res.error and res.samples_per_s
        rows.append({
            "workload": res.workload, "runner": res.runner,
            "samples_per_s": res.median if ok else None,
            "ms_per_step": res.ms_per_step if ok else None,
            "min_samples_per_s": min(res.samples_per_s) if ok else None,
            "max_samples_per_s": max(res.samples_per_s) if ok else None,
            "n_epochs_measured": len(res.samples_per_s),
            # step time relative to the hand loop: 1.00 = as fast, 1.15 = 15% slower per step
            "time_vs_hand": hand.median / res.median if ok and hand and hand.samples_per_s else None,
            # throughput relative to Lightning: 2.0 = twice Lightning's samples/s
            "speedup_vs_lightning": res.median / light.median if ok and light and light.samples_per_s else None,
            "fit_overhead_s": statistics.median(res.fit_overhead_s) if res.fit_overhead_s else None,
            "tokens_per_s": res.median * res.tokens_per_sample if ok and res.tokens_per_sample > 1 else None,
            # model FLOPs utilisation: training FLOPs per second over the peak (peak_tflops)
            "mfu": (res.median * res.flops_per_sample / (peak * 1e12)
                    if ok and peak and res.flops_per_sample == res.flops_per_sample else None),
            # loss on the last batch after the fit: equal across runners that update bit-identically
            "final_loss": res.final_loss[-1] if res.final_loss else None,
            "all_samples_per_s": res.samples_per_s,
            "others_cpu_per_fit": res.others_cpu,
            "discarded_fits": res.discarded_fits,
            "error": res.error,
        })
    return rows


def format_table(rows: List[Dict[str, Any]]) -> str:
    header = ["workload", "runner", "samples/s (median)", "ms/step", "min-max samples/s",
              "step time / hand", "speed-up vs Lightning", "tokens/s", "MFU", "fit start-up s"]

    def f(v: Optional[float], fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    body = []
    for r in rows:
        if r["error"]:
            body.append([r["workload"], r["runner"], "error", "-", "-", "-", "-", "-", "-", "-"])
            continue
        body.append([r["workload"], r["runner"], f(r["samples_per_s"], ",.0f"), f(r["ms_per_step"], ".3f"),
                     f"{r['min_samples_per_s']:,.0f}-{r['max_samples_per_s']:,.0f}",
                     f(r["time_vs_hand"], ".2f") + ("x" if r["time_vs_hand"] is not None else ""),
                     f(r["speedup_vs_lightning"], ".2f") + ("x" if r["speedup_vs_lightning"] is not None else ""),
                     f(r["tokens_per_s"], ",.0f"),
                     "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                     f(r["fit_overhead_s"], ".2f")])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    align_right = [False, False, True, True, True, True, True, True, True, True]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if ar else c.ljust(w)
                                 for c, w, ar in zip(cells, widths, align_right)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if ar else ("-" * (w + 2))
                         for w, ar in zip(widths, align_right)) + "|"
    return "\n".join([line(header), sep] + [line(b) for b in body])


def _quiet_frameworks() -> None:
    """Keep the Trainers' banners ("GPU available: ...") and num_workers advice out of the table."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric", "trainer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), metavar="NAME",
                   help=f"any of {', '.join(WORKLOADS)} (space or comma separated)")
    p.add_argument("--runners", nargs="+", default=None, metavar="NAME",
                   help=f"subset of runners (default all available): {', '.join(r.name for r in RUNNERS)}")
    p.add_argument("--repeats", type=int, default=3, help="fits per runner and workload")
    p.add_argument("--epochs", type=int, default=2, help="measured epochs per fit")
    p.add_argument("--warmup", type=int, default=1, help="warm-up epochs per fit, not measured")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the workload's)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1+1 epochs, <= 16 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="MFU denominator (default: a datasheet fp32 figure for known GPUs, else a measured large GEMM)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default, which is printed)")
    p.add_argument("--max-others", type=float, default=0.15, metavar="CORES",
                   help="before each fit wait until other processes use less CPU than this (cores), and run a "
                        "fit again when they used more during it; a negative value turns this off")
    p.add_argument("--retries", type=int, default=4, help="times a fit disturbed by other processes is run again")
    p.add_argument("--json", type=Path, default=None, help="also write machine, config and results here")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-repeat progress on stderr")
    args = p.parse_args(argv)
    args.workloads = [w for item in args.workloads for w in item.split(",") if w]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if args.runners:
        args.runners = [r.strip() for item in args.runners for r in item.split(",") if r.strip()]
        names = [r.name for r in RUNNERS]
        if any(r not in names for r in args.runners):
            p.error(f"unknown runner(s) {[r for r in args.runners if r not in names]}; choose from {names}")
    if args.quick:
        args.repeats, args.epochs, args.warmup = 1, 1, 1
        args.steps = min(args.steps or 16, 16)
        args.max_others = -1.0  # a smoke run: no waiting for a quiet machine
    if args.max_others is not None and args.max_others < 0:
        args.max_others = None
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()  # imports the frameworks: they set their loggers' levels on import
    _quiet_frameworks()
    print(f"machine: {machine['cpu']}, {machine['nproc']} CPUs, torch threads {machine['torch_num_threads']}"
          + (f", {machine['cuda']}" if machine["cuda"] else ""))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v is not None)
          + (f"; repo at {machine['git_commit']}" if machine["git_commit"] else ""))
    print(f"date: {machine['date']}")

    runners, skipped = [], {}
    for r in RUNNERS:
        if args.runners and r.name not in args.runners:
            continue
        reason = r.unavailable()
        if not reason and r.name == CUDAGRAPHS and not args.device.startswith("cuda"):
            reason = f"CUDA graphs need a CUDA device (--device {args.device})"
        if reason:
            skipped[r.name] = reason
            print(f"skipping runner '{r.name}': {reason}")
        else:
            runners.append(r)
    print(f"config: repeats {args.repeats}, {args.warmup} warm-up + {args.epochs} measured epochs per fit, "
          f"steps/epoch {args.steps or 'per workload'}, seed {args.seed}, AdamW lr {LR}, device {args.device}; "
          + (f"fits wait for, and are re-run unless, other processes use < {args.max_others} cores "
             f"(up to {args.retries} re-runs)\n" if args.max_others is not None else "no load gating\n"))

    results = measure([WORKLOADS[w] for w in args.workloads], runners, repeats=args.repeats,
                      warmup=args.warmup, epochs=args.epochs, steps=args.steps, seed=args.seed,
                      device=args.device, verbose=not args.quiet, max_others=args.max_others,
                      retries=args.retries)
    peak, peak_source = peak_tflops(args.device, args.peak_tflops)
    rows = result_rows(results, peak)
    print()
    print(format_table(rows))
    print("\nsamples/s: median over all measured epochs of all repeats. step time / hand: the runner's time per "
          "step over the hand loop's (goal for the eager trainer on tiny_mlp: <= 1.15x). speed-up vs Lightning: "
          "samples/s over Lightning's. fit start-up: fit() time outside the training epochs (median). "
          f"MFU: training FLOPs/s (workloads.py's estimate) over {peak:.2f} TFLOP/s ({peak_source}).")
    for w in args.workloads:
        print(f"  {w}: {WORKLOADS[w].description}")
    for w in args.workloads:
        losses = {r["runner"]: r["final_loss"] for r in rows if r["workload"] == w and r["final_loss"] is not None}
        if len(losses) > 1:
            ref_name = HAND if HAND in losses else next(iter(losses))
            ref = losses[ref_name]
            same = [k for k, v in losses.items() if v == ref]
            other = [f"{k} ({abs(v - ref) / max(abs(ref), 1e-30):.1e} relative)" for k, v in losses.items() if v != ref]
            print(f"  {w}: loss on the last batch after the fit: {ref:.6f}, bit-identical for {', '.join(same)}"
                  + (f"; differs for {', '.join(other)}" if other else ""))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "skipped_runners": skipped,
            "peak_tflops": {"value": peak, "source": peak_source},
            "results": rows,
        }, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
