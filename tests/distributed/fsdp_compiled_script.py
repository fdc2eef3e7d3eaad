"""The training script of ``test_fsdp_compiled.py`` (a subprocess per run; the 1-device reference in-process).

    python tests/distributed/fsdp_compiled_script.py --out DIR [--devices 2] [--strategy fsdp|auto]
        [--compile 0|1|strict] [--accumulate K] [--clip V] [--optimizer adamw|sgd] [--state-dict-type full|sharded]
        [--max-epochs N] [--save PATH] [--ckpt PATH] [--detect-anomaly]

The model has FSDP units worth compiling (two residual blocks, ``auto_wrap_policy={Block}``) and parameters
that only the root unit owns (``inp``, ``head``; ``head.weight`` has one row: rank 1's shard of it is empty).
Each rank writes ``DIR/weights_{rank}.pt`` (full weights) and ``DIR/result_{rank}.json`` (steps,
``compile_report``, FSDP2 reduce-scatter calls).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
from trainer.strategies import FSDPStrategy

REDUCE_SCATTERS = [0]


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    y = (x @ torch.randn(16, 1, generator=g)).tanh() + 0.1 * torch.randn(64, 1, generator=g)
    return TensorDataset(x, y)


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))


class Net(L.LightningModule):
    def __init__(self, optimizer: str = "adamw") -> None:
        super().__init__()
        torch.manual_seed(1)
        self.opt_name = optimizer
        self.inp = nn.Linear(16, 32)
        self.blocks = nn.ModuleList([Block(32), Block(32)])
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.inp(x))
        x = self.blocks[1](self.blocks[0](x))
        return self.head(torch.tanh(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        if self.opt_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.01)


def _count_reduce_scatters() -> None:
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as pg

    original = pg.foreach_reduce

    def counting(*args, **kwargs):
        REDUCE_SCATTERS[0] += 1
        return original(*args, **kwargs)

    pg.foreach_reduce = counting


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--strategy", default="fsdp")
    p.add_argument("--compile", default="1")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--clip", type=float, default=None)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--state-dict-type", default="full")
    p.add_argument("--save", default=None)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--detect-anomaly", action="store_true")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    compile_arg = {"0": False, "1": True, "strict": "strict"}[args.compile]
    if args.strategy == "fsdp":
        _count_reduce_scatters()
        strategy = FSDPStrategy(state_dict_type=args.state_dict_type, auto_wrap_policy={Block})
    else:
        strategy = args.strategy
    model = Net(args.optimizer)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=strategy, max_epochs=args.max_epochs,
        accumulate_grad_batches=args.accumulate, gradient_clip_val=args.clip, compile=compile_arg, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=args.out, detect_anomaly=args.detect_anomaly,
    )
    trainer.fit(model, DataLoader(dataset(), batch_size=args.batch, shuffle=False), ckpt_path=args.ckpt)
    if args.save:
        trainer.save_checkpoint(args.save)
    from torch.distributed.tensor import DTensor

    state = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in model.state_dict().items()}
    rank = trainer.global_rank
    torch.save(state, os.path.join(args.out, f"weights_{rank}.pt"))
    report = trainer.compile_report
    result = {
        "rank": rank, "global_step": trainer.global_step, "reduce_scatters": REDUCE_SCATTERS[0],
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "compile": None if report is None else {
            "mode": report.mode, "graphs_built": report.graphs_built, "graph_keys": report.graph_keys,
            "compile_seconds": report.compile_seconds, "update_compiled": report.update_compiled,
            "steps_run": report.steps_run, "fallback_reason": report.fallback_reason, "str": str(report),
            "recompiles": report.recompiles, "passes_applied": report.passes_applied,
        },
    }
    with open(os.path.join(args.out, f"result_{rank}.json"), "w") as f:
        json.dump(result, f)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
