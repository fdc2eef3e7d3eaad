"""The GPU rows of issue 14, in one process: correctness and speed of trainer vs Lightning.

Correctness: a small GPT trained a few steps in bf16-mixed and 16-mixed (with a GradScaler that
starts high enough to skip steps) by Lightning, trainer eager, trainer compiled with and without
CUDA graphs; parameters compared by relative norm distance. Speed: tokens/s and MFU (against the
GPU's dense bf16 peak) of a GPT-2-small-class model in bf16-mixed for trainer compiled (CUDA graphs
on and off), trainer eager, Lightning and Lightning + ``torch.compile(model)``; fused AdamW GB/s
against ``torch.optim.AdamW(fused=True)`` and a device copy; per-step counts of kernel launches,
host-device copies and synchronisations from ``torch.profiler``.

Writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out``. ``--dry-run`` runs every part on the
CPU with tiny sizes (a syntax and wiring check; its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as Fn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workloads import GPT  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s, SXM datasheets); --peak-tflops overrides
BF16_PEAK = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
RUNNERS = ("trainer compiled+cudagraphs", "trainer compiled", "trainer eager", "lightning", "lightning+torch.compile")


def bf16_peak(device: str, given: Optional[float]) -> Optional[float]:
    if given:
        return given
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def gpt_flops_per_token(cfg: Dict[str, int]) -> float:
    """6 * parameters (forward + backward) plus attention's 12 * layers * d * context."""
    d, n_layer, ctx, vocab = cfg["d"], cfg["n_layer"], cfg["context"], cfg["vocab"]
    n_params = 12 * n_layer * d * d + vocab * d
    return 6.0 * n_params + 12.0 * n_layer * d * ctx


