"""A small training script run as a subprocess by the distributed tests (and by torchrun).

    python tests/distributed/ddp_script.py --out DIR [--devices 2] [--strategy ddp] [--batch 4] [--accumulate 1]
        [--fail-rank R] [--state-dict-type full|sharded] [--ckpt PATH] [--max-steps N] [--save PATH]

Each rank writes ``DIR/weights_{rank}.pt`` (its final full weights) and ``DIR/result_{rank}.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
from trainer.strategies import DDPStrategy, FSDPStrategy

N_SAMPLES = 64
COMM_CALLS = [0]


def counting_allreduce_hook(state, bucket):
    """DDP comm hook: counts gradient all-reduces (one per bucket per synchronised backward), then averages."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    COMM_CALLS[0] += 1
    return allreduce_hook(state, bucket)


def dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 16, generator=g)
    y = (x @ torch.randn(16, 1, generator=g)).tanh() + 0.1 * torch.randn(N_SAMPLES, 1, generator=g)
    return TensorDataset(x, y)


class Net(L.LightningModule):
    def __init__(self, fail_rank: int = -1, fail_step: int = 2, optimizer: str = "sgd"):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.head = nn.Linear(32, 1)
        self.fail_rank = fail_rank
        self.fail_step = fail_step
        self.opt_name = optimizer

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        if self.global_rank == self.fail_rank and self.trainer.global_step >= self.fail_step:
            raise ValueError(f"boom on rank {self.global_rank}")
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("rank_mean", float(self.global_rank), on_step=False, on_epoch=True, sync_dist=True)
        self.log("rank_max", float(self.global_rank), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
        self.log("rank_sum", float(self.global_rank), on_step=False, on_epoch=True, sync_dist=True, reduce_fx="sum")
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self):
        if self.opt_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=0.01)
        return torch.optim.SGD(self.parameters(), lr=0.1)


class PlainNet(Net):
    """``Net`` without the rank/step reads in ``training_step`` (they pin a step to the eager engine)."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss


class FailingPlainNet(PlainNet):
    """A compiled step, and a rank that raises outside it (in a batch hook): its peer is then inside
    the step graph's all-reduce, waiting for a rank that will never come."""

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_rank == self.fail_rank and batch_idx == self.fail_step:
            raise ValueError(f"boom on rank {self.global_rank}")


class BatchNormNet(PlainNet):
    """With BatchNorm buffers: DDP broadcasts rank 0's buffers before each synchronised forward."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())


class HookedNet(PlainNet):
    """Overrides ``on_after_backward``: the compiled engine splits the step there (compiled
    forward+backward, the hook on real gradients, then the update), so the all-reduce must have
    run before the hook, as DDP's does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen_grad_norms = []

    def on_after_backward(self):
        self.seen_grad_norms.append(float(self.head.weight.grad.norm()))


