"""Train a small CNN on scikit-learn's bundled 8x8 digits (1,797 images; no download).

This is an ordinary Lightning 2.x script. The only line that differs from the Lightning version is
the import: ``import trainer as L`` instead of ``import lightning.pytorch as L``.
``--framework lightning`` runs the very same code under pytorch_lightning, to show the swap.

    python examples/train_digits.py                         # trainer, 15 epochs, into runs/digits
    python examples/train_digits.py --framework lightning   # the same script under Lightning
    python examples/train_digits.py --epochs 5 --out /tmp/digits --no-compile

At the end it prints the validation accuracy (exit code 1 if below 0.95), the paths of the
checkpoints and of the CSV log, and the training throughput in samples/s (time spent in training
epochs only: validation and the sanity check are excluded), over all epochs and without the first
(which holds a compiled engine's compile time). It also writes ``summary.json`` into
the run folder (the test reads it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

ACCURACY_FLOOR = 0.95  # the run fails (exit code 1) below this


def _framework_from_argv(argv: Sequence[str]) -> str:
    """``--framework`` has to be known before the classes below are defined (they subclass
    ``L.LightningModule``), so it is read here, ahead of the full argument parsing in main()."""
    for i, arg in enumerate(argv):
        if arg == "--framework" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--framework="):
            return arg.split("=", 1)[1]
    return os.environ.get("DIGITS_FRAMEWORK", "trainer")


FRAMEWORK = _framework_from_argv(sys.argv[1:])
if FRAMEWORK == "lightning":
    import pytorch_lightning as L
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger
else:
    import trainer as L  # <- the one-line swap: everything below is plain Lightning API
    from trainer.callbacks import ModelCheckpoint
    from trainer.loggers import CSVLogger


class DigitsDataModule(L.LightningDataModule):
    """load_digits, scaled to [0, 1], as (N, 1, 8, 8) images; stratified, seeded 80/20 split."""

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed

    def setup(self, stage: Optional[str] = None) -> None:
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        idx_train, idx_val = train_test_split(
            torch.arange(len(y)).numpy(), test_size=self.val_fraction,
            stratify=y.numpy(), random_state=self.seed)
        self.train_set = TensorDataset(x[idx_train], y[idx_train])
        self.val_set = TensorDataset(x[idx_val], y[idx_val])

    # num_workers=0: the whole data set is 460 KB in memory; worker processes would only add
    # start-up time and compete for the 2 cores this is meant to run on.
    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512, shuffle=False, num_workers=0)


class DigitsCNN(L.LightningModule):
    """Two 3x3 conv layers, a max-pool and a two-layer classifier head (~150k parameters)."""

    def __init__(self, lr: float = 2e-3, weight_decay: float = 1e-4, max_epochs: int = 15) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class TrainThroughput(L.Callback):
    """Training samples/s over the fit, counting only time inside training epochs.

    In Lightning 2.x validation runs inside the training epoch (after its last batch, before
    ``on_train_epoch_end``), so the clock stops at ``on_validation_start`` as well.
    """

    def __init__(self) -> None:
        self.epochs: List[List[float]] = []  # [samples, seconds] per training epoch
        self._t0: Optional[float] = None

    def _stop(self) -> None:
        if self._t0 is not None:
            self.epochs[-1][1] += time.perf_counter() - self._t0
            self._t0 = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.epochs.append([0, 0.0])
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.epochs[-1][0] += len(batch[0])  # a shape, no device sync

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    @property
    def samples(self) -> int:
        return int(sum(e[0] for e in self.epochs))

    @property
    def seconds(self) -> float:
        return sum(e[1] for e in self.epochs)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_samples_per_s(self) -> float:
        """Without the first epoch, which carries one-off costs (a compiled engine's compile, lazy init)."""
        rest = self.epochs[1:]
        secs = sum(e[1] for e in rest)
        return sum(e[0] for e in rest) / secs if secs > 0 else float("nan")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Accuracy of ``model`` as it is now, computed in plain PyTorch (no framework involved)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(dim=1)
        correct += int((pred.cpu() == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / total


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/digits"), help="run folder (logs, checkpoints)")
    p.add_argument("--framework", choices=["trainer", "lightning"], default=FRAMEWORK,
                   help="trainer: `import trainer as L`; lightning: `import pytorch_lightning as L`")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="trainer's compiled engine on/off (Trainer(compile=...)); default: the Trainer's own "
                        "default. Ignored, with a note, where the Trainer has no `compile` argument.")
    p.add_argument("--no-progress-bar", dest="progress_bar", action="store_false")
    args = p.parse_args(argv)
    if args.framework != FRAMEWORK:
        # The classes above already subclass the framework chosen at import time.
        p.error(f"--framework {args.framework} must be given on the command line (this module was "
                f"imported with {FRAMEWORK}); or set DIGITS_FRAMEWORK={args.framework}")
    return args


def trainer_extra_kwargs(compile_flag: Optional[bool]) -> Dict[str, Any]:
    """``compile=`` only where this Trainer takes it (Lightning's does not; trainer's will)."""
    if compile_flag is None:
        return {}
    import inspect
    if "compile" in inspect.signature(L.Trainer.__init__).parameters:
        return {"compile": compile_flag}
    print(f"note: {FRAMEWORK}'s Trainer has no `compile` argument; --{'' if compile_flag else 'no-'}compile ignored")
    return {}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    # Lightning warns that num_workers=0 may be a bottleneck; here it is the right choice (see above).
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    L.seed_everything(args.seed, workers=True)
    datamodule = DigitsDataModule(batch_size=args.batch_size, seed=args.seed)
    model = DigitsCNN(lr=args.lr, max_epochs=args.epochs)

    args.out.mkdir(parents=True, exist_ok=True)
    logger = CSVLogger(save_dir=str(args.out), name="logs")
    run_dir = Path(logger.log_dir)  # <out>/logs/version_N: a fresh folder per run
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="digits-{epoch:02d}-{val_acc:.4f}",
                                 monitor="val_acc", mode="max", save_last=True)
    throughput = TrainThroughput()

    trainer = L.Trainer(
        max_epochs=args.epochs,
        logger=logger,
        callbacks=[checkpoint, throughput],
        enable_progress_bar=args.progress_bar,
        log_every_n_steps=10,
        **trainer_extra_kwargs(args.compile),
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - t0

    val_acc = evaluate(model, datamodule.val_dataloader())
    logged = trainer.callback_metrics.get("val_acc")
    metrics_csv = run_dir / "metrics.csv"
    best = checkpoint.best_model_score
    summary = {
        "framework": FRAMEWORK,
        "epochs": args.epochs,
        "val_acc": val_acc,
        "val_acc_logged": float(logged) if logged is not None else None,
        "best_val_acc": float(best) if best is not None else None,
        "best_checkpoint": str(checkpoint.best_model_path),
        "last_checkpoint": str(checkpoint.last_model_path),
        "metrics_csv": str(metrics_csv),
        "train_samples": throughput.samples,
        "train_seconds": throughput.seconds,
        "train_samples_per_s": throughput.samples_per_s,
        "train_samples_per_s_after_first_epoch": throughput.steady_samples_per_s,
        "fit_seconds": fit_seconds,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\nframework        : {FRAMEWORK} ({L.__name__} {getattr(L, '__version__', '')})".rstrip())
    print(f"val accuracy     : {val_acc:.4f} (final weights; logged val_acc "
          f"{summary['val_acc_logged'] if logged is None else f'{float(logged):.4f}'}, best "
          f"{'n/a' if best is None else f'{float(best):.4f}'})")
    print(f"best checkpoint  : {checkpoint.best_model_path}")
    print(f"last checkpoint  : {checkpoint.last_model_path}")
    print(f"CSV metrics      : {metrics_csv}")
    print(f"throughput       : {throughput.samples_per_s:,.0f} training samples/s "
          f"({throughput.samples} samples in {throughput.seconds:.2f} s of training epochs, validation "
          f"excluded; whole fit {fit_seconds:.2f} s; torch threads {torch.get_num_threads()}); "
          f"{throughput.steady_samples_per_s:,.0f} samples/s after the first epoch (no compile/warm-up)")
    print(f"summary          : {run_dir / 'summary.json'}")
    return summary


if __name__ == "__main__":
    result = main()
    if result["val_acc"] < ACCURACY_FLOOR:
        print(f"FAILED: validation accuracy {result['val_acc']:.4f} < {ACCURACY_FLOOR}", file=sys.stderr)
        sys.exit(1)
