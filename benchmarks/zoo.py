"""Model zoo: Hugging Face ``transformers`` models (random init, small configs) trained through the
Lightning API under four runners, side by side:

    lightning             pytorch_lightning.Trainer, eager
    lightning+compile     pytorch_lightning.Trainer with ``torch.compile(model)`` (what a user tries first)
    trainer eager         trainer.Trainer(compile=False)
    trainer compiled      trainer.Trainer() (the default: one graph, or compiled regions)

    python benchmarks/zoo.py                                   # every model, every runner
    python benchmarks/zoo.py --models bert,vit --runners "lightning" "trainer compiled"
    python benchmarks/zoo.py --quick                           # smoke: 2 models, 3 steps
    python benchmarks/zoo.py --json out.json

Models (``MODELS``; each a LightningModule around a ``transformers`` model built from a config, no
download): ``gpt2`` (4 layers, d 128, ctx 128, AdamW, per-step cosine LR, accumulate 2, clip 1.0),
``llama`` (GQA, RoPE, RMSNorm, SwiGLU; AdamW, warm-up LR, clip; bf16-mixed with ``--bf16``),
``bert`` (sequence classification, padding masks of varying length, dropout 0.1; AdamW),
``vit`` (image 32, patch 4, 4 layers, d 128; AdamW), ``resnet`` (HF ResNet, BatchNorm; SGD nesterov).

Method: every (model, runner) pair runs in a fresh Python process (dynamo and inductor keep state
per process) with the same seed and batches. ``--steps`` optimizer steps (40) are timed one by one
(``on_train_batch_start`` to ``on_train_batch_end`` of the batch that ends the step); steady state is the
median samples/s of the steps after ``--skip`` (5); warm-up is what the first ``--skip`` steps took
beyond as many steady steps (capture and compile happen there). The final loss is the mean training loss of the last
5 steps. Compiled
runners run twice: ``cold`` with an empty inductor cache directory, ``cached`` with the directory the
cold run filled (a new process: what the second run of a script pays). ``--repeat N`` adds N rounds in
which every runner runs once more (compiled runners from their cache, the runners' order rotated each
round); the table then shows each runner's median samples/s over all its runs of the model: same-graph
runs move by up to 20 % on the shared VM, so single runs make noisy ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

RUNNERS = ("lightning", "lightning+compile", "trainer eager", "trainer compiled")
COMPILED = ("lightning+compile", "trainer compiled")


# ------------------------------------------------------------------------------------------ models
def _gpt2(batch: int, seq: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=4, n_embd=128, n_head=4, n_positions=seq, vocab_size=2048,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg), "lm"


def _llama(batch: int, seq: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=4, hidden_size=128, intermediate_size=344, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=2048, max_position_embeddings=seq)
    return LlamaForCausalLM(cfg), "lm"


def _bert(batch: int, seq: int):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(num_hidden_layers=4, hidden_size=128, intermediate_size=512, num_attention_heads=4,
                     vocab_size=2048, max_position_embeddings=seq, num_labels=4, hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.1)
    return BertForSequenceClassification(cfg), "cls"


def _vit(batch: int, seq: int):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=128, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=512, num_labels=10, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(cfg), "img"


def _resnet(batch: int, seq: int):
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                       layer_type="basic", num_labels=10)
    return ResNetForImageClassification(cfg), "img"


# name: (factory, batch size, sequence length, optimizer, trainer kwargs)
MODELS: Dict[str, Dict[str, Any]] = {
    "gpt2": dict(make=_gpt2, batch=8, seq=128, opt="adamw_cosine", trainer=dict(accumulate_grad_batches=2,
                                                                               gradient_clip_val=1.0)),
    "llama": dict(make=_llama, batch=8, seq=128, opt="adamw_warmup", trainer=dict(gradient_clip_val=1.0)),
    "bert": dict(make=_bert, batch=16, seq=64, opt="adamw", trainer=dict()),
    "vit": dict(make=_vit, batch=32, seq=0, opt="adamw", trainer=dict()),
    "resnet": dict(make=_resnet, batch=32, seq=0, opt="sgd_nesterov", trainer=dict()),
}


def make_batches(kind: str, n: int, batch: int, seq: int, seed: int = 0) -> List[Dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        if kind == "lm":
            ids = torch.randint(0, 2048, (batch, seq), generator=g)
            out.append({"input_ids": ids, "labels": ids.clone()})
        elif kind == "cls":
            ids = torch.randint(1, 2048, (batch, seq), generator=g)
            lengths = torch.randint(seq // 4, seq + 1, (batch,), generator=g)
            mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
            out.append({"input_ids": ids * mask, "attention_mask": mask,
                        "labels": torch.randint(0, 4, (batch,), generator=g)})
        else:
            out.append({"pixel_values": torch.randn(batch, 3, 32, 32, generator=g),
                        "labels": torch.randint(0, 10, (batch,), generator=g)})
    return out


def module_class(L: Any, spec: Dict[str, Any], total_steps: int) -> type:
    import torch

    class ZooModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model, _ = spec["make"](spec["batch"], spec["seq"])

        def training_step(self, batch, batch_idx):
            loss = self.model(**batch).loss
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            opt_kind = spec["opt"]
            if opt_kind == "sgd_nesterov":
                return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
            opt = torch.optim.AdamW(self.parameters(), lr=3e-4, weight_decay=0.01)
            if opt_kind == "adamw_cosine":
                fn: Callable[[int], float] = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))  # noqa: E731
            elif opt_kind == "adamw_warmup":
                fn = lambda s: min(1.0, (s + 1) / 10)  # noqa: E731
            else:
                return opt
            sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return ZooModule


# ------------------------------------------------------------------------------------------ one run
def run_one(model: str, runner: str, steps: int, skip: int, bf16: bool, threads: int) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    spec = MODELS[model]
    if runner.startswith("lightning"):
        import pytorch_lightning as L
    else:
        import trainer as L
    k = spec["trainer"].get("accumulate_grad_batches", 1)
    batches = make_batches(_kind(model), steps * k, spec["batch"], spec["seq"])
    module = module_class(L, spec, steps)()
    if runner == "lightning+compile":
        module.model = torch.compile(module.model)
    times: List[float] = []
    losses: List[float] = []
    t_start: List[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx % k == 0:
                t_start.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (batch_idx + 1) % k == 0:
                times.append(time.perf_counter() - t_start[-1])
                losses.append(float(trainer.callback_metrics["train_loss"]))

    kwargs: Dict[str, Any] = dict(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                  callbacks=[Timer()], **spec["trainer"])
    if bf16 and model == "llama":
        kwargs["precision"] = "bf16-mixed"
    if runner == "trainer eager":
        kwargs["compile"] = False
    trainer = L.Trainer(**kwargs)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    wall = time.perf_counter() - t0
    steady = times[skip:] or times
    per_step = statistics.median(steady)
    # warm-up: what the first `skip` steps cost beyond steady-state steps (the compile may come at the
    # second step: a step whose first capture fails runs once eagerly and is captured again)
    warmup = sum(times[:skip]) - min(skip, len(times)) * per_step
    out: Dict[str, Any] = dict(model=model, runner=runner, steps=len(times), warmup_s=warmup,
                               step_s=per_step, samples_per_s=spec["batch"] * k / per_step, wall_s=wall,
                               final_loss=statistics.fmean(losses[-5:]) if losses else None,
                               losses=losses)
    report = getattr(trainer, "compile_report", None)
    if runner == "trainer compiled" and report is not None:
        out["mode"] = report.mode
        out["report"] = str(report)
        out["graph_breaks"] = report.graph_breaks if hasattr(report, "graph_breaks") else []
    return out


def _kind(model: str) -> str:
    return {"gpt2": "lm", "llama": "lm", "bert": "cls", "vit": "img", "resnet": "img"}[model]


def _subprocess(model: str, runner: str, args: argparse.Namespace, cache_dir: str) -> Dict[str, Any]:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir, TRITON_CACHE_DIR=os.path.join(cache_dir, "triton"))
    cmd = [sys.executable, __file__, "--one", model, runner, "--steps", str(args.steps), "--skip", str(args.skip),
           "--threads", str(args.threads)] + (["--bf16"] if args.bf16 else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("ZOO "):
            return json.loads(line[4:])
    return dict(model=model, runner=runner, error=(proc.stderr or proc.stdout)[-2000:])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--runners", nargs="+", default=list(RUNNERS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="llama under bf16-mixed")
    p.add_argument("--quick", action="store_true", help="gpt2 and bert, 3 steps: a smoke run")
    p.add_argument("--no-cached", action="store_true", help="compiled runners: the cold run only")
    p.add_argument("--repeat", type=int, default=0,
                   help="rounds of extra steady-state runs per model after the cold/cached ones, each runner once per"
                        " round (compiled runners from their cache), in rotated order; the table's samples/s and"
                        " ratios are then each runner's median over all its runs (the VM moves same-graph runs by"
                        " up to 20 %%)")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--json")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "RUNNER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        res = run_one(args.one[0], args.one[1], args.steps, args.skip, args.bf16, args.threads)
        print("ZOO " + json.dumps(res))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            p.error(f"--models: unknown model {m!r}; known: {', '.join(MODELS)}")
    for r in args.runners:
        if r not in RUNNERS:
            p.error(f"--runners: unknown runner {r!r}; known: {', '.join(RUNNERS)}")
    if args.quick:
        models, args.steps, args.skip, args.no_cached = [m for m in models if m in ("gpt2", "bert")] or models[:1], 3, 1, True
    results: List[Dict[str, Any]] = []
    for m in models:
        with tempfile.TemporaryDirectory(prefix="zoo-cache-") as root:
            caches = {r: os.path.join(root, str(i)) for i, r in enumerate(args.runners)}
            for r in args.runners:
                res = _subprocess(m, r, args, caches[r])
                res["cache"] = "cold"
                results.append(res)
                _print_row(res)
                if r in COMPILED and not args.no_cached and "error" not in res:
                    warm = _subprocess(m, r, args, caches[r])
                    warm["cache"] = "cached"
                    results.append(warm)
                    _print_row(warm)
            for k in range(args.repeat):
                for r in args.runners[k % len(args.runners):] + args.runners[:k % len(args.runners)]:
                    res = _subprocess(m, r, args, caches[r])
                    res["cache"] = f"repeat {k + 1}"
                    results.append(res)
                    _print_row(res)
    _print_table(results, models, args.runners, median=args.repeat > 0)
    if args.json:
        meta = dict(python=platform.python_version(), machine=platform.machine(), processor=platform.processor(),
                    threads=args.threads, steps=args.steps, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        try:
            import torch
            import transformers

            meta.update(torch=torch.__version__, transformers=transformers.__version__)
        except ImportError:
            pass
        Path(args.json).write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    return 1 if any("error" in r for r in results) else 0


def _print_row(res: Dict[str, Any]) -> None:
    if "error" in res:
        print(f"{res['model']:7s} {res['runner']:18s} {res['cache']:6s} ERROR {res['error'][-400:]}", flush=True)
        return
    print(f"{res['model']:7s} {res['runner']:18s} {res['cache']:6s} {res['samples_per_s']:9.1f} samples/s"
          f"  warm-up {res['warmup_s']:6.1f}s  final loss {res['final_loss']:.5f}"
          + (f"  [{res.get('report')}]" if res.get("report") else ""), flush=True)


def _print_table(results: List[Dict[str, Any]], models: List[str], runners: List[str], median: bool = False) -> None:
    """Samples/s of the cold runs, or (``median``) each runner's median over all its runs of the model."""
    what = "median samples/s over all runs" if median else "samples/s of the cold run"
    print(f"\n({what})\n| model | " + " | ".join(runners) + " | compiled / Lightning | compiled / Lightning+compile"
          " | warm-up cold / cached | loss rel. diff vs Lightning |")
    print("|---|" + "---:|" * (len(runners) + 4))
    for m in models:
        row = {r["runner"]: r for r in results if r["model"] == m and r.get("cache") == "cold" and "error" not in r}
        cached = {r["runner"]: r for r in results if r["model"] == m and r.get("cache") == "cached" and "error" not in r}
        sps = {r: (statistics.median(x["samples_per_s"] for x in results if x["model"] == m and x["runner"] == r
                                     and "error" not in x) if median else row[r]["samples_per_s"])
               for r in runners if r in row}
        cells = [f"{sps[r]:.1f}" if r in sps else "-" for r in runners]
        ours, pl, plc = row.get("trainer compiled"), row.get("lightning"), row.get("lightning+compile")
        ratio = f"{sps['trainer compiled'] / sps['lightning']:.2f}x" if ours and pl else "-"
        ratio_c = f"{sps['trainer compiled'] / sps['lightning+compile']:.2f}x" if ours and plc else "-"
        warm = "-"
        if ours:
            c = cached.get("trainer compiled")
            warm = f"{ours['warmup_s']:.1f} s / " + (f"{c['warmup_s']:.1f} s" if c else "-")
        diff = (f"{abs(ours['final_loss'] - pl['final_loss']) / abs(pl['final_loss']):.1e}" if ours and pl else "-")
        print(f"| {m} | " + " | ".join(cells) + f" | {ratio} | {ratio_c} | {warm} | {diff} |")


if __name__ == "__main__":
    sys.exit(main())