def make_batches(cfg: Dict[str, int], n: int, batch: int, seed: int) -> List[tuple]:
    """(inputs, next tokens) pairs."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, cfg["vocab"], (batch, cfg["context"] + 1), generator=g) for _ in range(n)]
    return [(s[:, :-1].contiguous(), s[:, 1:].contiguous()) for s in seqs]


def module_class(fw: Any, compile_inner: bool = False) -> type:
    class GPTModule(fw.LightningModule):
        def __init__(self, cfg: Dict[str, int]) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = GPT(**cfg)
            # not a submodule: registered twice, the compiled capture failed (benchmarks/RESULTS.md)
            object.__setattr__(self, "fwd", torch.compile(self.model) if compile_inner else self.model)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.fwd(x)
            loss = Fn.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=3e-4, weight_decay=0.1)

    return GPTModule


def timer_callback(fw: Any, warmup: int, device: str) -> Any:
    class Timer(fw.Callback):
        def __init__(self) -> None:
            self.t0 = self.t1 = None
            self.steps = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= warmup:
                self.steps += 1

        def on_train_end(self, trainer, pl_module):
            if device == "cuda":
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    return Timer()


def fit(runner: str, cfg: Dict[str, int], batches: List[torch.Tensor], device: str, precision: str,
        warmup: int = 0, scaler_init: Optional[float] = None) -> Dict[str, Any]:
    """One fit over ``batches``; the trained parameters (CPU, fp32) and the measured seconds per step."""
    from torch.utils.data import DataLoader

    lightning = runner.startswith("lightning")
    if lightning:
        import pytorch_lightning as fw
    else:
        import trainer as fw
    kw: Dict[str, Any] = dict(accelerator=device, devices=1, precision=precision, max_steps=len(batches),
                              logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False)
    if not lightning:
        from trainer.compile import CompileConfig

        kw["compile"] = (CompileConfig(cudagraphs=runner.endswith("cudagraphs"), cudagraph_warmup=1)
                         if "compiled" in runner else False)
    if scaler_init is not None and precision == "16-mixed":
        plugin = fw.plugins.precision.MixedPrecision
        kw.pop("precision")
        kw["plugins"] = [plugin("16-mixed", device, scaler=torch.amp.GradScaler(device, init_scale=scaler_init))]
    timer = timer_callback(fw, warmup, device)
    kw["callbacks"] = [timer]
    model = module_class(fw, compile_inner=runner == "lightning+torch.compile")(cfg)
    tr = fw.Trainer(**kw)
    tr.fit(model, DataLoader(batches, batch_size=None))
    secs = (timer.t1 - timer.t0) / max(timer.steps, 1) if timer.t0 is not None else float("nan")
    params = torch.cat([p.detach().float().flatten().cpu() for p in model.model.parameters()])
    return {"params": params, "sec_per_step": secs, "loss": float(tr.callback_metrics.get("loss", float("nan")))}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def correctness(device: str, dry: bool) -> List[Dict[str, Any]]:
    cfg = dict(vocab=256, context=32 if dry else 128, d=64 if dry else 256, n_layer=2 if dry else 4, n_head=4)
    batches = make_batches(cfg, 3 if dry else 20, 4 if dry else 16, seed=1)
    rows = []
    precisions = ["bf16-mixed"] + ([] if device == "cpu" else ["16-mixed"])
    for precision in precisions:
        # 16-mixed: a scale of 2**40 overflows the first steps, so GradScaler skips them
        init = 2.0 ** 40 if precision == "16-mixed" else None
        ref = fit("lightning", cfg, batches, device, precision, scaler_init=init)
        names = ["trainer eager", "trainer compiled"] + ([] if device == "cpu" else ["trainer compiled+cudagraphs"])
        for name in names:
            got = fit(name, cfg, batches, device, precision, scaler_init=init)
            r = rel(got["params"], ref["params"])
            rows.append({"precision": precision, "runner": name, "rel_param_diff_vs_lightning": r,
                         "loss": got["loss"], "lightning_loss": ref["loss"], "ok": bool(math.isfinite(r) and r < 2e-2)})
    return rows


def speed(device: str, dry: bool, peak: Optional[float]) -> List[Dict[str, Any]]:
    cfg = (dict(vocab=256, context=32, d=64, n_layer=2, n_head=4) if dry
           else dict(vocab=50304, context=1024, d=768, n_layer=12, n_head=12))
    batch, steps, warmup = (2, 4, 1) if dry else (8, 30, 10)
    batches = make_batches(cfg, steps, batch, seed=2)
    runners = [r for r in RUNNERS if device == "cuda" or "cudagraphs" not in r]
    rows = []
    for name in runners:
        out = fit(name, cfg, batches, device, "bf16-mixed", warmup=warmup)
        tps = batch * cfg["context"] / out["sec_per_step"]
        mfu = tps * gpt_flops_per_token(cfg) / (peak * 1e12) if peak else None
        rows.append({"runner": name, "tokens_per_s": tps, "mfu": mfu, "sec_per_step": out["sec_per_step"]})
    base = {r["runner"]: r["tokens_per_s"] for r in rows}
    for r in rows:
        r["x_lightning"] = r["tokens_per_s"] / base["lightning"]
        r["x_lightning_compile"] = r["tokens_per_s"] / base["lightning+torch.compile"]
    return rows


def _median_time(fn: Callable[[], None], device: str, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def adamw_bandwidth(device: str, dry: bool) -> List[Dict[str, Any]]:
    from trainer.optim import FusedAdamW

    n, reps = (1 << 16, 3) if dry else (1 << 27, 20)  # 128M fp32 elements per tensor: far past L2
    sizes = [n // 4] * 4
    rows = []
    copy_src = torch.randn(n, device=device)
    copy_dst = torch.empty_like(copy_src)
    t = _median_time(lambda: copy_dst.copy_(copy_src), device, reps)
    rows.append({"op": "device copy", "GB_per_s": 2 * n * 4 / t / 1e9})
    for name in ("trainer FusedAdamW", "torch AdamW fused=True"):
        params = [torch.randn(s, device=device, requires_grad=True) for s in sizes]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = (FusedAdamW(params, lr=1e-3) if name.startswith("trainer")
               else torch.optim.AdamW(params, lr=1e-3, fused=True))
        t = _median_time(opt.step, device, reps)
        # per element: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq
        rows.append({"op": name, "GB_per_s": 7 * n * 4 / t / 1e9})
    copy_bw = rows[0]["GB_per_s"]
    for r in rows:
        r["of_copy"] = r["GB_per_s"] / copy_bw
    return rows


def profile_counts(device: str, dry: bool) -> List[Dict[str, Any]]:
    """Per-step kernel launches, host<->device copies and synchronisations of trainer's compiled step."""
    from torch.profiler import ProfilerActivity, profile

    cfg = dict(vocab=256, context=32 if dry else 256, d=64 if dry else 384, n_layer=2 if dry else 6, n_head=4)
    steps = 3 if dry else 8
    batches = make_batches(cfg, steps + 4, 4 if dry else 16, seed=3)
    rows = []
    runners = ["trainer compiled"] + (["trainer compiled+cudagraphs"] if device == "cuda" else [])
    for name in runners:
        fit(name, cfg, batches[:4], device, "bf16-mixed")  # warm the compile cache
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=acts) as prof:
            fit(name, cfg, batches[4:], device, "bf16-mixed")
        names = [e.name for e in prof.events()]
        count = lambda pred: sum(1 for s in names if pred(s)) / steps  # noqa: E731
        rows.append({
            "runner": name,
            "launches_per_step": count(lambda s: s in ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch",
                                                        "cudaLaunchKernelExC", "cuLaunchKernelEx")),
            "graph_launches_per_step": count(lambda s: s == "cudaGraphLaunch"),
            "memcpy_per_step": count(lambda s: s.startswith("Memcpy HtoD") or s.startswith("Memcpy DtoH")),
            "syncs_per_step": count(lambda s: s in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                    "cudaEventSynchronize")),
            "note": "counts include the fit's set-up and teardown, divided by the profiled steps",
        })
    return rows


