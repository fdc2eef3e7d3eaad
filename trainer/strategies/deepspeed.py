"""DeepSpeed ZeRO (stages 1-3, CPU/NVMe offload) through the ``deepspeed`` package (Lightning's ``DeepSpeedStrategy``).

``deepspeed`` is an optional dependency (``pip install "trainer[deepspeed]"`` or ``pip install deepspeed``): without
it, ``Trainer(strategy="deepspeed_stage_2")`` (or a ``DeepSpeedStrategy``) raises ``MisconfigurationException`` at
construction saying how to install it.

Processes start as for DDP (this class subclasses ``DDPStrategy``: same launchers, cluster environments, ranks and
distributed sampler); ``torch.distributed`` is initialised by DDP's ``setup_environment`` and ``deepspeed.comm`` wraps
that group. The step:

* ``setup``: ``deepspeed.initialize(model=LightningModule, optimizer=<configure_optimizers' one optimizer>,
  config=...)``. The config is the user's ``config`` (dict, JSON path, or ``$PL_DEEPSPEED_CONFIG_PATH``) or one built
  from the constructor arguments (``zero_optimization``: stage, offload_optimizer/offload_param, buckets...), plus
  ``train_micro_batch_size_per_gpu`` (``logging_batch_size_per_gpu`` or the train loader's batch size),
  ``gradient_accumulation_steps`` (``Trainer(accumulate_grad_batches)``), ``gradient_clipping``
  (``Trainer(gradient_clip_val)``; clipping by value is refused) and the precision (``fp16``/``bf16`` sections).
* ``training_step``/``validation_step``/...: run through the engine's ``forward`` (the LightningModule's ``forward`` is
  redirected to the hook for that one call, so ZeRO-3's gather hooks and the engine's bookkeeping run).
* ``backward``: ``engine.backward(loss)``; the accumulation boundary is set from the loop (the window's non-final
  micro-batches are not boundaries: ZeRO keeps their gradients local), and the loss arrives already divided by
  ``accumulate_grad_batches`` (so ``scale_wrt_gas=False``: no second division).
* ``optimizer_step``: the closure, ``on_before_optimizer_step``, then ``engine.step()`` (which clips, unscales fp16
  and updates). ``handles_gradient_accumulation`` is True, as in Lightning.
* Checkpoints are folders written by ``engine.save_checkpoint`` (each rank its ZeRO partitions, the Trainer's state in
  the engine's ``client_state``); ``ckpt_path=<folder>`` resumes through ``engine.load_checkpoint`` after
  ``deepspeed.initialize`` (``validate``/``test``/``predict`` on a fresh module load the consolidated fp32 weights
  before ``deepspeed.initialize`` instead: DeepSpeed's inference engine cannot load a ZeRO-3 folder itself).
  ``convert_zero_checkpoint_to_fp32_state_dict(folder, file)`` writes one Lightning-layout
  file (fp32 ``state_dict`` through ``deepspeed.utils.zero_to_fp32``) that loads into a single-device Trainer.

Not supported here (each raises a clear ``MisconfigurationException``): more than one optimizer or scheduler,
``gradient_clip_algorithm="value"``, ``precision="64-true"``, NVMe offload where DeepSpeed's ``async_io`` op cannot be
built (no libaio), ``load_full_weights=True`` (a single-file checkpoint into ZeRO-3), ``remote_device`` (a model built
under ``deepspeed.zero.Init``: ``configure_model`` runs without it; ZeRO-3 partitions the built model in
``deepspeed.initialize``). The compiled engine (``Trainer(compile=True)``) runs DeepSpeed eagerly (one warning).
"""
from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, Iterator, List, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.exceptions import MisconfigurationException
from trainer.plugins.precision.deepspeed import DeepSpeedPrecision
from trainer.precision import Precision
from trainer.strategies.ddp import DDPStrategy, default_pg_timeout

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

