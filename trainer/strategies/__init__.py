"""Strategies: how the step runs on one or many devices, and ``resolve_strategy`` (the Trainer's choice)."""
from __future__ import annotations

from typing import Any, Union

from trainer.exceptions import MisconfigurationException
from trainer.strategies.ddp import DDPSpawnStrategy, DDPStrategy
from trainer.strategies.deepspeed import (
    DEEPSPEED_STRATEGIES,
    DeepSpeedStrategy,
    _require_deepspeed,
    convert_zero_checkpoint_to_fp32_state_dict,
)
from trainer.strategies.environment import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_environment,
)
from trainer.strategies.fsdp import FSDPStrategy, convert_sharded_checkpoint
from trainer.strategies.single_device import SingleDeviceStrategy
from trainer.strategies.strategy import Strategy

#: Lightning's registered strategy names this Trainer accepts
STRATEGY_NAMES = (
    "auto", "single_device", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_true", "fsdp", "fsdp_cpu_offload", *DEEPSPEED_STRATEGIES,
)


def _from_name(name: str) -> Strategy:
    env = detect_environment()
    if name in ("ddp", "ddp_find_unused_parameters_true"):
        return DDPStrategy(cluster_environment=env, find_unused_parameters=name.endswith("_true"))
    if name in ("ddp_spawn", "ddp_spawn_find_unused_parameters_true"):
        return DDPStrategy(cluster_environment=env, start_method="spawn", find_unused_parameters=name.endswith("_true"))
    if name in ("ddp_fork", "ddp_notebook"):
        return DDPStrategy(cluster_environment=env, start_method="fork")
    if name == "fsdp":
        return FSDPStrategy(cluster_environment=env)
    if name == "fsdp_cpu_offload":
        return FSDPStrategy(cluster_environment=env, cpu_offload=True)
    _require_deepspeed(name)
    return DeepSpeedStrategy(cluster_environment=env, **DEEPSPEED_STRATEGIES[name])


def resolve_strategy(strategy: Union[str, Strategy], accelerator: str, device_spec: Any, num_nodes: int,
                     **_: Any) -> Strategy:
    """``Trainer(strategy=..., accelerator=..., devices=..., num_nodes=...)`` -> a configured ``Strategy``.

    ``"auto"``: DDP when ``devices * num_nodes > 1`` or when ``torchrun``/SLURM started several processes, else
    one device. Every bad combination raises ``MisconfigurationException`` here, at construction.
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise MisconfigurationException(f"`Trainer(num_nodes={num_nodes!r})` is invalid: expected an int >= 1.")
    num_devices = device_spec.num_devices
    if isinstance(strategy, str):
        name = strategy.lower()
        if name not in STRATEGY_NAMES:
            raise MisconfigurationException(
                f"`Trainer(strategy={strategy!r})` is invalid: allowed values are {list(STRATEGY_NAMES)} or a"
                " Strategy instance."
            )
        if name == "auto":
            env = detect_environment()
            external = env.creates_processes_externally and not isinstance(env, LightningEnvironment)
            if num_devices * num_nodes > 1 or (external and env.world_size() > 1):
                name = "ddp"
            else:
                name = "single_device"
        if name == "single_device":
            strategy = SingleDeviceStrategy()
        else:
            strategy = _from_name(name)
    elif not isinstance(strategy, Strategy):
        raise MisconfigurationException(
            f"`Trainer(strategy={strategy!r})` is invalid: allowed values are {list(STRATEGY_NAMES)} or a Strategy"
            " instance."
        )
    if isinstance(strategy, DDPStrategy):
        strategy._configure(accelerator, device_spec.device_ids, num_nodes)
    elif num_devices > 1 or num_nodes > 1:
        raise MisconfigurationException(
            f"`Trainer(strategy={type(strategy).__name__}, devices={num_devices}, num_nodes={num_nodes})`: a"
            f" single-device strategy cannot run on {num_devices * num_nodes} devices; use strategy='ddp' (or"
            " 'auto', 'fsdp') or devices=1, num_nodes=1."
        )
    return strategy


__all__ = [
    "Strategy", "SingleDeviceStrategy", "DDPStrategy", "DDPSpawnStrategy", "FSDPStrategy", "DeepSpeedStrategy",
    "ClusterEnvironment", "LightningEnvironment", "TorchElasticEnvironment", "SLURMEnvironment",
    "detect_environment", "resolve_strategy", "convert_sharded_checkpoint", "STRATEGY_NAMES",
    "convert_zero_checkpoint_to_fp32_state_dict",
]
