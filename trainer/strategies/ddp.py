"""Distributed data parallel: one process per device, ``torch.nn.parallel.DistributedDataParallel``.

``torch.distributed`` is the engine: gloo on CPU, NCCL on CUDA; every collective (gradient all-reduce,
``reduce``/``all_gather``/``broadcast``/``barrier``) is a ``torch.distributed`` call.

Processes are started by a launcher (``trainer.strategies.launchers``): the Trainer re-runs the script
(``start_method="popen"``, rank 0 is the current process), ``torch.multiprocessing`` (``"spawn"``/``"fork"``),
or nothing when ``torchrun``/SLURM started them (``trainer.strategies.environment``).

Training runs the LightningModule's ``training_step`` *through* the DDP wrapper's ``forward`` (a thin
``_LightningModuleWrapper``), which is what arms DDP's reducer for the backward; validation/test/predict
call the module directly (no collective per forward). Non-final accumulation micro-batches run inside
``DistributedDataParallel.no_sync()`` (``block_backward_sync``): no all-reduce until the window's last batch.
"""
from __future__ import annotations

import atexit
import copy
import inspect
import logging
import os
from contextlib import nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from trainer.exceptions import MisconfigurationException
from trainer.strategies.environment import ClusterEnvironment, LightningEnvironment
from trainer.strategies.strategy import Strategy
from trainer.utilities import apply_to_collection

if TYPE_CHECKING:  # pragma: no cover
    from trainer.plugins.layer_sync import LayerSync
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

default_pg_timeout = timedelta(minutes=30)
_START_METHODS = ("popen", "spawn", "fork", "forkserver")
_REDUCE_OPS = {"sum": "SUM", "mean": "SUM", "avg": "SUM", "max": "MAX", "min": "MIN", "prod": "PRODUCT"}


def _ddp_kwarg_names() -> List[str]:
    return [p for p in inspect.signature(DistributedDataParallel.__init__).parameters if p not in ("self", "module")]


class _LightningModuleWrapper(nn.Module):
    """What DDP/FSDP wrap: ``forward`` runs the LightningModule's ``training_step`` (through the hook dispatcher)."""

    def __init__(self, module: nn.Module, strategy: "DDPStrategy") -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "_strategy", strategy)  # not a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        strategy = self._strategy
        out = strategy.trainer._hooks.call_module("training_step", *args, **kwargs)
        ddp = strategy.model
        if isinstance(ddp, DistributedDataParallel) and not self.module.automatic_optimization:
            # manual optimization: the backward already ran inside training_step (manual_backward, which
            # armed the reducer itself); DDP's post-forward must not arm it again for a backward that never
            # comes (its next forward would fail rebuilding buckets "during autograd execution")
            strategy._manual_sync = ddp.require_backward_grad_sync
            ddp.require_backward_grad_sync = False
        return out


