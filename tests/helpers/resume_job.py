"""A training job for the exact-resume tests, run as a subprocess.

    python resume_job.py OUT SCENARIO [--kill-at-batch N] [--resume CKPT]

It trains a small dropout MLP on shuffled data (so data order and RNG both matter), saves
checkpoints as the scenario says, optionally SIGKILLs itself at global batch N (after the
checkpoint), and writes the final weights to OUT/final.pt.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import trainer as L  # noqa: E402
from trainer.callbacks import ModelCheckpoint  # noqa: E402


class Net(L.LightningModule):
    def __init__(self, scheduler: str = "step") -> None:
        super().__init__()
        self.scheduler = scheduler
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.05)
        if self.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
            return {"optimizer": opt, "lr_scheduler": sched, "monitor": "val_loss"}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SaveAt(L.Callback):
    """Writes OUT/manual.ckpt in on_train_batch_end of global batch ``at`` (mid accumulation window)."""

    def __init__(self, out: str, at: int) -> None:
        self.out, self.at, self.seen = out, at, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.at:
            trainer.save_checkpoint(os.path.join(self.out, "manual.ckpt"))


class RecordStart(L.Callback):
    """Writes the global step the run starts from (0, or the resumed checkpoint's step)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module):
        with open(os.path.join(self.out, "start.txt"), "w") as f:
            f.write(f"{trainer.global_step} {trainer.current_epoch}")


class KillAt(L.Callback):
    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("scenario", choices=["mid_window", "last_step", "val_mid_epoch", "plateau"])
    ap.add_argument("--kill-at-batch", type=int, default=0)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    L.seed_everything(1234)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(44, 6, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(44, 1, generator=g)
    ds = TensorDataset(x, y)
    train = DataLoader(ds, batch_size=4, shuffle=True)  # 11 batches: the last accumulation window is short
    val = DataLoader(ds, batch_size=11)
    callbacks: list = [RecordStart(args.out)]
    kwargs: dict = dict(max_epochs=3, accumulate_grad_batches=2, gradient_clip_val=0.5)
    scenario = args.scenario
    if scenario == "mid_window":
        callbacks.append(SaveAt(args.out, at=15))  # epoch 1, batch 4: first micro-batch of a window
    elif scenario == "last_step":
        callbacks.append(ModelCheckpoint(dirpath=args.out, every_n_train_steps=4, save_last=True, save_top_k=-1))
    elif scenario == "val_mid_epoch":
        kwargs["val_check_interval"] = 0.5
        callbacks.append(ModelCheckpoint(dirpath=args.out, monitor="val_loss", save_last=True))
    else:
        callbacks.append(ModelCheckpoint(dirpath=args.out, monitor="val_loss", save_last=True))
    if args.kill_at_batch:
        callbacks.append(KillAt(args.kill_at_batch))
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        default_root_dir=args.out, num_sanity_val_steps=1, **kwargs,
    )
    model = Net("plateau" if scenario == "plateau" else "step")
    trainer.fit(model, train, val, ckpt_path=args.resume)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(args.out, "final.pt"))
    torch.save(trainer.optimizers[0].state_dict(), os.path.join(args.out, "optim.pt"))
    print("global_step", trainer.global_step)


if __name__ == "__main__":
    main()
