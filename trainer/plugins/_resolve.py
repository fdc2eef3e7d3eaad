"""``Trainer(plugins=...)``: sorts the plugins into the precision plugin, cluster environment, checkpoint IO and
layer sync (``sync_batchnorm=True`` is a ``TorchSyncBatchNorm``), with Lightning's errors (an unknown kind, two of
one kind, a precision plugin together with ``precision=``, another layer sync together with ``sync_batchnorm``)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from trainer.exceptions import MisconfigurationException
from trainer.plugins.environments import ClusterEnvironment
from trainer.plugins.io import CheckpointIO
from trainer.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from trainer.plugins.precision import Precision


@dataclass
class Plugins:
    precision: Optional[Precision] = None
    cluster_environment: Optional[ClusterEnvironment] = None
    checkpoint_io: Optional[CheckpointIO] = None
    layer_sync: Optional[LayerSync] = None


def resolve_plugins(plugins: Any, precision: Any, sync_batchnorm: bool = False) -> Plugins:
    """``plugins``: None, one plugin or an iterable of them; ``precision`` and ``sync_batchnorm``: the Trainer's
    arguments."""
    found = Plugins(layer_sync=TorchSyncBatchNorm() if sync_batchnorm else None)
    if plugins is None:
        return found
    if isinstance(plugins, str) or not isinstance(plugins, Iterable):
        plugins = [plugins]
    kinds: Counter = Counter()
    for plugin in plugins:
        if isinstance(plugin, Precision):
            found.precision = plugin
            kinds["Precision"] += 1
        elif isinstance(plugin, CheckpointIO):
            found.checkpoint_io = plugin
            kinds["CheckpointIO"] += 1
        elif isinstance(plugin, ClusterEnvironment):
            found.cluster_environment = plugin
            kinds["ClusterEnvironment"] += 1
        elif isinstance(plugin, LayerSync):
            if sync_batchnorm and not isinstance(plugin, TorchSyncBatchNorm):
                raise MisconfigurationException(
                    f"You set `Trainer(sync_batchnorm=True)` and provided a `{type(plugin).__name__}`"
                    " plugin, but this is not allowed. Choose one or the other."
                )
            found.layer_sync = plugin
            kinds["TorchSyncBatchNorm"] += 1
        else:
            raise MisconfigurationException(
                f"Found invalid type for plugin {plugin}. Expected one of: Precision, "
                "CheckpointIO, ClusterEnvironment, or LayerSync."
            )
    duplicated = [kind for kind, n in kinds.items() if n > 1]
    if duplicated:
        raise MisconfigurationException(
            f"Received multiple values for {', '.join(duplicated)} flags in `plugins`."
            " Expected one value for each type at most."
        )
    if found.precision is not None and precision is not None:
        raise ValueError(f"Received both `precision={precision}` and `plugins={found.precision}`. Choose one.")
    return found