class DDPStrategy(Strategy):
    """Lightning's ``DDPStrategy``: the same constructor arguments; extra keyword arguments go to
    ``DistributedDataParallel`` (``find_unused_parameters``, ``static_graph``, ``gradient_as_bucket_view``,
    ``broadcast_buffers``, ``bucket_cap_mb``...)."""

    strategy_name = "ddp"

    def __init__(
        self,
        accelerator: Optional[Any] = None,
        parallel_devices: Optional[List[torch.device]] = None,
        cluster_environment: Optional[ClusterEnvironment] = None,
        checkpoint_io: Optional[Any] = None,
        precision_plugin: Optional[Any] = None,
        ddp_comm_state: Optional[object] = None,
        ddp_comm_hook: Optional[Callable] = None,
        ddp_comm_wrapper: Optional[Callable] = None,
        model_averaging_period: Optional[int] = None,
        process_group_backend: Optional[str] = None,
        timeout: Optional[timedelta] = default_pg_timeout,
        start_method: str = "popen",
        **kwargs: Any,
    ) -> None:
        super().__init__("cpu", precision_plugin)
        #: a ``LayerSync`` plugin (``Trainer(sync_batchnorm=True)`` or ``plugins=[...]``): applied when fit sets up
        self.layer_sync: Optional[LayerSync] = None
        if start_method not in _START_METHODS:
            raise MisconfigurationException(
                f"`DDPStrategy(start_method={start_method!r})` is invalid: allowed values are {list(_START_METHODS)}."
            )
        if checkpoint_io is not None:
            raise MisconfigurationException("`DDPStrategy(checkpoint_io=...)` is not supported by this Trainer.")
        if model_averaging_period is not None:
            raise MisconfigurationException(
                "`DDPStrategy(model_averaging_period=...)` (post-local SGD) is not supported by this Trainer."
            )
        if timeout is not None and not isinstance(timeout, timedelta):
            raise MisconfigurationException(
                f"`DDPStrategy(timeout={timeout!r})` is invalid: expected a datetime.timedelta."
            )
        if process_group_backend is not None and process_group_backend not in ("gloo", "nccl", "mpi", "ucc", "xccl"):
            raise MisconfigurationException(
                f"`DDPStrategy(process_group_backend={process_group_backend!r})` is invalid: use 'gloo' (CPU),"
                " 'nccl' (CUDA) or None (chosen from the device)."
            )
        self._check_ddp_kwargs(kwargs)
        self._ddp_kwargs = kwargs
        self._ddp_comm_state = ddp_comm_state
        self._ddp_comm_hook = ddp_comm_hook
        self._ddp_comm_wrapper = ddp_comm_wrapper
        self._process_group_backend = process_group_backend
        self._timeout = timeout
        self._start_method = start_method
        self.parallel_devices = parallel_devices
        self.cluster_environment: ClusterEnvironment = cluster_environment or LightningEnvironment()
        self.num_nodes = 1
        self._num_processes = len(parallel_devices) if parallel_devices else 1
        self._local_rank: Optional[int] = None
        self._launcher: Optional[Any] = None
        self._configured = False
        self._manual_sync: Optional[bool] = None  # manual optimization: require_backward_grad_sync to restore
        self._static_graph_flushed = False

    def _check_ddp_kwargs(self, kwargs: Dict[str, Any]) -> None:
        unknown = [k for k in kwargs if k not in _ddp_kwarg_names()]
        if unknown:
            raise MisconfigurationException(
                f"`{type(self).__name__}` got unknown keyword argument(s) {unknown}; extra keyword arguments go to"
                f" `DistributedDataParallel`, which accepts {_ddp_kwarg_names()}."
            )

    # ---------------------------------------------------------------- configuration (from the Trainer)
    def _configure(self, accelerator: str, device_ids: List[int], num_nodes: int) -> None:
        """Called once by ``resolve_strategy``: devices, nodes, environment, ranks, launcher."""
        if accelerator not in ("cpu", "cuda"):
            raise MisconfigurationException(
                f"`Trainer(strategy={self.strategy_name!r}, accelerator={accelerator!r})`: {type(self).__name__} runs"
                " on CPU (gloo) or CUDA GPUs (NCCL) only."
            )
        if self._process_group_backend == "nccl" and accelerator != "cuda":
            raise MisconfigurationException(
                f"`{type(self).__name__}(process_group_backend='nccl')` needs CUDA devices; on CPU use 'gloo'."
            )
        if self.parallel_devices is None:
            if accelerator == "cpu":
                self.parallel_devices = [torch.device("cpu")] * len(device_ids)
            else:
                self.parallel_devices = [torch.device("cuda", i) for i in device_ids]
        self._num_processes = len(self.parallel_devices)
        self.num_nodes = num_nodes
        self.cluster_environment.validate_settings(self._num_processes, num_nodes)
        self._configure_launcher()
        self._set_world_ranks()
        self._configured = True

    def _configure_launcher(self) -> None:
        from trainer.strategies.launchers import MultiProcessingLauncher, SubprocessScriptLauncher

        if self._start_method == "popen" or self.cluster_environment.creates_processes_externally:
            self._launcher = SubprocessScriptLauncher(self.cluster_environment, self._num_processes, self.num_nodes)
        else:
            self._launcher = MultiProcessingLauncher(self, start_method=self._start_method)

    @property
    def launcher(self) -> Optional[Any]:
        return self._launcher

    @property
    def num_processes(self) -> int:
        return self._num_processes

    @property
    def process_group_backend(self) -> str:
        if self._process_group_backend is not None:
            return self._process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def _set_world_ranks(self) -> None:
        env = self.cluster_environment
        env.set_global_rank(self.node_rank * self._num_processes + self.local_rank)
        env.set_world_size(self._num_processes * self.num_nodes)
        from trainer.loggers.utilities import rank_zero_only

        rank_zero_only.rank = self.global_rank  # type: ignore[attr-defined]

    def _set_spawn_rank(self, process_idx: int) -> None:
        """A ``torch.multiprocessing`` worker learns its local rank from its index."""
        self._local_rank = process_idx
        self._set_world_ranks()

    def setup_environment(self) -> None:
        """Creates the default process group (once per process; later ``fit``/``test`` calls reuse it)."""
        if self.root_device.type == "cuda":
            torch.cuda.set_device(self.root_device)
        if not dist.is_available():  # pragma: no cover
            raise RuntimeError("torch.distributed is not available in this build of PyTorch.")
        if dist.is_initialized():
            return
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        kwargs: Dict[str, Any] = {}
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        log.info(f"Initializing distributed: GLOBAL_RANK: {self.global_rank}, MEMBER: {self.global_rank + 1}/{self.world_size}")
        dist.init_process_group(self.process_group_backend, rank=self.global_rank, world_size=self.world_size, **kwargs)
        atexit.register(_destroy_process_group)

    # ---------------------------------------------------------------- ranks
    @property
    def root_device(self) -> torch.device:
        devices = self.parallel_devices or [torch.device("cpu")]
        return devices[self.local_rank] if self.local_rank < len(devices) else devices[0]

    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank()

    @property
    def local_rank(self) -> int:
        return self._local_rank if self._local_rank is not None else self.cluster_environment.local_rank()

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank()

    @property
    def world_size(self) -> int:
        return self.cluster_environment.world_size()

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def distributed_sampler_kwargs(self) -> Dict[str, int]:
        return {"num_replicas": self.num_nodes * self._num_processes, "rank": self.global_rank}

    # ---------------------------------------------------------------- set-up
    def setup(self, trainer: "Trainer") -> None:
        assert self._lightning_module is not None
        self.model_to_device()
        if trainer.state.fn == "fit" and self.layer_sync is not None:
            self._lightning_module = self.layer_sync.apply(self._lightning_module)
        self.precision_plugin.convert_module(self._lightning_module)
        if trainer.state.fn == "fit":
            self._model = self.setup_module(self._lightning_module)
            self.setup_optimizers(trainer)
        else:
            self._model = self._lightning_module

    def setup_module(self, module: nn.Module) -> nn.Module:
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        ddp = DistributedDataParallel(_LightningModuleWrapper(module, self), device_ids=device_ids, **self._ddp_kwargs)
        if self._ddp_comm_hook is not None:
            hook = self._ddp_comm_hook
            if self._ddp_comm_wrapper is not None:
                hook = self._ddp_comm_wrapper(hook)
            ddp.register_comm_hook(state=self._ddp_comm_state, hook=hook)
        return ddp

    def _wrapped(self) -> bool:
        return self._model is not None and self._model is not self._lightning_module

    # ---------------------------------------------------------------- steps
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        assert self.trainer is not None
        with self.precision_plugin.train_step_context():
            if self._wrapped():
                try:
                    return self._model(*args, **kwargs)  # type: ignore[misc]
                finally:
                    if self._manual_sync is not None:
                        self._model.require_backward_grad_sync = self._manual_sync  # type: ignore[union-attr]
                        self._manual_sync = None
            return self.trainer._hooks.call_module("training_step", *args, **kwargs)

    def backward(self, closure_loss: Tensor, optimizer: Optional[Any], *args: Any, **kwargs: Any) -> Tensor:
        ddp = self._model
        module = self._lightning_module
        manual = isinstance(ddp, DistributedDataParallel) and module is not None and not module.automatic_optimization
        if manual:
            _arm_reducer(ddp, closure_loss)
        loss = super().backward(closure_loss, optimizer, *args, **kwargs)
        if manual and ddp.static_graph and not self._static_graph_flushed:
            # static_graph's first iteration delays every all-reduce to the end of DDP's forward-backward
            # pair, which manual optimization never closes: flush it here, once
            ddp.reducer._delay_all_reduce()
            self._static_graph_flushed = True
        return loss

    def block_backward_sync(self) -> ContextManager:
        if isinstance(self._model, DistributedDataParallel):
            return self._model.no_sync()
        return nullcontext()

    # ---------------------------------------------------------------- data
    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        trainer = self.trainer
        if trainer is None or not trainer.use_distributed_sampler or self.world_size <= 1:
            return dataloader
        return _add_distributed_sampler(dataloader, stage, self.distributed_sampler_kwargs)

    # ---------------------------------------------------------------- collectives
    def _dist(self) -> bool:
        return dist.is_available() and dist.is_initialized() and self.world_size > 1

    def reduce(self, tensor: Any, group: Optional[Any] = None, reduce_op: Optional[str] = "mean") -> Any:
        if not isinstance(tensor, Tensor) or not self._dist():
            return tensor
        op_name = "mean" if reduce_op is None else str(reduce_op).lower()
        if op_name not in _REDUCE_OPS:
            raise ValueError(f"Unsupported reduce op {reduce_op!r}; use one of {sorted(_REDUCE_OPS)}.")
        out = tensor.clone()
        if not out.is_floating_point() and op_name in ("mean", "avg"):
            out = out.float()
        dist.all_reduce(out, op=getattr(dist.ReduceOp, _REDUCE_OPS[op_name]), group=group)
        if op_name in ("mean", "avg"):
            out = out / dist.get_world_size(group)
        return out

    def all_gather(self, tensor: Any, group: Optional[Any] = None, sync_grads: bool = False) -> Any:
        if not self._dist():
            return apply_to_collection(tensor, Tensor, lambda t: t.unsqueeze(0) if t.ndim == 0 else t)
        return apply_to_collection(tensor, Tensor, _all_gather_tensor, group, sync_grads)

    def barrier(self, name: Optional[str] = None) -> None:
        if not self._dist():
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self._dist():
            return obj
        holder = [obj]
        device = self.root_device if dist.get_backend() == "nccl" else None
        dist.broadcast_object_list(holder, src, device=device)
        return holder[0]

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not self._dist():
            return decision
        flag = torch.tensor(int(decision), device=self.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return bool(flag.item() == self.world_size) if all else bool(flag.item() > 0)

    # ---------------------------------------------------------------- teardown
    def teardown(self) -> None:
        self._model = self._lightning_module
        trainer = self.trainer
        if self.layer_sync is not None and self._lightning_module is not None and trainer is not None \
                and trainer.state.fn == "fit":
            self._lightning_module = self._model = self.layer_sync.revert(self._lightning_module)
        super().teardown()


def _find_tensors(obj: Any) -> List[Tensor]:
    out: List[Tensor] = []
    apply_to_collection(obj, Tensor, out.append)
    return out


def _arm_reducer(ddp: DistributedDataParallel, output: Any) -> None:
    """What DDP's forward does at its end to arm the reducer for the coming backward, for a backward
    that runs inside the forward (``manual_backward`` within ``training_step``)."""
    if torch.is_grad_enabled() and ddp.require_backward_grad_sync:
        ddp.require_forward_param_sync = True
        used = _find_tensors(output) if ddp.find_unused_parameters and not ddp.static_graph else []
        ddp.reducer._rebuild_buckets()
        ddp.reducer.prepare_for_backward(used)
    else:
        ddp.require_forward_param_sync = False


_EXIT_STATE = {"failed": False}


def mark_rank_failed() -> None:
    """Called by the launcher when the fit raised on this rank: exit without the teardown barrier."""
    _EXIT_STATE["failed"] = True


def _destroy_process_group() -> None:
    """At exit: wait until every rank got here, then tear the group down.

    Destroying a gloo group while a peer still talks to it aborted a rank now and then under load
    ("terminate called without an active exception", exit -6, seen in CI). The barrier makes the
    teardown start only when every rank is done; its timeout keeps a dead peer from hanging exit.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if _EXIT_STATE["failed"]:
            # this rank raised: its peers may be blocked in a collective that will never complete, and
            # would reach no barrier; tearing down now closes the connections, which ends their wait
            # with an error at once instead of after the process group's timeout
            pass
        elif dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    except Exception:  # pragma: no cover - a peer is gone: tear down anyway
        pass
    try:
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - best effort at exit
        pass


def _all_gather_tensor(tensor: Tensor, group: Optional[Any] = None, sync_grads: bool = False) -> Tensor:
    """``(world_size, *shape)``; shapes may differ by rank in size only (padded, then trimmed, like Lightning)."""
    scalar = tensor.ndim == 0
    tensor = tensor.unsqueeze(0) if scalar else tensor.contiguous()
    world = dist.get_world_size(group)
    local_size = torch.tensor(tensor.shape, device=tensor.device)
    sizes = [torch.zeros_like(local_size) for _ in range(world)]
    dist.all_gather(sizes, local_size, group=group)
    max_size = torch.stack(sizes).max(dim=0).values
    same = all(bool((s == local_size).all()) for s in sizes)
    padded = tensor
    if not same:
        pad: List[int] = []
        for dim in reversed(range(tensor.ndim)):
            pad += [0, int(max_size[dim]) - tensor.shape[dim]]
        padded = torch.nn.functional.pad(tensor, pad)
    if sync_grads:
        import torch.distributed.nn.functional as dist_fn

        gathered = list(dist_fn.all_gather(padded, group=group))
    else:
        gathered = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded, group=group)
    if not same:
        gathered = [g[tuple(slice(0, int(d)) for d in s)] for g, s in zip(gathered, sizes)]
        return torch.stack(gathered) if all(g.shape == gathered[0].shape for g in gathered) else gathered  # type: ignore[return-value]
    out = torch.stack(gathered)
    return out.squeeze(1) if scalar else out


# -------------------------------------------------------------------- distributed sampler insertion
class UnrepeatedDistributedSampler(DistributedSampler):
    """Each rank gets a disjoint slice and no index is repeated (ranks may get different counts): prediction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]
        self.total_size = len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        else:
            indices = list(range(len(self.dataset)))  # type: ignore[arg-type]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class _SamplerDataset(torch.utils.data.Dataset):
    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler
        self._list: Optional[List[Any]] = None

    def __getitem__(self, index: int) -> Any:
        if self._list is None:
            self._list = list(self._sampler)
        return self._list[index]

    def __len__(self) -> int:
        return len(self._sampler)  # type: ignore[arg-type]

    def reset(self) -> None:
        self._list = None


