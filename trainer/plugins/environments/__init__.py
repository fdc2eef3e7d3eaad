"""Lightning's ``plugins.environments``: where a process's rank and rendezvous come from (the detected ones in
:mod:`trainer.strategies.environment`; Kubeflow and LSF in :mod:`trainer.plugins.environments._external`).
``MPIEnvironment`` and ``XLAEnvironment`` raise at construction naming ``mpi4py`` / ``torch_xla``."""
from trainer._unavailable import requires
from trainer.plugins.environments._external import KubeflowEnvironment, LSFEnvironment
from trainer.strategies.environment import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

MPIEnvironment = requires("MPIEnvironment", "mpi4py", "pip install -U mpi4py", "ranks from an MPI launcher")
XLAEnvironment = requires("XLAEnvironment", "torch_xla", "pip install -U torch_xla", "TPU ranks")

__all__ = ["ClusterEnvironment", "KubeflowEnvironment", "LightningEnvironment", "LSFEnvironment", "MPIEnvironment",
           "SLURMEnvironment", "TorchElasticEnvironment", "XLAEnvironment"]
