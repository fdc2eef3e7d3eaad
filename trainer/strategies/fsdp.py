"""Fully sharded data parallel with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Parameters, gradients and optimizer state are sharded over the ranks (DTensors on a 1-D device mesh, or a
2-D (replicate, shard) mesh for ``HYBRID_SHARD``). The modules chosen by ``auto_wrap_policy`` (a set of module
classes, or ``min_num_params``) are sharded units of their own; the root unit is a thin wrapper whose
``forward`` runs the LightningModule's step, so parameters that no unit owns are gathered for every step too.

Checkpoints (``state_dict_type``):

* ``"full"``: one file, Lightning's layout, weights and optimizer state gathered to full tensors (optimizer
  state keyed by parameter index, like a single-device run): it loads into a single-device Trainer.
* ``"sharded"``: a folder: tensors through ``torch.distributed.checkpoint`` (each rank writes its shards) and
  the rest (loops, callbacks, schedulers...) in ``meta.pt``. ``convert_sharded_checkpoint`` turns the folder
  into a single full file.

Either kind resumes on any number of ranks (``torch.distributed.checkpoint`` reshards on load).
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, Iterator, List, Optional, Set, Type, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.checkpoint import atomic_save, load_checkpoint_file
from trainer.exceptions import MisconfigurationException
from trainer.plugins.precision.fsdp import FSDPPrecision
from trainer.precision import Precision
from trainer.strategies.ddp import DDPStrategy, _LightningModuleWrapper, default_pg_timeout
from trainer.utilities import apply_to_collection

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

_META_FILE = "meta.pt"
_SHARDING = {"FULL_SHARD": True, "SHARD_GRAD_OP": False, "HYBRID_SHARD": True, "_HYBRID_SHARD_ZERO2": False}


class _FSDPWrapper(_LightningModuleWrapper):
    """The root FSDP unit: ``forward(hook, *args)`` runs ``training_step``/``validation_step``/... ."""

    def forward(self, *args: Any, _hook: str = "training_step", **kwargs: Any) -> Any:
        return self._strategy.trainer._hooks.call_module(_hook, *args, **kwargs)


def _dtensor_cls() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


class FSDPStrategy(DDPStrategy):
    """Lightning's ``FSDPStrategy`` arguments on FSDP2.

    Args:
        auto_wrap_policy: a set/list of ``nn.Module`` classes whose instances become sharded units, or a callable
            ``policy(module) -> bool``; ``None`` shards only the root.
        min_num_params: alternatively, make a unit of every module holding at least this many parameters not
            already in a unit (FSDP1's ``size_based_auto_wrap_policy``).
        mixed_precision: a ``torch.distributed.fsdp.MixedPrecisionPolicy`` (param/reduce dtypes).
        cpu_offload: ``True`` or a ``CPUOffloadPolicy``: shards (and optimizer step) live on the CPU.
        sharding_strategy: ``"FULL_SHARD"`` (reshard after forward), ``"SHARD_GRAD_OP"`` (keep gathered until
            backward), ``"HYBRID_SHARD"`` (shard within a node, replicate across nodes).
        reshard_after_forward: overrides what ``sharding_strategy`` implies.
        state_dict_type: ``"full"`` (one file) or ``"sharded"`` (a folder through ``torch.distributed.checkpoint``).
    """

    strategy_name = "fsdp"

    def __init__(
        self,
        accelerator: Optional[Any] = None,
        parallel_devices: Optional[List[torch.device]] = None,
        cluster_environment: Optional[Any] = None,
        checkpoint_io: Optional[Any] = None,
        precision_plugin: Optional[Any] = None,
        process_group_backend: Optional[str] = None,
        timeout: Optional[timedelta] = default_pg_timeout,
        cpu_offload: Union[bool, Any, None] = None,
        mixed_precision: Optional[Any] = None,
        auto_wrap_policy: Optional[Union[Set[Type[nn.Module]], List[Type[nn.Module]], Callable[[nn.Module], bool]]] = None,
        min_num_params: Optional[int] = None,
        activation_checkpointing_policy: Optional[Any] = None,
        sharding_strategy: Union[str, Any] = "FULL_SHARD",
        reshard_after_forward: Optional[bool] = None,
        state_dict_type: str = "full",
        start_method: str = "popen",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            accelerator=accelerator, parallel_devices=parallel_devices, cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io, precision_plugin=precision_plugin or FSDPPrecision("32-true"),
            process_group_backend=process_group_backend,
            timeout=timeout, start_method=start_method,
        )
        if kwargs:
            raise MisconfigurationException(
                f"`FSDPStrategy` got unsupported keyword argument(s) {sorted(kwargs)} (FSDP2 `fully_shard` takes"
                " `mixed_precision`, `cpu_offload`, `reshard_after_forward`; wrap units with `auto_wrap_policy`)."
            )
        name = getattr(sharding_strategy, "name", sharding_strategy)
        if not isinstance(name, str) or name.upper() not in _SHARDING:
            raise MisconfigurationException(
                f"`FSDPStrategy(sharding_strategy={sharding_strategy!r})` is invalid: allowed values are"
                f" {sorted(_SHARDING)} (NO_SHARD is `strategy='ddp'`)."
            )
        self.sharding_strategy = name.upper()
        self._reshard_after_forward = (
            _SHARDING[self.sharding_strategy] if reshard_after_forward is None else bool(reshard_after_forward)
        )
        if state_dict_type not in ("full", "sharded"):
            raise MisconfigurationException(
                f"`FSDPStrategy(state_dict_type={state_dict_type!r})` is invalid: allowed values are 'full' and"
                " 'sharded'."
            )
        self._state_dict_type = state_dict_type
        if mixed_precision is not None:
            from torch.distributed.fsdp import MixedPrecision, MixedPrecisionPolicy

            if not isinstance(mixed_precision, (MixedPrecisionPolicy, MixedPrecision)):
                raise MisconfigurationException(
                    "`FSDPStrategy(mixed_precision=...)` must be a `torch.distributed.fsdp.MixedPrecisionPolicy`"
                    f" (or Lightning's `torch.distributed.fsdp.MixedPrecision`), got {type(mixed_precision).__name__}."
                )
        self.mixed_precision = mixed_precision
        self.cpu_offload = cpu_offload
        if auto_wrap_policy is not None and not (callable(auto_wrap_policy) or isinstance(auto_wrap_policy, (set, list, tuple))):
            raise MisconfigurationException(
                "`FSDPStrategy(auto_wrap_policy=...)` must be a set of module classes or a callable(module) -> bool."
            )
        if min_num_params is not None and (not isinstance(min_num_params, int) or min_num_params < 1):
            raise MisconfigurationException(f"`FSDPStrategy(min_num_params={min_num_params!r})` must be an int >= 1.")
        self.auto_wrap_policy = auto_wrap_policy
        self.min_num_params = min_num_params
        self.activation_checkpointing_policy = activation_checkpointing_policy
        self._mesh: Optional[Any] = None
        self._fsdp_wrapper: Optional[nn.Module] = None

    # ---------------------------------------------------------------- precision: always an FSDPPrecision
    @property  # type: ignore[override]
    def precision_plugin(self) -> FSDPPrecision:
        return self._precision_plugin

    @precision_plugin.setter
    def precision_plugin(self, plugin: Optional[Precision]) -> None:
        if plugin is None:
            plugin = FSDPPrecision("32-true")
        if not isinstance(plugin, FSDPPrecision):
            raise TypeError(f"The FSDP strategy can only work with the `FSDPPrecision` plugin, found {plugin}")
        self._precision_plugin = plugin

    def default_precision_plugin(self, precision: str, device_type: str) -> Precision:
        return FSDPPrecision(precision)

    @property
    def mixed_precision_config(self) -> Optional[Any]:
        """Lightning's: ``FSDPStrategy(mixed_precision=...)`` when given, else the precision plugin's config."""
        if self.mixed_precision:
            return self.mixed_precision
        return self.precision_plugin.mixed_precision_config

    def _mp_policy(self) -> Optional[Any]:
        """The FSDP2 ``MixedPrecisionPolicy`` for ``mixed_precision_config`` (``None``: all fp32, nothing to cast).
        An FSDP1 ``MixedPrecision`` gives its param and reduce dtypes (FSDP2 does not cast buffers)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        if self.mixed_precision is None and self.precision_plugin.precision == "32-true":
            return None
        config = self.mixed_precision_config
        if config is None or isinstance(config, MixedPrecisionPolicy):
            return config
        return MixedPrecisionPolicy(param_dtype=config.param_dtype, reduce_dtype=config.reduce_dtype)

    @property
    def state_dict_type(self) -> str:
        return self._state_dict_type

    # ---------------------------------------------------------------- sharding
    def _device_mesh(self) -> Any:
        if self._mesh is None:
            from torch.distributed.device_mesh import init_device_mesh

            device_type = self.root_device.type
            if self.sharding_strategy in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"):
                self._mesh = init_device_mesh(
                    device_type, (self.num_nodes, self.num_processes), mesh_dim_names=("replicate", "shard")
                )
            else:
                self._mesh = init_device_mesh(device_type, (self.world_size,))
        return self._mesh

    def _shard_kwargs(self) -> Dict[str, Any]:
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

        kwargs: Dict[str, Any] = {"mesh": self._device_mesh(), "reshard_after_forward": self._reshard_after_forward}
        policy = self._mp_policy()
        if policy is not None:
            kwargs["mp_policy"] = policy
        if self.cpu_offload:
            kwargs["offload_policy"] = self.cpu_offload if isinstance(self.cpu_offload, OffloadPolicy) else CPUOffloadPolicy(
                pin_memory=self.root_device.type == "cuda"
            )
        return kwargs

    def _full_precision_classes(self) -> tuple:
        """The module classes an FSDP1 ``MixedPrecision`` keeps in full precision (its ``_module_classes_to_ignore``:
        batch norms by default) when it lowers the parameter dtype of an fp32 module (the "-true" precisions cast
        the whole module first, so nothing stays in fp32)."""
        config = self.mixed_precision_config
        if self._mp_policy() is None or config is None or not hasattr(config, "_module_classes_to_ignore"):
            return ()
        if "true" in self.precision_plugin.precision and self.mixed_precision is None:
            return ()
        return tuple(config._module_classes_to_ignore)

    def _wants_unit(self, module: nn.Module, free_params: int) -> bool:
        policy = self.auto_wrap_policy
        if isinstance(policy, (set, list, tuple)):
            if isinstance(module, tuple(policy)):
                return True
        elif policy is not None and policy(module):
            return True
        return self.min_num_params is not None and free_params >= self.min_num_params

    def setup_module(self, module: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        kwargs = self._shard_kwargs()
        if self.activation_checkpointing_policy is not None:
            self._apply_activation_checkpointing(module)

        full_precision = self._full_precision_classes()

        def visit(m: nn.Module) -> int:
            free = sum(visit(child) for child in m.children()) + sum(p.numel() for p in m.parameters(recurse=False))
            if m is not module and full_precision and isinstance(m, full_precision):
                _keep_full_precision(m, free, kwargs)
                return 0
            if m is not module and not isinstance(m, FSDPModule) and free > 0 and self._wants_unit(m, free):
                fully_shard(m, **kwargs)
                return 0
            return free

        if not any(isinstance(m, FSDPModule) for m in module.modules()):
            visit(module)
        wrapper = _FSDPWrapper(module, self)
        fully_shard(wrapper, **kwargs)
        return wrapper

    def _apply_activation_checkpointing(self, module: nn.Module) -> None:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        policy = self.activation_checkpointing_policy
        classes = tuple(policy) if isinstance(policy, (set, list, tuple)) else None
        check_fn = (lambda m: isinstance(m, classes)) if classes else policy
        apply_activation_checkpointing(module, check_fn=check_fn)

    def setup(self, trainer: "Trainer") -> None:
        assert self._lightning_module is not None
        wrapper = self._fsdp_wrapper
        if wrapper is None or wrapper.module is not self._lightning_module:  # shard once; later runs reuse it
            self.model_to_device()
            if trainer.state.fn == "fit" and self.layer_sync is not None:
                self.layer_sync.apply(self._lightning_module)
            self.precision_plugin.convert_module(self._lightning_module)
            wrapper = self._fsdp_wrapper = self.setup_module(self._lightning_module)
        self._model = wrapper
        if trainer.state.fn == "fit":
            self.setup_optimizers(trainer)

    def setup_optimizers(self, trainer: "Trainer") -> None:
        super().setup_optimizers(trainer)
        for opt in self.optimizers:
            opt.register_load_state_dict_pre_hook(self._optimizer_load_pre_hook)

    def teardown(self) -> None:  # the module stays sharded (Lightning's FSDP keeps it too)
        self._reshard()

    def _reshard(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        if self._model is None:
            return
        for m in self._model.modules():
            if isinstance(m, FSDPModule):
                m.reshard()

    # ---------------------------------------------------------------- steps (all through the root unit)
    def _step(self, hook: str, context: ContextManager, *args: Any, **kwargs: Any) -> Any:
        with context:
            if self._model is not None and self._model is not self._lightning_module:
                return self._model(*args, _hook=hook, **kwargs)
            return self.trainer._hooks.call_module(hook, *args, **kwargs)  # type: ignore[union-attr]

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._step("training_step", self.precision_plugin.train_step_context(), *args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._step("validation_step", self.precision_plugin.val_step_context(), *args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._step("test_step", self.precision_plugin.test_step_context(), *args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._step("predict_step", self.precision_plugin.predict_step_context(), *args, **kwargs)

    def block_backward_sync(self) -> ContextManager:
        return self._no_gradient_sync()

    @contextmanager
    def _no_gradient_sync(self) -> Iterator[None]:
        from torch.distributed.fsdp import FSDPModule

        model = self._model
        if not isinstance(model, FSDPModule):
            yield
            return
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    # ---------------------------------------------------------------- compiled step
    def setup_compiled_step(self, engine: Any, optimizer: Optimizer, batch_idx: int = 0) -> None:
        """``Trainer(compile=...)`` under FSDP: each unit's forward+backward compiled between FSDP2's hooks, the
        optimizer update one compiled graph over the local shards (:mod:`trainer.compile.sharded`)."""
        from trainer.compile.sharded import setup_sharded

        setup_sharded(engine, optimizer, batch_idx)

    # ---------------------------------------------------------------- state dicts
    def lightning_module_state_dict(self) -> Dict[str, Any]:
        assert self._lightning_module is not None
        self._reshard()
        state = self._lightning_module.state_dict()
        if self._state_dict_type == "sharded":
            return state
        DTensor = _dtensor_cls()
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in state.items()}

    def optimizer_state(self, optimizer: Optimizer) -> Dict[str, Any]:
        if self._state_dict_type == "sharded":
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            return get_optimizer_state_dict(self._lightning_module, optimizer)
        DTensor = _dtensor_cls()
        state = optimizer.state_dict()
        full_state = {
            idx: {k: (v.full_tensor().cpu() if isinstance(v, DTensor) else v) for k, v in s.items()}
            for idx, s in state["state"].items()
        }
        return {"state": full_state, "param_groups": state["param_groups"]}

    def load_model_state_dict(self, state_dict: Dict[str, Any], strict: bool = True) -> None:
        assert self._lightning_module is not None
        current = self._lightning_module.state_dict()
        DTensor = _dtensor_cls()
        if any(isinstance(v, DTensor) for v in current.values()):
            state_dict = {k: _to_dtensor_like(v, current.get(k)) for k, v in state_dict.items()}
        self._lightning_module.load_state_dict(state_dict, strict=strict)

    def _optimizer_load_pre_hook(self, optimizer: Optimizer, state_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Full (index-keyed) optimizer state -> shards of this rank; a sharded folder -> loaded through DCP."""
        if isinstance(state_dict, dict) and "__dcp_folder__" in state_dict:
            from torch.distributed.checkpoint import load as dcp_load
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

            key = f"optimizer_{state_dict['index']}"
            self._in_dcp_load = True  # set_optimizer_state_dict calls load_state_dict (this hook) itself
            try:
                osd = get_optimizer_state_dict(self._lightning_module, optimizer)
                holder = {key: osd}
                dcp_load(holder, checkpoint_id=state_dict["__dcp_folder__"])
                set_optimizer_state_dict(self._lightning_module, optimizer, holder[key])
            finally:
                self._in_dcp_load = False
            return optimizer.state_dict()
        if getattr(self, "_in_dcp_load", False) or not all(
            isinstance(k, int) for k in (state_dict.get("state") or {})
        ):
            return None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        DTensor = _dtensor_cls()
        new_state = {}
        for idx, s in state_dict.get("state", {}).items():
            param = params[int(idx)] if int(idx) < len(params) else None
            new_state[idx] = {
                k: (_to_dtensor_like(v, param) if isinstance(param, DTensor) and isinstance(v, Tensor) and v.dim() > 0 else v)
                for k, v in s.items()
            }
        return {**state_dict, "state": new_state}

    # ---------------------------------------------------------------- checkpoint files / folders
    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: Union[str, os.PathLike]) -> None:
        if self._state_dict_type == "full":
            return super().save_checkpoint(checkpoint, filepath)
        from torch.distributed.checkpoint import save as dcp_save

        path = os.fspath(filepath)
        if self.is_global_zero and os.path.isfile(path):
            os.unlink(path)
        self.barrier("fsdp-save-prepare")
        meta = dict(checkpoint)
        tensors: Dict[str, Any] = {"state_dict": meta.pop("state_dict")}
        for i, osd in enumerate(meta.pop("optimizer_states", None) or []):
            tensors[f"optimizer_{i}"] = osd
        meta["optimizer_states"] = len(tensors) - 1
        dcp_save(tensors, checkpoint_id=path)
        if self.is_global_zero:
            atomic_save(meta, os.path.join(path, _META_FILE))
        self.barrier("fsdp-save")

    def load_checkpoint(self, checkpoint_path: Union[str, os.PathLike]) -> Dict[str, Any]:
        path = os.fspath(checkpoint_path)
        if not os.path.isdir(path):
            return super().load_checkpoint(path)
        from torch.distributed.checkpoint import load as dcp_load

        meta = load_checkpoint_file(os.path.join(path, _META_FILE))
        assert self._lightning_module is not None
        self._reshard()
        holder = {"state_dict": self._lightning_module.state_dict()}  # full tensors before sharding, shards after
        dcp_load(holder, checkpoint_id=path)
        meta["state_dict"] = holder["state_dict"]
        count = meta.get("optimizer_states")
        if isinstance(count, int):
            meta["optimizer_states"] = [{"__dcp_folder__": path, "index": i} for i in range(count)]
        return meta

    def remove_checkpoint(self, filepath: Union[str, os.PathLike]) -> None:
        if self.is_global_zero:
            path = os.fspath(filepath)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.isfile(path) or os.path.islink(path):
                os.remove(path)


def _keep_full_precision(module: nn.Module, free_params: int, kwargs: Dict[str, Any]) -> None:
    """FSDP1's treatment of a module class its ``MixedPrecision`` ignores, on FSDP2: its own unit with fp32
    parameters (when it has any), and its floating inputs cast to fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if free_params > 0:
        fully_shard(module, **{**kwargs, "mp_policy": MixedPrecisionPolicy(param_dtype=torch.float32,
                                                                           reduce_dtype=torch.float32)})
    module.register_forward_pre_hook(_inputs_to_fp32)


def _inputs_to_fp32(module: nn.Module, args: Any) -> Any:
    return apply_to_collection(args, Tensor, lambda t: t.float() if torch.is_floating_point(t) else t)


def _to_dtensor_like(value: Any, like: Any) -> Any:
    """A full tensor -> the DTensor with ``like``'s mesh and placements (this rank's shard of it)."""
    DTensor = _dtensor_cls()
    if not isinstance(like, DTensor) or not isinstance(value, Tensor) or isinstance(value, DTensor):
        return value
    from torch.distributed.tensor import distribute_tensor

    local = like.to_local()
    return distribute_tensor(value.to(device=local.device, dtype=like.dtype), like.device_mesh, like.placements)


def convert_sharded_checkpoint(folder: Union[str, os.PathLike], output_file: Union[str, os.PathLike]) -> str:
    """A sharded FSDP checkpoint folder -> one full checkpoint file (Lightning's layout; one process, no GPU).

    The weights become full tensors under ``"state_dict"``; optimizer states keep their parameter-name keys
    (``{"state": {name: ...}, "param_groups": [{"params": [names...]}]}``), ordered as the optimizer's params.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = os.fspath(folder)
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, _META_FILE)):
        raise FileNotFoundError(f"{folder!r} is not a sharded checkpoint folder (no {_META_FILE}).")
    meta = load_checkpoint_file(os.path.join(folder, _META_FILE))
    tmp = os.fspath(output_file) + ".tensors.tmp"
    dcp_to_torch_save(folder, tmp)
    try:
        tensors = torch.load(tmp, map_location="cpu", weights_only=False)
    finally:
        os.unlink(tmp)
    meta["state_dict"] = tensors["state_dict"]
    count = meta.get("optimizer_states")
    meta["optimizer_states"] = [_names_to_indices(tensors[f"optimizer_{i}"]) for i in range(count or 0)]
    atomic_save(meta, output_file)
    return os.fspath(output_file)


def _names_to_indices(osd: Dict[str, Any]) -> Dict[str, Any]:
    """Parameter-name keyed optimizer state -> index keyed (loads with ``Optimizer.load_state_dict``)."""
    index: Dict[str, int] = {}
    groups = []
    for group in osd["param_groups"]:
        ids = []
        for name in group["params"]:
            index.setdefault(name, len(index))
            ids.append(index[name])
        groups.append({**group, "params": ids})
    state = {index[name]: value for name, value in osd["state"].items() if name in index}
    return {"state": state, "param_groups": groups}


__all__ = ["FSDPStrategy", "convert_sharded_checkpoint"]
