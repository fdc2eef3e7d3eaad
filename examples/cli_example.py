"""Train a small classifier from the command line with ``LightningCLI`` (no download: synthetic data).

An ordinary Lightning CLI script: only the imports differ from the Lightning version
(``from trainer.cli import LightningCLI`` for ``from lightning.pytorch.cli import LightningCLI``).
Every ``__init__`` argument of the model, the datamodule and the Trainer is a command-line option and a key of
the config file; the resolved config is saved as ``config.yaml`` in the run's log dir.

    python examples/cli_example.py fit --config examples/cli_example.yaml
    python examples/cli_example.py fit --config examples/cli_example.yaml --trainer.max_epochs=1 --model.hidden=32
    python examples/cli_example.py fit --config examples/cli_example.yaml --optimizer=Adam --optimizer.lr=0.01
    python examples/cli_example.py fit --print_config          # the full config with every default
    python examples/cli_example.py validate --config examples/cli_example.yaml --ckpt_path=path/to.ckpt
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import trainer as L
from trainer.cli import LightningCLI


class SpiralsDataModule(L.LightningDataModule):
    """Points on ``classes`` interleaved noisy spirals in 2-D, split into train and validation sets.

    Args:
        n: Number of points (split evenly between the classes).
        classes: Number of spiral arms (= classes).
        noise: Standard deviation of the Gaussian noise added to each point.
        val_fraction: Fraction of the points held out for validation.
        batch_size: Batch size of both loaders.
        seed: Seed of the data (independent of the global RNG).
    """

    def __init__(
        self,
        n: int = 1200,
        classes: int = 3,
        noise: float = 0.15,
        val_fraction: float = 0.2,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.n = n
        self.classes = classes
        self.noise = noise
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.seed)
        per_class = self.n // self.classes
        radius = torch.linspace(0.1, 1.0, per_class)
        xs, ys = [], []
        for c in range(self.classes):
            angle = radius * 4.0 + c * 2 * math.pi / self.classes
            angle = angle + torch.randn(per_class, generator=g) * self.noise
            xs.append(torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1))
            ys.append(torch.full((per_class,), c, dtype=torch.long))
        dataset = TensorDataset(torch.cat(xs), torch.cat(ys))
        n_val = int(len(dataset) * self.val_fraction)
        self.train_set, self.val_set = random_split(dataset, [len(dataset) - n_val, n_val], generator=g)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


class SpiralClassifier(L.LightningModule):
    """A small MLP classifier.

    Args:
        hidden: Width of the hidden layers.
        classes: Number of output classes (linked from ``data.classes`` by the CLI below).
        lr: Learning rate of the default optimizer (``--optimizer`` replaces it).
    """

    def __init__(self, hidden: int = 64, classes: int = 3, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class SpiralsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # the model's output size always follows the data: `--model.classes` is not an option
        parser.link_arguments("data.classes", "model.classes")


def main() -> None:
    SpiralsCLI(SpiralClassifier, SpiralsDataModule)


if __name__ == "__main__":
    main()
