"""Lightning's ``plugins.environments``: where a process's rank and rendezvous come from (one implementation,
:mod:`trainer.strategies.environment`)."""
from trainer.strategies.environment import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

__all__ = ["ClusterEnvironment", "LightningEnvironment", "SLURMEnvironment", "TorchElasticEnvironment"]