class ManualNet(PlainNet):
    """Manual optimization: ``manual_backward`` must arm DDP's reducer (the step runs through DDP)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss)
        opt.step()
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)


class CollectiveCounter(L.Callback):
    """Counts the compiled engine's gradient all-reduces that actually ran (torch.profiler events of
    the functional collective ``_c10d_functional::all_reduce_``, which the step graph calls; the
    ``sync_dist`` logging and DDP's own reducer use other ops), from the 3rd batch on (after the
    graphs are built) to the end of training."""

    def __init__(self):
        self.prof = None
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.prof is None and trainer.current_epoch == 0 and batch_idx == 2:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()
        if self.prof is not None:
            self.batches += 1

    def on_train_end(self, trainer, pl_module):
        if self.prof is not None:
            self.prof.__exit__(None, None, None)

    def count(self):
        return sum(1 for e in self.prof.events() if e.name == "_c10d_functional::all_reduce_")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--strategy", default="ddp")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--state-dict-type", default="full")
    p.add_argument("--ckpt", default=None)
    p.add_argument("--save", default=None)
    p.add_argument("--count-comm", action="store_true")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--record-saves", action="store_true")
    p.add_argument("--compile", default="0", choices=["0", "1", "strict"])
    p.add_argument("--model", default="net", choices=["net", "plain", "batchnorm", "hooked", "manual", "failing"])
    p.add_argument("--clip", type=float, default=None)
    p.add_argument("--count-collectives", action="store_true")
    p.add_argument("--disable", default="", help="comma-separated passes for CompileConfig(disable=...)")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--num-nodes", type=int, default=1)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.record_saves:  # every checkpoint write notes the rank that wrote it
        import trainer.checkpoint as ckpt_mod

        original = ckpt_mod.atomic_save

        def recording_save(obj, path):
            with open(os.path.join(args.out, f"saves_{os.environ.get('RANK', '0')}.txt"), "a") as f:
                f.write(f"{path}\n")
            return original(obj, path)

        ckpt_mod.atomic_save = recording_save

    from datetime import timedelta

    timeout = timedelta(seconds=args.timeout)
    if args.strategy == "ddp":
        strategy = DDPStrategy(timeout=timeout, ddp_comm_hook=counting_allreduce_hook if args.count_comm else None)
    elif args.strategy == "ddp_spawn":
        strategy = DDPStrategy(timeout=timeout, start_method="spawn")
    elif args.strategy == "fsdp":
        strategy = FSDPStrategy(timeout=timeout, state_dict_type=args.state_dict_type, auto_wrap_policy={nn.Linear})
    else:
        strategy = args.strategy
    model_cls = {"net": Net, "plain": PlainNet, "batchnorm": BatchNormNet, "hooked": HookedNet,
                 "manual": ManualNet, "failing": FailingPlainNet}[args.model]
    model = model_cls(fail_rank=args.fail_rank, optimizer=args.optimizer)
    callbacks = [L.callbacks.ModelCheckpoint(dirpath=os.path.join(args.out, "ckpts"), save_top_k=-1)] \
        if args.checkpointing else []
    counter = CollectiveCounter() if args.count_collectives else None
    if counter is not None:
        callbacks.append(counter)
    compile_arg = {"0": False, "1": True, "strict": "strict"}[args.compile]
    if args.disable and compile_arg:
        from trainer.compile import CompileConfig

        compile_arg = CompileConfig(mode="strict" if compile_arg == "strict" else "default",
                                    disable=tuple(args.disable.split(",")))
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, num_nodes=args.num_nodes, strategy=strategy, max_epochs=args.max_epochs,
        max_steps=args.max_steps, accumulate_grad_batches=args.accumulate,
        logger=L.loggers.CSVLogger(args.out) if args.csv else False, log_every_n_steps=1,
        enable_checkpointing=args.checkpointing, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=args.out, callbacks=callbacks or None,
        compile=compile_arg, gradient_clip_val=args.clip,
    )
    loader = DataLoader(dataset(), batch_size=args.batch, shuffle=False)
    val_loader = DataLoader(dataset(), batch_size=args.batch)
    t0 = time.time()
    trainer.fit(model, loader, val_loader, ckpt_path=args.ckpt)
    if args.save:
        trainer.save_checkpoint(args.save)
    state = trainer.strategy.lightning_module_state_dict() if args.strategy != "fsdp" else None
    if args.strategy == "fsdp":  # full weights on every rank for the comparison
        from torch.distributed.tensor import DTensor

        state = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu()
                 for k, v in model.state_dict().items()}
    rank = trainer.global_rank
    report = trainer.compile_report
    torch.save(state, os.path.join(args.out, f"weights_{rank}.pt"))
    result = {
        "rank": rank, "world_size": trainer.world_size, "local_rank": trainer.local_rank,
        "node_rank": trainer.node_rank, "is_global_zero": trainer.is_global_zero,
        "global_step": trainer.global_step, "comm_calls": COMM_CALLS[0], "seconds": time.time() - t0,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "env_rank": os.environ.get("RANK"), "torchelastic": "TORCHELASTIC_RUN_ID" in os.environ,
        "pid": os.getpid(), "compile_mode": report.mode if report else None,
        "compile_fallback": report.fallback_reason if report else None,
        "graph_keys": report.graph_keys if report else None,
        "collectives": counter.count() if counter is not None else None,
        "counted_batches": counter.batches if counter is not None else None,
        "seen_grad_norms": getattr(model, "seen_grad_norms", None),
    }
    gathered = trainer.strategy.all_gather(torch.tensor([float(rank)]))
    result["all_gather"] = gathered.flatten().tolist()
    with open(os.path.join(args.out, f"result_{rank}.json"), "w") as f:
        json.dump(result, f)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
