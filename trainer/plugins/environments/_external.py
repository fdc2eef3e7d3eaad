"""Lightning's cluster environments for launchers other than torchrun and SLURM: Kubeflow's ``PyTorchJob``
and IBM LSF's ``jsrun`` (both start every process themselves). ``MPIEnvironment`` and ``XLAEnvironment`` need
``mpi4py`` and ``torch_xla``, which this build does not ship: they raise naming the package, as Lightning does."""
from __future__ import annotations

import logging
import os
import socket
from typing import Dict, List

import fsspec

from trainer.strategies.environment import ClusterEnvironment

log = logging.getLogger(__name__)


class KubeflowEnvironment(ClusterEnvironment):
    """Kubeflow's ``PyTorchJob`` operator: one process per pod, ranks from ``WORLD_SIZE``/``RANK`` and the
    rendezvous from ``MASTER_ADDR``/``MASTER_PORT``. Never detected automatically: pass it in ``plugins=[...]``."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    @staticmethod
    def detect() -> bool:
        raise NotImplementedError("The Kubeflow environment can't be detected automatically.")

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def set_world_size(self, size: int) -> None:
        log.debug("KubeflowEnvironment.set_world_size was called, but setting world size is not allowed. Ignored.")

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def set_global_rank(self, rank: int) -> None:
        log.debug("KubeflowEnvironment.set_global_rank was called, but setting global rank is not allowed. Ignored.")

    def local_rank(self) -> int:
        return 0  # one process per pod

    def node_rank(self) -> int:
        return self.global_rank()


class LSFEnvironment(ClusterEnvironment):
    """IBM LSF with ``jsrun``: ranks from ``JSM_NAMESPACE_RANK``/``JSM_NAMESPACE_LOCAL_RANK``/``JSM_NAMESPACE_SIZE``;
    the hosts from the rank file ``LSB_DJOB_RANKFILE`` (its first line, the launch node, left out): the first host
    is the main address and a host's position among the distinct hosts its node rank. The main port is
    ``MASTER_PORT`` or ``LSB_JOBID % 1000 + 10000``. Construction exports ``MASTER_ADDR``/``MASTER_PORT``."""

    def __init__(self) -> None:
        super().__init__()
        hosts = self._read_hosts()
        self._main_address = hosts[0]
        self._main_port = self._job_port()
        self._node_rank = _distinct_positions(hosts)[socket.gethostname()]
        os.environ["MASTER_ADDR"] = str(self._main_address)
        os.environ["MASTER_PORT"] = str(self._main_port)

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self._main_address

    @property
    def main_port(self) -> int:
        return self._main_port

    @staticmethod
    def detect() -> bool:
        return {"LSB_JOBID", "LSB_DJOB_RANKFILE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE"} <= set(os.environ)

    def world_size(self) -> int:
        return _jsm_int("JSM_NAMESPACE_SIZE", "world size")

    def set_world_size(self, size: int) -> None:
        log.debug("LSFEnvironment.set_world_size was called, but setting world size is not allowed. Ignored.")

    def global_rank(self) -> int:
        return _jsm_int("JSM_NAMESPACE_RANK", "global rank")

    def set_global_rank(self, rank: int) -> None:
        log.debug("LSFEnvironment.set_global_rank was called, but setting global rank is not allowed. Ignored.")

    def local_rank(self) -> int:
        return _jsm_int("JSM_NAMESPACE_LOCAL_RANK", "local rank")

    def node_rank(self) -> int:
        return self._node_rank

    @staticmethod
    def _read_hosts() -> List[str]:
        rankfile = os.environ.get("LSB_DJOB_RANKFILE")
        if rankfile is None:
            raise ValueError("Did not find the environment variable `LSB_DJOB_RANKFILE`")
        if not rankfile:
            raise ValueError("The environment variable `LSB_DJOB_RANKFILE` is empty")
        with fsspec.open(rankfile, "r") as f:
            lines = [line.strip() for line in f]
        return lines[1:]

    @staticmethod
    def _job_port() -> int:
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        if "LSB_JOBID" in os.environ:
            return int(os.environ["LSB_JOBID"]) % 1000 + 10000
        raise ValueError("Could not find job id in environment variable LSB_JOBID")


def _distinct_positions(hosts: List[str]) -> Dict[str, int]:
    positions: Dict[str, int] = {}
    for host in hosts:
        positions.setdefault(host, len(positions))
    return positions


def _jsm_int(var: str, what: str) -> int:
    value = os.environ.get(var)
    if value is None:
        raise ValueError(
            f"Cannot determine {what}. Environment variable `{var}` not found. Make sure you run your executable"
            " with `jsrun`."
        )
    return int(value)


__all__ = ["KubeflowEnvironment", "LSFEnvironment"]
