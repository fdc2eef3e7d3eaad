"""Lightning's layer-sync plugins: ``LayerSync`` (the interface) and ``TorchSyncBatchNorm``.

``Trainer(sync_batchnorm=True)`` or ``plugins=[TorchSyncBatchNorm()]`` (or a ``LayerSync`` subclass of one's own):
the DDP and FSDP strategies apply it to the LightningModule when ``fit`` sets up, and the DDP strategies revert it
at teardown. Other strategies (one device) ignore it, as Lightning's do.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.nn import Module


class LayerSync(ABC):
    """Wraps layers of a model with synchronisation across processes (``apply``) and undoes it (``revert``)."""

    @abstractmethod
    def apply(self, model: Module) -> Module:
        """Returns ``model`` with its layers synchronised (converted in place where the root is not converted)."""

    @abstractmethod
    def revert(self, model: Module) -> Module:
        """Undoes :meth:`apply`."""


class TorchSyncBatchNorm(LayerSync):
    """Every ``BatchNorm*d`` becomes a ``torch.nn.SyncBatchNorm`` (statistics over all processes); ``revert`` turns
    each ``SyncBatchNorm`` back into a plain batch norm that shares its parameters and running statistics."""

    def apply(self, model: Module) -> Module:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def revert(self, model: Module) -> Module:
        converted = _plain_batchnorm(model) if isinstance(model, torch.nn.SyncBatchNorm) else model
        for name, child in model.named_children():
            converted.add_module(name, self.revert(child))
        return converted


def _plain_batchnorm(sync: torch.nn.SyncBatchNorm) -> Module:
    """A batch norm of any rank (the original 1d/2d/3d class is not recorded) holding ``sync``'s tensors."""
    plain = _BatchNormXd(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
    if sync.affine:
        plain.weight = sync.weight
        plain.bias = sync.bias
    plain.running_mean = sync.running_mean
    plain.running_var = sync.running_var
    plain.num_batches_tracked = sync.num_batches_tracked
    if hasattr(sync, "qconfig"):
        plain.qconfig = sync.qconfig
    return plain


class _BatchNormXd(torch.nn.modules.batchnorm._BatchNorm):
    """Lightning's name for the reverted layer: a batch norm that accepts input of any rank."""

    def _check_input_dim(self, input: Tensor) -> None:
        return


__all__ = ["LayerSync", "TorchSyncBatchNorm"]
