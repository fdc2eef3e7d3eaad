"""The DeepSpeed training script run as a subprocess by ``test_deepspeed.py`` (needs ``deepspeed``).

    python tests/distributed/deepspeed_script.py --out DIR [--devices 2] [--strategy deepspeed_stage_2] [--batch 4]
        [--accumulate 1] [--optimizer sgd|adamw] [--clip C] [--precision 32-true] [--ckpt PATH] [--save PATH]
        [--max-steps N] [--max-epochs E] [--compile 0|1] [--checkpointing]

The model and data are ``ddp_script.py``'s (``PlainNet``, ``dataset``). Each rank writes ``DIR/weights_{rank}.pt``
(full fp32 weights: gathered from the ZeRO-3 partitions) and ``DIR/result_{rank}.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_script import PlainNet, dataset  # noqa: E402

import trainer as L  # noqa: E402


class DSNet(PlainNet):
    def configure_optimizers(self):
        if self.opt_name == "cpuadam":  # DeepSpeed's CPU Adam (its C++ op): what ZeRO-Offload requires
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(self.parameters(), lr=0.01, weight_decay=0.01, adamw_mode=True)
        if self.opt_name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=0.01)
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ManualDSNet(DSNet):
    """Manual optimization: ``manual_backward`` is the engine's backward, ``opt.step()`` the engine's step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss)
        opt.step()
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)


def full_weights(trainer, model):
    strategy = trainer.strategy
    if getattr(strategy, "zero_stage_3", False):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            return {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--strategy", default="deepspeed_stage_2")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--max-epochs", type=int, default=1)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--clip", type=float, default=None)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--ckpt", default=None)
    p.add_argument("--save", default=None)
    p.add_argument("--compile", default="0", choices=["0", "1"])
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--validate", action="store_true")
    p.add_argument("--validate-only", action="store_true", help="no fit: validate(ckpt_path=--ckpt)")
    p.add_argument("--manual", action="store_true")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    model = (ManualDSNet if args.manual else DSNet)(optimizer=args.optimizer)
    callbacks = [L.callbacks.ModelCheckpoint(dirpath=os.path.join(args.out, "ckpts"), save_top_k=-1, save_last=True)] \
        if args.checkpointing else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = L.Trainer(
            accelerator="cpu", devices=args.devices, strategy=args.strategy, max_epochs=args.max_epochs,
            max_steps=args.max_steps, accumulate_grad_batches=args.accumulate, precision=args.precision,
            logger=False, enable_checkpointing=args.checkpointing, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=args.out, callbacks=callbacks,
            compile=args.compile == "1", gradient_clip_val=args.clip,
        )
        loader = DataLoader(dataset(), batch_size=args.batch, shuffle=False)
        val_loader = DataLoader(dataset(), batch_size=args.batch)
        t0 = time.time()
        if args.validate_only:
            val = trainer.validate(model, val_loader, ckpt_path=args.ckpt, verbose=False)
        else:
            trainer.fit(model, loader, val_loader, ckpt_path=args.ckpt)
        seconds = time.time() - t0
        if args.save:
            trainer.save_checkpoint(args.save)
        if args.validate:
            val = trainer.validate(model, val_loader, verbose=False)
        elif not args.validate_only:
            val = None
    compile_warnings = [str(w.message) for w in caught if "trainer.compile" in str(w.message)]
    rank = trainer.global_rank
    torch.save(full_weights(trainer, model), os.path.join(args.out, f"weights_{rank}.pt"))
    report = trainer.compile_report
    result = {
        "rank": rank, "world_size": trainer.world_size, "global_step": trainer.global_step, "seconds": seconds,
        "epoch": trainer.current_epoch,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "val": val, "compile_warnings": compile_warnings,
        "compile_mode": report.mode if report else None,
        "engine": type(getattr(trainer.strategy, "_engine", None)).__name__,
        "optimizer": type(trainer.optimizers[0]).__name__ if trainer.optimizers else None,
        "param_dtype": str(next(model.parameters()).dtype),
        "skipped_steps": getattr(getattr(trainer.strategy, "_engine", None), "skipped_steps", None),
    }
    with open(os.path.join(args.out, f"result_{rank}.json"), "w") as f:
        json.dump(result, f)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
