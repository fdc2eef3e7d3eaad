"""Lists the public names of pytorch-lightning's user-facing modules that ``trainer`` lacks at the same path.

    python scripts/lightning_names.py        # prints "module: missing names", exits 1 when any is missing

A module's public names are its ``__all__``, or (without one) the names it defines itself, not what it imports.
``KNOWN_ABSENT`` lists what is deliberately not provided, with the reason; those are not reported.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from types import ModuleType
from typing import Dict, List

#: Lightning's modules that scripts import, and the commonly imported ``utilities`` submodules
MODULES = (
    "", ".callbacks", ".loggers", ".profilers", ".tuner", ".cli", ".plugins", ".plugins.precision",
    ".plugins.environments", ".plugins.io", ".utilities", ".utilities.rank_zero", ".utilities.types",
    ".utilities.model_summary", ".utilities.seed", ".utilities.grads", ".utilities.memory", ".utilities.exceptions",
    ".utilities.combined_loader", ".utilities.parsing", ".utilities.model_helpers", ".utilities.deepspeed",
    ".utilities.data", ".utilities.warnings",
)

#: (module, name) -> why ``trainer`` does not provide it
KNOWN_ABSENT: Dict[tuple, str] = {
    (".utilities.model_helpers", "get_torchvision_model"): "torchvision is not a dependency",
    (".utilities.parsing", "clean_namespace"): "internal to Lightning's hparams handling",
    (".utilities.parsing", "collect_init_args"): "internal; LightningModule.save_hyperparameters collects them",
    (".utilities.parsing", "get_init_args"): "internal; LightningModule.save_hyperparameters collects them",
    (".utilities.parsing", "parse_class_init_keys"): "internal to Lightning's hparams handling",
    (".utilities.parsing", "save_hyperparameters"): "use LightningModule.save_hyperparameters",
    (".utilities.model_summary", "DeepSpeedSummary"): "DeepSpeed's partitioned-parameter summary is not implemented",
    (".utilities.deepspeed", "ds_checkpoint_dir"): "internal helper of the conversion",
}


def public_names(module: ModuleType) -> List[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
        and getattr(value, "__module__", module.__name__).startswith(module.__name__)
        and (inspect.isclass(value) or inspect.isfunction(value))
    )


def missing_names() -> Dict[str, List[str]]:
    """``{lightning module suffix: [names trainer lacks there]}`` (``KNOWN_ABSENT`` left out)."""
    out: Dict[str, List[str]] = {}
    for suffix in MODULES:
        lightning = importlib.import_module("pytorch_lightning" + suffix)
        try:
            ours = importlib.import_module("trainer" + suffix)
        except ImportError:
            out[suffix or "(top)"] = ["<the module itself>"]
            continue
        missing = [n for n in public_names(lightning) if not hasattr(ours, n) and (suffix, n) not in KNOWN_ABSENT]
        if missing:
            out[suffix or "(top)"] = missing
    return out


if __name__ == "__main__":
    found = missing_names()
    for module, names in found.items():
        print(f"{module}: {', '.join(names)}")
    sys.exit(1 if found else 0)
