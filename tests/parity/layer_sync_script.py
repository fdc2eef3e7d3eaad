"""Run by ``test_lightning_parity_layer_sync.py`` in a subprocess: a 2-process fit on CPU (gloo) under
pytorch-lightning or ``trainer`` (``--lib``), with ``sync_batchnorm=True`` / ``plugins=[TorchSyncBatchNorm()]``
(``--mode syncbn``/``plugin``) under DDP, or with ``plugins=[FSDPPrecision(...)]`` under FSDP (``--mode fsdp``).
Each rank writes ``result_<rank>.json`` with what it saw."""
from __future__ import annotations

import argparse
import importlib
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=["lightning", "trainer"], required=True)
    p.add_argument("--mode", choices=["syncbn", "plugin", "fsdp"], required=True)
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    L = importlib.import_module("pytorch_lightning" if args.lib == "lightning" else "trainer")
    P = importlib.import_module(L.__name__ + ".plugins")
    seen = {}

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.bn(self.layer(x)))

        def on_train_start(self) -> None:
            seen["bn_in_fit"] = type(self.bn).__name__

        def training_step(self, batch, batch_idx):
            (x,) = batch
            out = self(x)
            seen["out_dtype"] = str(out.dtype)
            seen["param_dtype"] = str(self.layer.weight.dtype)
            seen["bn_param_dtype"] = str(self.bn.weight.dtype)
            return out.float().pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    model = Net()
    kwargs = dict(accelerator="cpu", devices=2, max_steps=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.out)
    if args.mode == "syncbn":
        trainer = L.Trainer(strategy="ddp", sync_batchnorm=True, **kwargs)
    elif args.mode == "plugin":
        trainer = L.Trainer(strategy="ddp", plugins=[P.TorchSyncBatchNorm()], **kwargs)
    else:
        trainer = L.Trainer(strategy="fsdp", plugins=[P.FSDPPrecision(args.precision)], **kwargs)
    plugin = trainer.strategy.precision_plugin
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=4))
    result = {
        "rank": trainer.global_rank, "global_step": trainer.global_step, "precision": trainer.precision,
        "plugin": type(plugin).__name__, "bn_after_fit": type(model.bn).__name__,
        "bn_running_mean_is_finite": bool(torch.isfinite(model.bn.running_mean).all()),
        **seen,
    }
    if args.mode == "fsdp":
        config = trainer.strategy.mixed_precision_config
        result["mp_config"] = [str(config.param_dtype), str(config.reduce_dtype), str(config.buffer_dtype)]
    with open(os.path.join(args.out, f"result_{trainer.global_rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
