"""Cluster environments: where a process's rank, world size and rendezvous address come from.

* ``LightningEnvironment``: a local job; the Trainer starts the processes itself (it sets
  ``MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK/LOCAL_RANK/NODE_RANK`` for the processes it starts; a process
  that finds ``LOCAL_RANK`` already set was started by a launcher and starts nothing).
* ``TorchElasticEnvironment``: under ``torchrun`` (``TORCHELASTIC_RUN_ID``); torchrun started every process.
* ``SLURMEnvironment``: under ``srun`` (``SLURM_NTASKS``/``SLURM_PROCID``...); SLURM started every process.

Same names and variables as Lightning's ``lightning.fabric.plugins.environments``.
"""
from __future__ import annotations

import os
import re
import socket


def find_free_port() -> int:
    """A TCP port nobody listens on now (bind to port 0 and read the port the OS chose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClusterEnvironment:
    """Base: ranks and rendezvous for one process of a job."""

    #: True when something outside the Trainer started every process (torchrun, srun, our own launcher)
    @property
    def creates_processes_externally(self) -> bool:
        raise NotImplementedError

    @property
    def main_address(self) -> str:
        raise NotImplementedError

    @property
    def main_port(self) -> int:
        raise NotImplementedError

    @staticmethod
    def detect() -> bool:
        raise NotImplementedError

    def world_size(self) -> int:
        raise NotImplementedError

    def set_world_size(self, size: int) -> None:
        pass

    def global_rank(self) -> int:
        raise NotImplementedError

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        raise NotImplementedError

    def node_rank(self) -> int:
        raise NotImplementedError

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        pass

    def teardown(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LightningEnvironment(ClusterEnvironment):
    """A local job: the Trainer's launcher starts ``devices - 1`` more processes (or ``torch.multiprocessing``)."""

    def __init__(self) -> None:
        self._main_port = -1
        self._global_rank = 0
        self._world_size = 1

    @property
    def creates_processes_externally(self) -> bool:
        return "LOCAL_RANK" in os.environ

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        if self._main_port == -1:
            self._main_port = int(os.environ["MASTER_PORT"]) if "MASTER_PORT" in os.environ else find_free_port()
        return self._main_port

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))

    def teardown(self) -> None:
        if "WORLD_SIZE" in os.environ:
            del os.environ["WORLD_SIZE"]


class TorchElasticEnvironment(ClusterEnvironment):
    """``torchrun``: every variable comes from the elastic agent."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    @staticmethod
    def detect() -> bool:
        required = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        return "TORCHELASTIC_RUN_ID" in os.environ or all(k in os.environ for k in required)

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def local_rank(self) -> int:
        return int(os.environ["LOCAL_RANK"])

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        from trainer.exceptions import MisconfigurationException

        local = int(os.environ.get("LOCAL_WORLD_SIZE", num_devices))
        if local != num_devices or num_devices * num_nodes != self.world_size():
            raise MisconfigurationException(
                f"torchrun started {self.world_size()} process(es), {local} per node, but the Trainer asks for"
                f" `devices={num_devices}` on `num_nodes={num_nodes}`: make `devices` equal to `--nproc-per-node`"
                " and `num_nodes` equal to `--nnodes`."
            )


class SLURMEnvironment(ClusterEnvironment):
    """``srun``: ranks from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID``, the main node from the node list."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        address = os.environ.get("MASTER_ADDR")
        if address:
            return address
        nodelist = os.environ.get("SLURM_NODELIST", os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        address = _first_slurm_host(nodelist)
        os.environ["MASTER_ADDR"] = address
        return address

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        job_id = os.environ.get("SLURM_JOB_ID", "0")
        port = 10000 + int(job_id[-4:]) if job_id[-4:].isdigit() else 12910  # Lightning's rule
        os.environ["MASTER_PORT"] = str(port)
        return port

    @staticmethod
    def detect() -> bool:
        return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")

    def world_size(self) -> int:
        return int(os.environ["SLURM_NTASKS"])

    def global_rank(self) -> int:
        return int(os.environ["SLURM_PROCID"])

    def local_rank(self) -> int:
        return int(os.environ["SLURM_LOCALID"])

    def node_rank(self) -> int:
        return int(os.environ.get("SLURM_NODEID", 0))

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        from trainer.exceptions import MisconfigurationException

        ntasks_per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
        if ntasks_per_node is not None and ntasks_per_node.isdigit() and int(ntasks_per_node) != num_devices:
            raise MisconfigurationException(
                f"SLURM runs {ntasks_per_node} task(s) per node (`--ntasks-per-node`) but the Trainer asks for"
                f" `devices={num_devices}`: they must be equal."
            )
        if num_devices * num_nodes != self.world_size():
            raise MisconfigurationException(
                f"SLURM started {self.world_size()} task(s) but the Trainer asks for `devices={num_devices}` x"
                f" `num_nodes={num_nodes}` = {num_devices * num_nodes} processes."
            )


def _first_slurm_host(nodelist: str) -> str:
    """``node[001-004,7],other`` -> ``node001`` (SLURM's compressed host list, first entry)."""
    nodelist = nodelist.strip()
    match = re.match(r"^([^\[,]+)(\[([^\]]+)\])?", nodelist)
    if not match:
        return "127.0.0.1"
    prefix, _, ranges = match.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def detect_environment() -> ClusterEnvironment:
    """torchrun first, then SLURM, else a local job (Lightning's order)."""
    for env_cls in (TorchElasticEnvironment, SLURMEnvironment):
        if env_cls.detect():
            return env_cls()
    return LightningEnvironment()


__all__ = [
    "ClusterEnvironment", "LightningEnvironment", "TorchElasticEnvironment", "SLURMEnvironment", "detect_environment",
    "find_free_port",
]