#: Lightning's registered names -> ``DeepSpeedStrategy`` arguments
DEEPSPEED_STRATEGIES: Dict[str, Dict[str, Any]] = {
    "deepspeed": {"stage": 2},
    "deepspeed_stage_1": {"stage": 1},
    "deepspeed_stage_2": {"stage": 2},
    "deepspeed_stage_2_offload": {"stage": 2, "offload_optimizer": True},
    "deepspeed_stage_3": {"stage": 3},
    "deepspeed_stage_3_offload": {"stage": 3, "offload_optimizer": True, "offload_parameters": True},
    "deepspeed_stage_3_offload_nvme": {
        "stage": 3, "offload_optimizer": True, "offload_parameters": True,
        "offload_params_device": "nvme", "offload_optimizer_device": "nvme",
    },
}
DEEPSPEED_ENV_VAR = "PL_DEEPSPEED_CONFIG_PATH"
#: keys DeepSpeed itself writes into a checkpoint's model-states file (the rest is the Trainer's ``client_state``)
_DEEPSPEED_KEYS = frozenset({
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
    "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
    "csr_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size", "mp_world_size",
    "ds_config", "ds_version", "checkpoint_parallel_dimensions",
})
_CKPT_TAG = "checkpoint"


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def _require_deepspeed(name: str) -> None:
    if not deepspeed_available():
        raise MisconfigurationException(
            "To use the `DeepSpeedStrategy`, you must have DeepSpeed installed. Install it by running"
            f" `pip install -U deepspeed`. (`Trainer(strategy={name!r})`; `pip install \"trainer[deepspeed]\"` also"
            " installs it, `DS_BUILD_OPS=0 pip install deepspeed` on a machine without a CUDA toolkit; or use"
            " `strategy='fsdp'`: sharded parameters/gradients/optimizer state through PyTorch alone.)"
        )


def _import_deepspeed(accelerator: str) -> Any:
    """Imports ``deepspeed`` with its accelerator matching the Trainer's (``DS_ACCELERATOR=cpu`` on CPU)."""
    if accelerator == "cpu" and "deepspeed" not in sys.modules:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # inherited by the processes the launcher starts later
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    ds_device = get_accelerator().device_name()
    if ds_device != accelerator:
        raise MisconfigurationException(
            f"`Trainer(accelerator={accelerator!r})` with DeepSpeed, but DeepSpeed selected its {ds_device!r}"
            f" accelerator (DS_ACCELERATOR={os.environ.get('DS_ACCELERATOR')!r}). Set `DS_ACCELERATOR={accelerator}`"
            " in the environment before anything imports `deepspeed`."
        )
    return deepspeed