def markdown(report: Dict[str, Any]) -> str:
    lines = [f"# gpu_check ({report['device_name']}, dry_run={report['dry_run']})", ""]
    for section, rows in report["sections"].items():
        lines.append(f"## {section}")
        if not rows:
            lines += ["(none)", ""]
            continue
        keys = list(rows[0])
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for r in rows:
            cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## goals", *[f"- {g}: {'met' if ok else 'NOT met'}" for g, ok in report["goals"].items()], ""]
    return "\n".join(lines)


def goals(report: Dict[str, Any]) -> Dict[str, bool]:
    sp = {r["runner"]: r for r in report["sections"].get("speed", [])}
    best = sp.get("trainer compiled+cudagraphs") or sp.get("trainer compiled") or {}
    prof = {r["runner"]: r for r in report["sections"].get("profile", [])}
    bw = {r["op"]: r for r in report["sections"].get("fused AdamW", [])}
    return {
        "MFU >= 50% bf16": bool(best.get("mfu") and best["mfu"] >= 0.5),
        ">= 1.5x Lightning eager": bool(best and best["x_lightning"] >= 1.5),
        ">= 1.1x Lightning + torch.compile": bool(best and best["x_lightning_compile"] >= 1.1),
        "zero host syncs per step with CUDA graphs": prof.get("trainer compiled+cudagraphs", {}).get("syncs_per_step",
                                                                                                      1) == 0,
        "fused AdamW >= 90% of copy bandwidth": bw.get("trainer FusedAdamW", {}).get("of_copy", 0) >= 0.9,
        "correctness": all(r["ok"] for r in report["sections"].get("correctness", [])),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="folder for the JSON and markdown")
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU, tiny sizes (wiring check)")
    p.add_argument("--parts", nargs="+", default=["correctness", "speed", "adamw", "profile"],
                   choices=["correctness", "speed", "adamw", "profile"])
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator (default: bf16 datasheet)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device (use --dry-run for the CPU wiring check)", file=sys.stderr)
        return 2
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {"device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                              "dry_run": args.dry_run, "torch": torch.__version__, "sections": {}}
    parts = {"correctness": lambda: correctness(device, args.dry_run),
             "speed": lambda: speed(device, args.dry_run, bf16_peak(device, args.peak_tflops)),
             "fused AdamW": lambda: adamw_bandwidth(device, args.dry_run),
             "profile": lambda: profile_counts(device, args.dry_run)}
    wanted = {"correctness": "correctness", "speed": "speed", "adamw": "fused AdamW", "profile": "profile"}
    for key in args.parts:
        name = wanted[key]
        t = time.perf_counter()
        report["sections"][name] = parts[name]()
        print(f"gpu_check.py: {name} done in {time.perf_counter() - t:.0f}s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))  # partial results survive
    report["goals"] = goals(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "gpu_check.md").write_text(md)
    print(md)
    return 0 if report["goals"]["correctness"] else 1


if __name__ == "__main__":
    sys.exit(main())
