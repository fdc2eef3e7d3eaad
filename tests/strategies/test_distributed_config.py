"""Strategy resolution, cluster environments, sampler insertion and spawn checks (one process, no launch)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, TensorDataset

import trainer as L
from trainer.exceptions import MisconfigurationException
from trainer.strategies import (
    DDPStrategy,
    FSDPStrategy,
    LightningEnvironment,
    SingleDeviceStrategy,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_environment,
)
from trainer.strategies.ddp import DistributedSamplerWrapper, UnrepeatedDistributedSampler, _add_distributed_sampler
from trainer.strategies.environment import _first_slurm_host

_LAUNCH = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
           "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_JOB_NAME", "SLURM_NTASKS_PER_NODE",
           "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in _LAUNCH:
        monkeypatch.delenv(k, raising=False)


def _t(**kw):
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     **kw)


def test_auto_resolution():
    assert isinstance(_t(accelerator="cpu", devices=1).strategy, SingleDeviceStrategy)
    s = _t(accelerator="cpu", devices=2).strategy
    assert type(s) is DDPStrategy and s.world_size == 2 and s.global_rank == 0 and s.process_group_backend == "gloo"
    assert _t(accelerator="cpu", devices=2, strategy="fsdp").strategy.strategy_name == "fsdp"
    spawn = _t(accelerator="cpu", devices=2, strategy="ddp_spawn").strategy
    assert type(spawn.launcher).__name__ == "MultiProcessingLauncher"
    assert type(_t(accelerator="cpu", devices=2, strategy="ddp").strategy.launcher).__name__ == "SubprocessScriptLauncher"


def test_trainer_rank_properties_before_launch():
    t = _t(accelerator="cpu", devices=2, num_nodes=1)
    assert (t.world_size, t.global_rank, t.local_rank, t.node_rank, t.is_global_zero) == (2, 0, 0, 0, True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_nodes=0), "num_nodes"),
    (dict(strategy="nonsense"), "strategy"),
    (dict(accelerator="gpu", strategy="ddp"), "GPU"),
    (dict(devices=2, strategy="single_device"), "single-device"),
    (dict(strategy=DDPStrategy(process_group_backend="nccl")), "nccl"),
])
def test_bad_combinations_raise_at_construction(kwargs, match):
    kwargs.setdefault("accelerator", "cpu")
    with pytest.raises(MisconfigurationException, match=match):
        _t(**kwargs)


@pytest.mark.parametrize("make, match", [
    (lambda: DDPStrategy(start_method="thread"), "start_method"),
    (lambda: DDPStrategy(not_a_ddp_arg=1), "not_a_ddp_arg"),
    (lambda: DDPStrategy(timeout=30), "timeout"),
    (lambda: FSDPStrategy(sharding_strategy="NO_SHARD"), "sharding_strategy"),
    (lambda: FSDPStrategy(state_dict_type="local"), "state_dict_type"),
    (lambda: FSDPStrategy(mixed_precision="bf16"), "MixedPrecisionPolicy"),
    (lambda: FSDPStrategy(min_num_params=0), "min_num_params"),
])
def test_bad_strategy_arguments(make, match):
    with pytest.raises(MisconfigurationException, match=match):
        make()


def test_ddp_kwargs_reach_ddp():
    s = DDPStrategy(find_unused_parameters=True, static_graph=False, gradient_as_bucket_view=True,
                    timeout=timedelta(seconds=5))
    assert s._ddp_kwargs == dict(find_unused_parameters=True, static_graph=False, gradient_as_bucket_view=True)
    assert _t(accelerator="cpu", devices=1, strategy="ddp_find_unused_parameters_true").strategy._ddp_kwargs == {
        "find_unused_parameters": True}


def test_torchrun_environment(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    for k, v in dict(RANK="3", LOCAL_RANK="1", WORLD_SIZE="4", GROUP_RANK="1", LOCAL_WORLD_SIZE="2",
                     MASTER_ADDR="10.0.0.1", MASTER_PORT="1234").items():
        monkeypatch.setenv(k, v)
    assert isinstance(detect_environment(), TorchElasticEnvironment)
    t = _t(accelerator="cpu", devices=2, num_nodes=2)
    assert (t.global_rank, t.local_rank, t.node_rank, t.world_size, t.is_global_zero) == (3, 1, 1, 4, False)
    assert t.strategy.cluster_environment.creates_processes_externally
    with pytest.raises(MisconfigurationException, match="nproc-per-node"):
        _t(accelerator="cpu", devices=3, num_nodes=1)


def test_slurm_environment(monkeypatch):
    for k, v in dict(SLURM_NTASKS="4", SLURM_PROCID="2", SLURM_LOCALID="0", SLURM_NODEID="1",
                     SLURM_NODELIST="node[007-008]", SLURM_JOB_ID="12345", SLURM_JOB_NAME="train").items():
        monkeypatch.setenv(k, v)
    env = detect_environment()
    assert isinstance(env, SLURMEnvironment)
    assert env.main_address == "node007" and env.main_port == 12345
    t = _t(accelerator="cpu", devices=2, num_nodes=2)
    assert (t.global_rank, t.local_rank, t.node_rank, t.world_size) == (2, 0, 1, 4)
    with pytest.raises(MisconfigurationException, match="SLURM"):
        _t(accelerator="cpu", devices=2, num_nodes=1)
    assert _first_slurm_host("a1,b2") == "a1" and _first_slurm_host("gpu[3,5-6]") == "gpu3"


def test_local_environment_starts_processes_unless_launched(monkeypatch):
    assert isinstance(detect_environment(), LightningEnvironment)
    assert not LightningEnvironment().creates_processes_externally
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    t = _t(accelerator="cpu", devices=2)
    assert (t.global_rank, t.local_rank, t.is_global_zero) == (1, 1, False)


def _loader(**kw):
    return DataLoader(TensorDataset(torch.arange(10.0)), batch_size=2, **kw)


def test_distributed_sampler_insertion_keeps_shuffle_and_settings():
    kw = {"num_replicas": 2, "rank": 1}
    shuffled = _add_distributed_sampler(_loader(shuffle=True, drop_last=True), "train", kw)
    assert isinstance(shuffled.sampler, DistributedSampler) and shuffled.sampler.shuffle and shuffled.sampler.rank == 1
    assert shuffled.batch_size == 2 and shuffled.drop_last
    plain = _add_distributed_sampler(_loader(), "train", kw)
    assert not plain.sampler.shuffle and [b[0].tolist() for b in plain] == [[1.0, 3.0], [5.0, 7.0], [9.0]]
    val = _add_distributed_sampler(_loader(shuffle=True), "val", kw)
    assert not val.sampler.shuffle  # evaluation keeps order
    pred = _add_distributed_sampler(DataLoader(TensorDataset(torch.arange(5.0)), batch_size=2), "predict", kw)
    assert isinstance(pred.sampler, UnrepeatedDistributedSampler) and list(pred.sampler) == [1, 3]
    custom = _add_distributed_sampler(_loader(sampler=list(reversed(range(10)))), "train", kw)
    assert isinstance(custom.sampler, DistributedSamplerWrapper) and list(custom.sampler) == [8, 6, 4, 2, 0]
    already = _loader(sampler=DistributedSampler(TensorDataset(torch.arange(10.0)), num_replicas=2, rank=0))
    assert _add_distributed_sampler(already, "train", kw) is already
    # set_epoch reaches the inserted sampler (the loops call it every epoch)
    from trainer.loops.data import set_sampler_epoch

    set_sampler_epoch(shuffled, 3)
    assert shuffled.sampler.epoch == 3
    assert isinstance(_loader().sampler, SequentialSampler) and isinstance(_loader(shuffle=True).sampler, RandomSampler)


def test_use_distributed_sampler_false_keeps_loader():
    t = _t(accelerator="cpu", devices=2, use_distributed_sampler=False)
    loader = _loader()
    assert t.strategy.process_dataloader(loader, "train") is loader


def test_spawn_with_unpicklable_model_is_a_clear_error(tmp_path):
    from helpers import boring_model_class

    class Local(boring_model_class(L)):  # defined in a function: cannot be pickled
        pass

    t = _t(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1, default_root_dir=str(tmp_path))
    with pytest.raises(MisconfigurationException, match="pickl"):
        t.fit(Local(), DataLoader(TensorDataset(torch.randn(4, 32)), batch_size=2))


def test_collectives_are_identity_without_process_group():
    s = _t(accelerator="cpu", devices=2).strategy
    x = torch.tensor(2.0)
    assert s.reduce(x) is x and s.broadcast(7) == 7 and s.reduce_boolean_decision(True)
    assert s.all_gather(x).shape == (1,)
    s.barrier()
