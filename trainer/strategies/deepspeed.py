"""DeepSpeed ZeRO stages through the ``deepspeed`` package.

``deepspeed`` is an optional dependency: without it, ``Trainer(strategy="deepspeed_stage_2")`` (or a
``DeepSpeedStrategy``) raises ``MisconfigurationException`` at construction saying how to install it. With
it installed, the engine is not wired into this Trainer yet, which is said just as clearly.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Dict, Optional

from trainer.exceptions import MisconfigurationException

#: Lightning's registered names -> ZeRO settings
DEEPSPEED_STRATEGIES: Dict[str, Dict[str, Any]] = {
    "deepspeed": {"stage": 2},
    "deepspeed_stage_1": {"stage": 1},
    "deepspeed_stage_2": {"stage": 2},
    "deepspeed_stage_2_offload": {"stage": 2, "offload_optimizer": True},
    "deepspeed_stage_3": {"stage": 3},
    "deepspeed_stage_3_offload": {"stage": 3, "offload_optimizer": True, "offload_parameters": True},
    "deepspeed_stage_3_offload_nvme": {
        "stage": 3, "offload_optimizer": True, "offload_parameters": True, "remote_device": "nvme",
    },
}


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def _require_deepspeed(name: str) -> None:
    if not deepspeed_available():
        raise MisconfigurationException(
            f"`Trainer(strategy={name!r})` needs the `deepspeed` package, which is not installed. Install it with"
            " `pip install deepspeed` (it needs a CUDA toolkit matching your PyTorch build), or use"
            " `strategy='fsdp'` (sharded parameters/gradients/optimizer state through PyTorch alone)."
        )


class DeepSpeedStrategy:
    """Placeholder with Lightning's name: checks the ``deepspeed`` package at construction."""

    strategy_name = "deepspeed"

    def __init__(self, stage: int = 2, offload_optimizer: bool = False, offload_parameters: bool = False,
                 remote_device: Optional[str] = None, **kwargs: Any) -> None:
        _require_deepspeed(f"deepspeed_stage_{stage}")
        raise MisconfigurationException(
            "`deepspeed` is installed, but this version of `trainer` does not drive the DeepSpeed engine yet;"
            " use `strategy='fsdp'` (ZeRO-3 equivalent) or `strategy='ddp'`."
        )


def build_deepspeed(name: str) -> Any:
    _require_deepspeed(name)
    return DeepSpeedStrategy(**DEEPSPEED_STRATEGIES[name])


__all__ = ["DeepSpeedStrategy", "DEEPSPEED_STRATEGIES", "deepspeed_available", "build_deepspeed"]