class DeepSpeedStrategy(DDPStrategy):
    """Lightning's ``DeepSpeedStrategy`` arguments on the ``deepspeed`` engine (see the module docstring).

    The ZeRO arguments (``stage``, ``offload_*``, buffer and bucket sizes, ``aio`` settings...) build the config when
    ``config`` is None (and ``$PL_DEEPSPEED_CONFIG_PATH`` is unset); a given ``config`` is used as it is, completed
    with batch size, accumulation, clipping and precision. ``start_method``/``timeout``/``process_group_backend``
    are DDP's.
    """

    strategy_name = "deepspeed"
    handles_gradient_accumulation = True
    DEEPSPEED_ENV_VAR = DEEPSPEED_ENV_VAR

    def __init__(
        self,
        accelerator: Optional[Any] = None,
        zero_optimization: bool = True,
        stage: int = 2,
        remote_device: Optional[str] = None,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        offload_params_device: str = "cpu",
        nvme_path: str = "/local_nvme",
        params_buffer_count: int = 5,
        params_buffer_size: int = 100_000_000,
        max_in_cpu: int = 1_000_000_000,
        offload_optimizer_device: str = "cpu",
        optimizer_buffer_count: int = 4,
        block_size: int = 1048576,
        queue_depth: int = 8,
        single_submit: bool = False,
        overlap_events: bool = True,
        thread_count: int = 1,
        pin_memory: bool = False,
        sub_group_size: int = 1_000_000_000_000,
        contiguous_gradients: bool = True,
        overlap_comm: bool = True,
        allgather_partitions: bool = True,
        reduce_scatter: bool = True,
        allgather_bucket_size: int = 200_000_000,
        reduce_bucket_size: int = 200_000_000,
        zero_allow_untested_optimizer: bool = True,
        logging_batch_size_per_gpu: Union[str, int] = "auto",
        config: Optional[Union[str, os.PathLike, Dict[str, Any]]] = None,
        logging_level: int = logging.WARN,
        parallel_devices: Optional[List[torch.device]] = None,
        cluster_environment: Optional[Any] = None,
        loss_scale: float = 0,
        initial_scale_power: int = 16,
        loss_scale_window: int = 1000,
        hysteresis: int = 2,
        min_loss_scale: int = 1,
        partition_activations: bool = False,
        cpu_checkpointing: bool = False,
        contiguous_memory_optimization: bool = False,
        synchronize_checkpoint_boundary: bool = False,
        load_full_weights: bool = False,
        precision_plugin: Optional[Any] = None,
        process_group_backend: Optional[str] = None,
        timeout: Optional[timedelta] = default_pg_timeout,
        exclude_frozen_parameters: bool = False,
        start_method: str = "popen",
    ) -> None:
        _require_deepspeed(f"deepspeed_stage_{stage}")
        super().__init__(
            accelerator=accelerator, parallel_devices=parallel_devices, cluster_environment=cluster_environment,
            precision_plugin=precision_plugin, process_group_backend=process_group_backend, timeout=timeout,
            start_method=start_method,
        )
        if zero_optimization and stage not in (0, 1, 2, 3):
            raise MisconfigurationException(f"`DeepSpeedStrategy(stage={stage!r})` is invalid: ZeRO stages are 0-3.")
        if zero_optimization and offload_parameters and stage != 3:
            raise MisconfigurationException(
                f"`DeepSpeedStrategy(offload_parameters=True)` needs ZeRO stage 3 (got stage={stage}); stage 2 can"
                " offload the optimizer state only (`offload_optimizer=True`)."
            )
        if zero_optimization and offload_optimizer and stage == 0:
            raise MisconfigurationException("`DeepSpeedStrategy(offload_optimizer=True)` needs ZeRO stage 1, 2 or 3.")
        if load_full_weights:
            raise MisconfigurationException(
                "`DeepSpeedStrategy(load_full_weights=True)` is not supported by this Trainer: resume from the DeepSpeed"
                " checkpoint folder, or load a single file into the module before `fit` (e.g."
                " `Module.load_from_checkpoint` on a file written by `convert_zero_checkpoint_to_fp32_state_dict`)."
            )
        if remote_device is not None:
            raise MisconfigurationException(
                f"`DeepSpeedStrategy(remote_device={remote_device!r})` is not supported by this Trainer: it places"
                " parameters created under `deepspeed.zero.Init`, and `configure_model` does not run under it here"
                " (ZeRO-3 partitions the built model in `deepspeed.initialize`). Use `offload_parameters=True` with"
                " `offload_params_device='cpu'|'nvme'` to keep the partitions off the device."
            )
        for name, device in (("offload_params_device", offload_params_device),
                             ("offload_optimizer_device", offload_optimizer_device)):
            if device not in ("cpu", "nvme"):
                raise MisconfigurationException(f"`DeepSpeedStrategy({name}={device!r})` is invalid: use 'cpu' or 'nvme'.")
        uses_nvme = (offload_parameters and offload_params_device == "nvme") or (
            offload_optimizer and offload_optimizer_device == "nvme")
        if zero_optimization and uses_nvme:
            _check_nvme(nvme_path)

        self.config = self._load_config(config)
        if self.config is None:
            self.config = _default_config(
                zero_optimization=zero_optimization, zero_allow_untested_optimizer=zero_allow_untested_optimizer,
                logging_batch_size_per_gpu=logging_batch_size_per_gpu, partition_activations=partition_activations,
                cpu_checkpointing=cpu_checkpointing, contiguous_memory_optimization=contiguous_memory_optimization,
                synchronize_checkpoint_boundary=synchronize_checkpoint_boundary, offload_optimizer=offload_optimizer,
                offload_parameters=offload_parameters, nvme_path=nvme_path,
                offload_params_device=offload_params_device, params_buffer_count=params_buffer_count,
                params_buffer_size=params_buffer_size, max_in_cpu=max_in_cpu,
                offload_optimizer_device=offload_optimizer_device, optimizer_buffer_count=optimizer_buffer_count,
                pin_memory=pin_memory, block_size=block_size, queue_depth=queue_depth, single_submit=single_submit,
                overlap_events=overlap_events, thread_count=thread_count, stage=stage,
                contiguous_gradients=contiguous_gradients, overlap_comm=overlap_comm,
                allgather_partitions=allgather_partitions, reduce_scatter=reduce_scatter,
                allgather_bucket_size=allgather_bucket_size, reduce_bucket_size=reduce_bucket_size,
                sub_group_size=sub_group_size,
            )
        elif "gradient_accumulation_steps" in self.config:
            raise MisconfigurationException(
                "Do not set `gradient_accumulation_steps` in the DeepSpeed config as this will be set with the"
                " `accumulate_grad_batches` argument passed via the Trainer."
            )
        self._user_config = self.config
        self.remote_device = remote_device
        self.load_full_weights = load_full_weights
        self.exclude_frozen_parameters = exclude_frozen_parameters
        self.logging_level = logging_level
        self.loss_scale = loss_scale
        self.initial_scale_power = initial_scale_power
        self.loss_scale_window = loss_scale_window
        self.hysteresis = hysteresis
        self.min_loss_scale = min_loss_scale
        self._engine: Optional[Any] = None
        self._engine_for_fit = False
        self._accumulating = False
        self._pending_load: Optional[str] = None

    # ---------------------------------------------------------------- precision: always DeepSpeed's
    @property  # type: ignore[override]
    def precision_plugin(self) -> Precision:
        return self._precision_plugin

    @precision_plugin.setter
    def precision_plugin(self, plugin: Precision) -> None:
        if not isinstance(plugin, DeepSpeedPrecision):
            trainer = getattr(plugin, "trainer", None)
            plugin = DeepSpeedPrecision(getattr(plugin, "precision", "32-true"))
            plugin.trainer = trainer
        self._precision_plugin = plugin

    def default_precision_plugin(self, precision: str, device_type: str) -> Precision:
        return DeepSpeedPrecision(precision)

    # ---------------------------------------------------------------- config
    def _load_config(self, config: Any) -> Optional[Dict[str, Any]]:
        if config is None and DEEPSPEED_ENV_VAR in os.environ:
            log.info(f"Loading DeepSpeed config from the {DEEPSPEED_ENV_VAR} environment variable")
            config = os.environ[DEEPSPEED_ENV_VAR]
        if isinstance(config, (str, os.PathLike)):
            if not os.path.isfile(config):
                raise MisconfigurationException(
                    f"You passed in a path to a DeepSpeed config but the path does not exist: {os.fspath(config)}"
                )
            with open(config) as f:
                config = json.load(f)
        if config is not None and not isinstance(config, dict):
            raise MisconfigurationException(
                f"`DeepSpeedStrategy(config=...)` must be a dict or a path to a JSON file, got {type(config).__name__}."
            )
        return None if config is None else dict(config)

    @property
    def zero_stage_3(self) -> bool:
        zero = (self.config or {}).get("zero_optimization")
        return isinstance(zero, dict) and zero.get("stage") == 3

    def _format_config(self, trainer: "Trainer") -> Dict[str, Any]:
        """The config for ``deepspeed.initialize`` in a fit: the user's/built one + batch size, accumulation,
        clipping and precision (a fresh copy for each fit)."""
        config = json.loads(json.dumps(self._user_config))
        config["gradient_accumulation_steps"] = int(trainer.accumulate_grad_batches)
        if "train_micro_batch_size_per_gpu" not in config:
            config["train_micro_batch_size_per_gpu"] = _auto_batch_size(trainer)
        if "gradient_clipping" not in config:
            config["gradient_clipping"] = float(trainer.gradient_clip_val or 0.0)
        self._format_precision(config)
        return config

    def _format_precision(self, config: Dict[str, Any]) -> None:
        precision = self.precision_plugin.precision
        if "fp16" not in config and precision in ("16-mixed", "16-true"):
            config["fp16"] = {
                "enabled": True, "loss_scale": self.loss_scale, "initial_scale_power": self.initial_scale_power,
                "loss_scale_window": self.loss_scale_window, "hysteresis": self.hysteresis,
                "min_loss_scale": self.min_loss_scale,
            }
        elif "bf16" not in config and precision in ("bf16-mixed", "bf16-true"):
            config["bf16"] = {"enabled": True}

    # ---------------------------------------------------------------- processes
    def _configure(self, accelerator: str, device_ids: List[int], num_nodes: int) -> None:
        super()._configure(accelerator, device_ids, num_nodes)
        self._accelerator_name = accelerator

    def setup_environment(self) -> None:
        accelerator = getattr(self, "_accelerator_name", self.root_device.type)
        deepspeed = _import_deepspeed(accelerator)
        deepspeed.utils.logging.logger.setLevel(self.logging_level)
        env = self.cluster_environment
        # deepspeed.comm reads these (without them it tries MPI discovery)
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["RANK"] = str(self.global_rank)
        os.environ["WORLD_SIZE"] = str(self.world_size)
        os.environ["LOCAL_RANK"] = str(self.local_rank)
        os.environ.setdefault("LOCAL_WORLD_SIZE", str(self.num_processes))
        super().setup_environment()  # torch.distributed's default group (gloo / nccl)
        kwargs: Dict[str, Any] = {}
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        deepspeed.init_distributed(self.process_group_backend, distributed_port=env.main_port,
                                   dist_init_required=False, verbose=False, **kwargs)

    # ---------------------------------------------------------------- set-up
    @property
    def deepspeed_engine(self) -> Any:
        if self._engine is None:
            raise RuntimeError("The DeepSpeed engine is created in `setup` (at the start of fit/validate/test/predict).")
        return self._engine

    def setup(self, trainer: "Trainer") -> None:
        module = self._lightning_module
        assert module is not None
        fitting = trainer.state.fn == "fit"
        engine = self._engine
        if engine is not None and engine.module is module and (self._engine_for_fit or not fitting):
            self._model = engine  # a later validate/test/fit on the same module reuses its engine (ZeRO-3 shards)
            if fitting:
                self._adopt_optimizers(trainer, engine)
        else:
            self.model_to_device()
            if fitting:
                self._init_train(trainer, module)
            else:
                if self._pending_load is not None:
                    # DeepSpeed's inference engine cannot load a ZeRO-3 folder (its DeepSpeedZeRoOffload lacks
                    # `_restore_from_bit16_weights`): load the consolidated fp32 weights before ZeRO partitions them
                    self._load_full_weights(module, self._pending_load)
                    self._pending_load = None
                self._init_inference(module)
        if self._pending_load is not None:
            self._load_engine_checkpoint(self._pending_load, fitting)
            self._pending_load = None
        self.barrier("deepspeed-setup")

    def _init_train(self, trainer: "Trainer", module: nn.Module) -> None:
        import deepspeed

        from trainer.hooks import is_overridden

        if (trainer.gradient_clip_algorithm or "norm").lower() == "value":
            raise MisconfigurationException("DeepSpeed does not support clipping gradients by value.")
        if is_overridden("configure_gradient_clipping", module):
            warnings.warn(
                "Since DeepSpeed handles gradient clipping internally, the default"
                " `LightningModule.configure_gradient_clipping` implementation will not actually clip gradients."
                " The hook will still be called. Consider setting"
                " `Trainer(gradient_clip_val=..., gradient_clip_algorithm='norm')` which will use the internal mechanism."
            )
        config = self._format_config(trainer)
        self.config = config
        optimizer: Optional[Optimizer] = None
        if "optimizer" in config:
            log.info("An optimizer is specified in the DeepSpeed config; `configure_optimizers` is not called.")
            self.optimizers, self.lr_scheduler_configs = [], []
        else:
            super().setup_optimizers(trainer)
            if len(self.optimizers) != 1 or len(self.lr_scheduler_configs) > 1:
                raise MisconfigurationException(
                    "DeepSpeed currently only supports single optimizer, single optional scheduler (got"
                    f" {len(self.optimizers)} optimizer(s), {len(self.lr_scheduler_configs)} scheduler(s))."
                )
            optimizer = self.optimizers[0]
        params = [p for p in module.parameters() if p.requires_grad]
        engine, _, _, _ = deepspeed.initialize(
            model=module, model_parameters=params, optimizer=optimizer, config=config, dist_init_required=False,
        )
        self._engine = engine
        self._engine_for_fit = True
        self._model = engine
        self._adopt_optimizers(trainer, engine)

    def _adopt_optimizers(self, trainer: "Trainer", engine: Any) -> None:
        from trainer.core.optimizer import LightningOptimizer, LRSchedulerConfig

        self.optimizers = [engine.optimizer]
        self._lightning_optimizers = [LightningOptimizer(engine.optimizer, self)]
        ds_scheduler = engine.lr_scheduler
        if ds_scheduler is not None:  # built from the config's "scheduler": the Trainer steps it, per step
            engine.lr_scheduler = None
            if self.lr_scheduler_configs:
                self.lr_scheduler_configs[0].scheduler = ds_scheduler
            else:
                self.lr_scheduler_configs = [LRSchedulerConfig(ds_scheduler, interval="step")]

    def setup_optimizers(self, trainer: "Trainer") -> None:
        """Optimizers are created in ``setup`` together with the engine (``deepspeed.initialize``)."""

    def _init_inference(self, module: nn.Module) -> None:
        import deepspeed

        config: Dict[str, Any] = {"train_micro_batch_size_per_gpu": 1}
        for key in ("fp16", "bf16"):
            if key in self._user_config:
                config[key] = self._user_config[key]
        self._format_precision(config)
        if self.zero_stage_3:
            config["zero_allow_untested_optimizer"] = self._user_config.get("zero_allow_untested_optimizer", True)
            config["zero_optimization"] = self._user_config["zero_optimization"]
        engine, _, _, _ = deepspeed.initialize(
            model=module, model_parameters=[], optimizer=None, lr_scheduler=None, config=config,
            dist_init_required=False,
        )
        self.config = config
        self._engine = engine
        self._engine_for_fit = False
        self._model = engine

    # ---------------------------------------------------------------- steps (through the engine's forward)
    def _redirect(self, hook: str, context: ContextManager, *args: Any, **kwargs: Any) -> Any:
        trainer = self.trainer
        assert trainer is not None
        engine, module = self._engine, self._lightning_module
        with context:
            if engine is None or self._model is not engine or module is None:
                return trainer._hooks.call_module(hook, *args, **kwargs)
            had_attr = "forward" in module.__dict__
            original = module.__dict__.get("forward")

            def restore() -> None:
                if had_attr:
                    module.forward = original  # type: ignore[method-assign]
                else:
                    module.__dict__.pop("forward", None)

            def redirected(*a: Any, **k: Any) -> Any:
                restore()  # `self(x)` inside the step runs the real forward
                return trainer._hooks.call_module(hook, *a, **k)

            module.forward = redirected  # type: ignore[method-assign]
            try:
                return engine(*args, **kwargs)
            finally:
                restore()

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._redirect("training_step", self.precision_plugin.train_step_context(), *args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._redirect("validation_step", self.precision_plugin.val_step_context(), *args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._redirect("test_step", self.precision_plugin.test_step_context(), *args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._redirect("predict_step", self.precision_plugin.predict_step_context(), *args, **kwargs)

    def block_backward_sync(self) -> ContextManager:
        return self._accumulation_window()

    @contextmanager
    def _accumulation_window(self) -> Iterator[None]:
        """A non-final micro-batch of an accumulation window: its backward is not an accumulation boundary."""
        self._accumulating = True
        try:
            yield
        finally:
            self._accumulating = False

    def backward(self, closure_loss: Tensor, optimizer: Optional[Any], *args: Any, **kwargs: Any) -> Tensor:
        # the base runs the backward hooks around DeepSpeedPrecision.backward -> engine_backward
        return super(DDPStrategy, self).backward(closure_loss, optimizer, *args, **kwargs)

    def engine_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """``engine.backward(loss)``, marking whether this micro-batch ends an accumulation window."""
        engine = self.deepspeed_engine
        engine.set_gradient_accumulation_boundary(not self._accumulating)
        kwargs.setdefault("scale_wrt_gas", False)  # the loop already divided by accumulate_grad_batches
        engine.backward(loss, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        model = model or self._lightning_module
        return self.precision_plugin.optimizer_step(optimizer, model=model, closure=closure, **kwargs)

    # ---------------------------------------------------------------- checkpoints (folders)
    def lightning_module_state_dict(self) -> Dict[str, Any]:
        """The module's own state dict (under ZeRO-3: this rank's partition placeholders). A checkpoint does not
        use it: ``engine.save_checkpoint`` writes the weights."""
        assert self._lightning_module is not None
        return self._lightning_module.state_dict()

    def optimizer_state(self, optimizer: Optimizer) -> Dict[str, Any]:
        return {}  # written by engine.save_checkpoint (each rank its ZeRO partition)

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: Union[str, os.PathLike]) -> None:
        """Every rank calls this (collective): ``engine.save_checkpoint(folder, client_state=<the Trainer's state>)``."""
        path = self.broadcast(os.fspath(filepath))
        engine = self._engine
        if engine is None:
            raise RuntimeError("DeepSpeed checkpoints are written by the engine, which exists only after `setup`.")
        if self.is_global_zero and (os.path.isfile(path) or os.path.islink(path)):
            os.remove(path)  # overwrite a file (or a `last` link) of the same name with the folder
        self.barrier("deepspeed-save-prepare")
        client_state = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        engine.save_checkpoint(path, client_state=client_state, tag=_CKPT_TAG,
                               exclude_frozen_parameters=self.exclude_frozen_parameters)

    def load_checkpoint(self, checkpoint_path: Union[str, os.PathLike]) -> Dict[str, Any]:
        """Called before ``setup``: returns the Trainer's state (the ``client_state``) read from the folder; the
        engine loads weights and optimizer partitions right after ``deepspeed.initialize`` (in ``setup``)."""
        path = os.fspath(checkpoint_path)
        if not os.path.isdir(path):
            raise MisconfigurationException(
                f"DeepSpeed resumes from a checkpoint folder written by `DeepSpeedStrategy`; {path!r} is not a folder."
                " A single-file checkpoint loads with `Module.load_from_checkpoint` before `fit`."
            )
        client_state = read_client_state(path)
        client_state["state_dict"] = {}  # weights: engine.load_checkpoint in setup
        client_state["optimizer_states"] = [_PendingEngineState(path)]
        self._pending_load = path
        return client_state

    def load_model_state_dict(self, state_dict: Dict[str, Any], strict: bool = True) -> None:
        if self._pending_load is None:  # not a DeepSpeed folder (never reached: load_checkpoint refuses files)
            super().load_model_state_dict(state_dict, strict=strict)

    def _load_full_weights(self, module: nn.Module, path: str) -> None:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(path, tag=os.path.basename(_tag_dir(path)))
        current = module.state_dict()
        state = {k: v.to(current[k].dtype) if k in current else v for k, v in state.items()}
        strict = getattr(module, "strict_loading", True)
        if not self.exclude_frozen_parameters:
            module.load_state_dict(state, strict=strict)
        else:  # frozen parameters were not saved
            module.load_state_dict(state, strict=False)

    def _load_engine_checkpoint(self, path: str, fitting: bool) -> None:
        engine = self.deepspeed_engine
        module = self._lightning_module
        load_path, client_state = engine.load_checkpoint(
            path, load_optimizer_states=fitting and self._engine_for_fit, load_lr_scheduler_states=False,
            load_module_strict=getattr(module, "strict_loading", True),
        )
        if load_path is None:
            raise MisconfigurationException(
                f"DeepSpeed was unable to load the checkpoint {path!r}. Ensure you passed in a DeepSpeed checkpoint"
                " folder written by `DeepSpeedStrategy`."
            )
        # the Trainer then calls optimizer.load_state_dict(_PendingEngineState): already loaded, skip it
        for opt in self.optimizers:
            if "load_state_dict" not in opt.__dict__:
                original = opt.load_state_dict

                def load_state_dict(state: Any, _original: Callable = original) -> Any:
                    if isinstance(state, _PendingEngineState):
                        return None
                    return _original(state)

                opt.load_state_dict = load_state_dict  # type: ignore[method-assign]

    def remove_checkpoint(self, filepath: Union[str, os.PathLike]) -> None:
        if self.is_global_zero:
            path = os.fspath(filepath)
            if os.path.islink(path) or os.path.isfile(path):
                os.remove(path)
            elif os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)

    def teardown(self) -> None:
        self._model = self._lightning_module  # the engine stays (a later validate/test reuses it)
        self._accumulating = False


class _PendingEngineState(dict):
    """Stands for the optimizer state in a DeepSpeed folder (loaded by ``engine.load_checkpoint``, not by the loop)."""

    def __init__(self, path: str) -> None:
        super().__init__(__deepspeed_folder__=path)


def _check_nvme(nvme_path: str) -> None:
    from deepspeed.ops.op_builder import AsyncIOBuilder

    if not AsyncIOBuilder().is_compatible(verbose=False):
        raise MisconfigurationException(
            "DeepSpeed NVMe offload (`offload_*_device='nvme'`,"
            " `strategy='deepspeed_stage_3_offload_nvme'`) needs DeepSpeed's `async_io` op, which cannot be built here:"
            " install libaio (`apt install libaio-dev`) and reinstall deepspeed; or offload to 'cpu'"
            " (`strategy='deepspeed_stage_3_offload'`)."
        )
    if not os.path.isdir(nvme_path):
        raise MisconfigurationException(
            f"`DeepSpeedStrategy(nvme_path={nvme_path!r})`: the folder does not exist (it must be on an NVMe drive)."
        )


def _auto_batch_size(trainer: "Trainer") -> int:
    """``train_micro_batch_size_per_gpu`` (DeepSpeed's throughput logging): the train loader's batch size, else 1."""
    source = getattr(trainer, "_data_sources", {}).get("train_dataloader")
    if source is None and trainer.datamodule is not None:
        return 1
    batch_sampler = getattr(source, "batch_sampler", None)
    size = getattr(batch_sampler, "batch_size", None)
    return int(size) if isinstance(size, int) and size > 0 else 1


def _default_config(
    zero_optimization: bool, zero_allow_untested_optimizer: bool, logging_batch_size_per_gpu: Union[str, int],
    partition_activations: bool, cpu_checkpointing: bool, contiguous_memory_optimization: bool,
    synchronize_checkpoint_boundary: bool, offload_optimizer: bool, offload_parameters: bool, nvme_path: str,
    offload_params_device: str, params_buffer_count: int, params_buffer_size: int, max_in_cpu: int,
    offload_optimizer_device: str, optimizer_buffer_count: int, pin_memory: bool, block_size: int, queue_depth: int,
    single_submit: bool, overlap_events: bool, thread_count: int, **zero_kwargs: Any,
) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {
        "activation_checkpointing": {
            "partition_activations": partition_activations,
            "cpu_checkpointing": cpu_checkpointing,
            "contiguous_memory_optimization": contiguous_memory_optimization,
            "synchronize_checkpoint_boundary": synchronize_checkpoint_boundary,
        },
        "aio": {
            "block_size": block_size, "queue_depth": queue_depth, "single_submit": single_submit,
            "overlap_events": overlap_events, "thread_count": thread_count,
        },
    }
    if zero_optimization:
        zero_config = dict(zero_kwargs)
        if zero_config.get("stage") != 3:  # stage-3-only keys
            zero_config.pop("sub_group_size", None)
        if offload_optimizer:
            zero_config["offload_optimizer"] = {
                "device": offload_optimizer_device, "nvme_path": nvme_path, "buffer_count": optimizer_buffer_count,
                "pin_memory": pin_memory,
            }
        if offload_parameters:
            zero_config["offload_param"] = {
                "device": offload_params_device, "nvme_path": nvme_path, "buffer_count": params_buffer_count,
                "buffer_size": params_buffer_size, "max_in_cpu": max_in_cpu, "pin_memory": pin_memory,
            }
        cfg = {"zero_allow_untested_optimizer": zero_allow_untested_optimizer, "zero_optimization": zero_config, **cfg}
    if logging_batch_size_per_gpu != "auto":
        cfg = {"train_micro_batch_size_per_gpu": logging_batch_size_per_gpu, **cfg}
    return cfg


# -------------------------------------------------------------------- checkpoint folders
def _tag_dir(folder: str, tag: Optional[str] = None) -> str:
    if tag is None:
        latest = os.path.join(folder, "latest")
        if os.path.isfile(latest):
            with open(latest) as f:
                tag = f.read().strip()
        else:
            tag = _CKPT_TAG
    path = os.path.join(folder, tag)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{folder!r} is not a DeepSpeed checkpoint folder (no {tag!r} inside).")
    return path


def read_client_state(folder: Union[str, os.PathLike], tag: Optional[str] = None) -> Dict[str, Any]:
    """The Trainer's state saved with a DeepSpeed checkpoint folder (no weights, no optimizer state)."""
    tag_dir = _tag_dir(os.fspath(folder), tag)
    files = sorted(glob.glob(os.path.join(tag_dir, "mp_rank_00_model_states.pt"))) or sorted(
        glob.glob(os.path.join(tag_dir, "zero_pp_rank_0_mp_rank_00_model_states.pt"))) or sorted(
        glob.glob(os.path.join(tag_dir, "*model_states.pt")))
    if not files:
        raise FileNotFoundError(f"{tag_dir!r} holds no DeepSpeed model states file.")
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    return {k: v for k, v in state.items() if k not in _DEEPSPEED_KEYS}


def convert_zero_checkpoint_to_fp32_state_dict(
    checkpoint_dir: Union[str, os.PathLike], output_file: Union[str, os.PathLike], tag: Optional[str] = None,
) -> Dict[str, Any]:
    """A DeepSpeed checkpoint folder (any ZeRO stage, any number of ranks) -> one Lightning-layout file whose
    ``state_dict`` holds full fp32 weights (``deepspeed.utils.zero_to_fp32``); the Trainer's state (loops, callbacks,
    hyperparameters...) comes along. One process, no GPU. It loads into a single-device Trainer
    (``ckpt_path=file`` resumes weights and loops; the optimizer state is not converted: ``optimizer_states`` is
    left out, as in Lightning, so such a file resumes weights only through ``Module.load_from_checkpoint``).
    Returns the written dict."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from trainer.checkpoint import atomic_save

    folder = os.fspath(checkpoint_dir)
    tag_dir = _tag_dir(folder, tag)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(folder, tag=os.path.basename(tag_dir))
    checkpoint = read_client_state(folder, os.path.basename(tag_dir))
    checkpoint["state_dict"] = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                                for k, v in state_dict.items()}
    atomic_save(checkpoint, output_file)
    return checkpoint


def build_deepspeed(name: str) -> Any:
    _require_deepspeed(name)
    return DeepSpeedStrategy(**DEEPSPEED_STRATEGIES[name])


__all__ = [
    "DeepSpeedStrategy", "DeepSpeedPrecision", "DEEPSPEED_STRATEGIES", "deepspeed_available", "build_deepspeed",
    "convert_zero_checkpoint_to_fp32_state_dict", "read_client_state",
]
