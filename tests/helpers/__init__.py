"""Shared test helpers: framework selection, tiny deterministic data/models, hook recording.

Every helper takes the framework module ``L`` (``pytorch_lightning`` or ``trainer``) so that one
piece of LightningModule/Callback code runs under both and the results can be compared.
"""
from .data import IN_FEATURES, OUT_FEATURES, InputOnlyDataset, make_dataset, make_loader, make_tensors
from .frameworks import (
    FRAMEWORK_NAMES,
    LIGHTNING,
    TRAINER,
    compiled_engine,
    import_framework,
    misconfiguration_exception,
    quiet_trainer_kwargs,
)
from .models import boring_model_class, datamodule_class, make_reference_net, mlp_module_class, state
from .recorder import (
    CALLBACK_HOOKS,
    DATAMODULE_HOOKS,
    MODULE_HOOKS,
    make_hook_recorder,
    make_recording_datamodule,
    make_recording_module,
    module_and_recorder,
    recording_module_class,
)

__all__ = [name for name in dir() if not name.startswith("_")]