class DistributedSamplerWrapper(DistributedSampler):
    """Shards the indices a user's custom sampler yields (Lightning's ``DistributedSamplerWrapper``)."""

    def __init__(self, sampler: Sampler, *args: Any, **kwargs: Any) -> None:
        super().__init__(_SamplerDataset(sampler), *args, **kwargs)
        self._user_sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        fn = getattr(self._user_sampler, "set_epoch", None)
        if callable(fn):
            fn(epoch)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.dataset.reset()  # type: ignore[attr-defined]
        return (self.dataset[index] for index in super().__iter__())


def _add_distributed_sampler(loader: Any, stage: str, kwargs: Dict[str, int]) -> Any:
    """A copy of ``loader`` whose sampler shards the data across ranks; the user's shuffle is kept.

    Works for DataLoader subclasses too: the copy keeps every attribute and only its sampler and batch sampler
    are replaced (DataLoader forbids that after ``__init__``, hence ``object.__setattr__``).
    """
    if not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, torch.utils.data.IterableDataset):
        return loader  # the dataset shards itself (Lightning does the same)
    sampler = loader.sampler
    batch_sampler = loader.batch_sampler
    if isinstance(sampler, DistributedSampler) or isinstance(getattr(batch_sampler, "sampler", None), DistributedSampler):
        return loader  # the user did it
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        log.warning(
            f"The {stage} dataloader uses a custom batch sampler ({type(batch_sampler).__name__}); it is left as it"
            " is, so every rank sees the same batches. Shard it yourself or set `use_distributed_sampler=False`."
        )
        return loader
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    if stage == "predict":
        new_sampler: Sampler = UnrepeatedDistributedSampler(loader.dataset, shuffle=False, seed=seed, **kwargs)
    elif isinstance(sampler, (RandomSampler, SequentialSampler)):
        shuffle = isinstance(sampler, RandomSampler) and stage == "train"
        new_sampler = DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, **kwargs)
    else:
        new_sampler = DistributedSamplerWrapper(sampler, shuffle=False, seed=seed, **kwargs)
    new = copy.copy(loader)
    object.__setattr__(new, "sampler", new_sampler)
    if batch_sampler is not None:
        object.__setattr__(new, "batch_sampler", BatchSampler(new_sampler, batch_sampler.batch_size, batch_sampler.drop_last))
    object.__setattr__(new, "_iterator", None)
    object.__setattr__(new, "_DataLoader__initialized", True)
    return new


class DDPSpawnStrategy(DDPStrategy):
    """``strategy="ddp_spawn"``: ``DDPStrategy(start_method="spawn")`` (results come back to the main process)."""

    strategy_name = "ddp_spawn"

    def __init__(self, *args: Any, start_method: str = "spawn", **kwargs: Any) -> None:
        super().__init__(*args, start_method=start_method, **kwargs)


__all__ = ["DDPStrategy", "DDPSpawnStrategy", "DistributedSamplerWrapper", "UnrepeatedDistributedSampler"]
