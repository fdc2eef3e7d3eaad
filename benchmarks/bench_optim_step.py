"""One AdamW step, side by side: trainer.optim backends vs torch.optim (fused, foreach) vs apex.

GB/s = bytes moved per step / time. AdamW fp32 moves 28 bytes per parameter (read p, g, m, v;
write p, m, v). The streaming bound is measured in the same run: in-place ``a.add_(b)`` (12 B
per element) and ``a.copy_(b)`` (8 B), on the same total size.

    python benchmarks/bench_optim_step.py            # prints a table
    pytest benchmarks/bench_optim_step.py            # pytest-benchmark suite
"""
from __future__ import annotations

import datetime
import platform
import subprocess
import time

import torch

import trainer.optim as topt
from trainer.optim import FusedAdamW

try:  # the real NVIDIA apex, never the unrelated PyPI package
    from apex.optimizers import FusedAdam as ApexFusedAdam
except Exception:
    ApexFusedAdam = None

BYTES_PER_PARAM = 28
CASES = {"1x16.8M": [16_777_216], "400 small": [41_943] * 400}  # both ~16.8M params in total


def make(case: str, device: str = "cpu") -> list[torch.nn.Parameter]:
    ps = [torch.nn.Parameter(torch.randn(n, device=device)) for n in CASES[case]]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


def optimizers(device: str = "cpu") -> dict[str, callable]:
    out = {}
    for be in topt.available_backends(device):
        if be == "triton" and device == "cpu":
            continue  # the interpreter: correctness only
        out[f"trainer FusedAdamW [{be}]"] = lambda ps, be=be: FusedAdamW(ps, lr=1e-3, backend=be)
    out["torch AdamW fused=True"] = lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)
    out["torch AdamW foreach=True"] = lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True)
    if ApexFusedAdam is not None and device == "cuda":
        out["apex FusedAdam"] = lambda ps: ApexFusedAdam(ps, lr=1e-3, adam_w_mode=True)
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _mean_time(fn, device: str, iters: int) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / iters


def run(device: str = "cpu", iters: int = 10, rounds: int = 5) -> list[tuple[str, str, float, float]]:
    """Times every implementation round-robin, ``rounds`` times, and keeps each one's best mean.

    The machine is shared: interleaving spreads any load over all rows instead of biasing the
    ones that happen to run during it, and the minimum is the least disturbed measurement.
    """
    rows = []
    for case in CASES:
        n = sum(CASES[case])
        a, b = torch.randn(n, device=device), torch.randn(n, device=device)
        fns = {"stream: in-place add_ (12 B/elem)": (lambda: a.add_(b), 12),
               "stream: copy_ (8 B/elem)": (lambda: a.copy_(b), 8)}
        keep = []
        for name, make_opt in optimizers(device).items():
            opt = make_opt(make(case, device))
            keep.append(opt)
            fns[name] = (opt.step, BYTES_PER_PARAM)
        for fn, _ in fns.values():  # warm-up: state allocation, first-touch page faults
            for _ in range(2):
                fn()
        best = {name: float("inf") for name in fns}
        for _ in range(rounds):
            for name, (fn, _) in fns.items():
                best[name] = min(best[name], _mean_time(fn, device, iters))
        for name, (_, bytes_per) in fns.items():
            ms = float("nan") if name.startswith("stream") else best[name] * 1e3
            rows.append((case, name, ms, bytes_per * n / best[name] / 1e9))
        del keep, fns
    return rows


def machine() -> str:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    return (f"{torch.get_num_threads()} threads, {model}, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}")


def table(rows) -> str:
    lines = ["| case | implementation | ms/step | GB/s |", "|---|---|---:|---:|"]
    for case, name, ms, gbs in rows:
        lines.append(f"| {case} | {name} | {'' if ms != ms else f'{ms:.2f}'} | {gbs:.1f} |")
    return "\n".join(lines)


# ---- pytest-benchmark suite ----------------------------------------------------------------
try:
    import pytest

    @pytest.mark.parametrize("case", list(CASES))
    @pytest.mark.parametrize("impl", list(optimizers("cpu")))
    def test_adamw_step(benchmark, case, impl):
        ps = make(case)
        opt = optimizers("cpu")[impl](ps)
        benchmark.extra_info["bytes_per_step"] = BYTES_PER_PARAM * sum(CASES[case])
        benchmark(opt.step)
except ImportError:
    pass


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(machine())
    print(table(run(dev)))
