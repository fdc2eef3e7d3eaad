"""Where the tuner finds ``lr``/``batch_size``: the module, its ``hparams``, the datamodule, its ``hparams``.

Lightning's ``lightning_hasattr``/``lightning_getattr``/``lightning_setattr`` (``utilities.parsing``), same rules:
reading uses the last holder found, writing sets every holder.
"""
from __future__ import annotations

from typing import Any, List, Optional


def _holders(model: Any, attribute: str) -> List[Any]:
    holders: List[Any] = []
    if hasattr(model, attribute):
        holders.append(model)
    if hasattr(model, "hparams") and attribute in model.hparams:
        holders.append(model.hparams)
    trainer = getattr(model, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None:
        if hasattr(datamodule, attribute):
            holders.append(datamodule)
        if hasattr(datamodule, "hparams") and attribute in datamodule.hparams:
            holders.append(datamodule.hparams)
    return holders


def _missing(attribute: str) -> AttributeError:
    return AttributeError(
        f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the datamodule."
    )


def lightning_hasattr(model: Any, attribute: str) -> bool:
    return bool(_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Optional[Any]:
    holders = _holders(model, attribute)
    if not holders:
        raise _missing(attribute)
    holder = holders[-1]
    return holder[attribute] if isinstance(holder, dict) else getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    holders = _holders(model, attribute)
    if not holders:
        raise _missing(attribute)
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)
