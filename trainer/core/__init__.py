"""Lightning's ``lightning.pytorch.core`` import paths: ``core.module``, ``core.datamodule``,
``core.hooks``, ``core.saving``, ``core.mixins``, ``core.optimizer`` (``configure_optimizers`` parsing,
scheduler configs, ``LightningOptimizer``: Lightning's module of that name).

``trainer.core.module``/``datamodule``/``hooks`` are the very modules ``trainer.module``, ... (not
re-exports), so a Lightning test that patches ``...core.datamodule.DataLoader`` patches what
``from_datasets`` calls.
"""
import sys as _sys

from trainer import datamodule, hooks, module
from trainer.core import mixins, optimizer, saving
from trainer.datamodule import LightningDataModule
from trainer.module import LightningModule

for _name, _module in (("module", module), ("datamodule", datamodule), ("hooks", hooks)):
    _sys.modules[f"{__name__}.{_name}"] = _module

__all__ = ["LightningDataModule", "LightningModule", "datamodule", "hooks", "mixins", "module", "optimizer", "saving"]
