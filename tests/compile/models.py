"""Tiny models shared by the compiled-engine tests (CPU compiles are slow: keep them tiny)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import trainer as L


class DictDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"x": self.x[i], "y": self.y[i]}


def make_data(n: int = 100, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)


class MLP(L.LightningModule):
    """8-16-4 MLP. ``opt``: 'adamw' | 'sgd' | 'adam_amsgrad'; ``sched``: None | 'step' | 'epoch'."""

    def __init__(self, opt: str = "adamw", sched=None, bn: bool = False, dict_batch: bool = False,
                 n: int = 100, batch_size: int = 16, groups: bool = False, frozen: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Linear(8, 16, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(16))
        layers += [nn.Tanh(), nn.Linear(16, 4)]
        self.net = nn.Sequential(*layers)
        if frozen:
            self.net[0].weight.requires_grad_(False)
        self.opt, self.sched, self.dict_batch, self.n, self.bs, self.groups = opt, sched, dict_batch, n, batch_size, groups

    def training_step(self, batch, batch_idx):
        x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch
        out = self.net(x)
        loss = F.cross_entropy(out, y)
        self.log("train_loss", loss)
        self.log("acc", (out.argmax(-1) == y).float().mean(), prog_bar=True, on_epoch=True)
        return {"loss": loss, "n": 3}

    def configure_optimizers(self):
        if self.groups:
            params = [{"params": self.net[0].parameters(), "lr": 0.05, "weight_decay": 0.0},
                      {"params": self.net[-1].parameters()}]
        else:
            params = [p for p in self.parameters() if p.requires_grad]
        if self.opt == "sgd":
            opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        elif self.opt == "adam_amsgrad":
            opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3, amsgrad=True)
        else:
            opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2)
        if self.sched == "step":
            s = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "step"}}
        if self.sched == "epoch":
            return [opt], [torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)]
        return opt

    def train_dataloader(self):
        x, y = make_data(self.n)
        ds = DictDataset(x, y) if self.dict_batch else TensorDataset(x, y)
        return DataLoader(ds, batch_size=self.bs)


def fit(model: L.LightningModule, compile, epochs: int = 2, **kw):
    trainer = L.Trainer(max_epochs=epochs, compile=compile, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)
    trainer.fit(model)
    return trainer


def max_rel_diff(a: nn.Module, b: nn.Module) -> float:
    worst = 0.0
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        if not torch.is_floating_point(p):
            assert torch.equal(p, q), n
            continue
        worst = max(worst, ((p - q).abs().max() / q.abs().max().clamp_min(1e-12)).item())
    return worst
