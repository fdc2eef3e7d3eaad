"""The compiled step's caching CPU allocator (csrc/step_allocator.cpp, trainer/compile/allocator.py)."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
from trainer.compile import CompileConfig, allocator
from trainer.exceptions import MisconfigurationException

from .models import max_rel_diff

C = allocator.module()
pytestmark = pytest.mark.skipif(C is None, reason="trainer._C (the C++ extension) is not built")

BIG = 256 * 1024 // 4  # floats: 256 KiB, above MIN_BYTES


class active:
    def __enter__(self):
        self.before = C.step_alloc_set_active(True)

    def __exit__(self, *exc):
        C.step_alloc_set_active(self.before)


def test_a_freed_block_is_served_again_without_mapping():
    allocator.empty_cache()
    with active():
        a = torch.empty(BIG)
        ptr = a.data_ptr()
        del a
        s0 = allocator.stats()
        b = torch.ones(BIG)
        s1 = allocator.stats()
    assert b.data_ptr() == ptr and float(b.sum()) == BIG
    assert s1["hits"] == s0["hits"] + 1 and s1["mapped"] == s0["mapped"]
    assert s1["cached_bytes"] == s0["cached_bytes"] - BIG * 4
    big = torch.empty(1 << 20)  # 4 MiB: 2 MiB aligned (huge-page eligible)
    assert big.data_ptr() % 64 == 0
    with active():
        huge = torch.empty(1 << 20)
    assert huge.data_ptr() % (2 << 20) == 0


def test_only_large_blocks_inside_the_step_are_cached():
    with active():
        small = torch.empty(16)  # below MIN_BYTES: torch's allocator
        live = allocator.stats()["live_bytes"]
    outside = torch.empty(BIG)  # not in a step: torch's allocator
    assert allocator.stats()["live_bytes"] == live
    del small, outside
    assert C.step_alloc_set_active(False) is False


def test_blocks_freed_later_or_on_another_thread_return_to_the_cache():
    allocator.empty_cache()
    with active():
        kept = [torch.empty(BIG) for _ in range(3)]
    cached = allocator.stats()["cached_bytes"]
    kept.pop()  # freed outside the step
    t = threading.Thread(target=kept.clear)  # the rest freed on another thread
    t.start()
    t.join()
    assert allocator.stats()["cached_bytes"] == cached + 3 * BIG * 4
    allocator.empty_cache()
    assert allocator.stats()["cached_bytes"] == 0


def test_ops_give_the_same_values_in_and_out_of_the_step():
    # gelu/cat/sort reach the allocator through raw_allocate/raw_deallocate as well as DataPtrs
    x = torch.randn(BIG, generator=torch.Generator().manual_seed(0))

    def work():
        return [F.gelu(x), torch.cat([x, x]), x.sort().values, x.clone()]

    with active():
        inside = work()
    outside = work()
    for a, b in zip(inside, outside):
        assert torch.equal(a, b)
    del inside
    with active():
        again = work()  # served from the blocks just freed
    for a, b in zip(again, outside):
        assert torch.equal(a, b)


class Wide(L.LightningModule):
    """Activations of 64 x 512 floats (128 KiB): above MIN_BYTES, so the step uses the cache."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 512), nn.GELU(), nn.Linear(512, 8))
        self.mapped = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def on_train_epoch_end(self):
        self.mapped.append(allocator.stats().get("mapped"))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(256, 64, generator=g), torch.randint(0, 8, (256,), generator=g)),
                          batch_size=64)


def _fit(config):
    model = Wide()
    trainer = L.Trainer(max_epochs=3, compile=config, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model)
    return model, trainer


def test_compiled_step_uses_the_cache_and_trains_identically():
    ref, _ = _fit(CompileConfig(mode="strict", cpu_caching_allocator=False))
    hits = allocator.stats()["hits"]
    model, trainer = _fit(CompileConfig(mode="strict"))
    assert trainer.compile_report.mode == "full"
    assert max_rel_diff(model, ref) == 0.0  # the same kernels on the same values
    assert allocator.stats()["hits"] > hits
    # steady state: after the first epoch the step maps nothing new
    assert model.mapped[0] == model.mapped[1] == model.mapped[2] > 0
    assert allocator.stats()["cached_bytes"] == 0  # emptied when the fit ended
    engine = trainer.fit_loop.epoch_loop.automatic_optimization._engine
    assert all(g.alloc is not None for g in engine._graphs.values())


def test_a_step_without_large_buffers_does_not_switch_the_allocator():
    from .models import MLP, fit

    trainer = fit(MLP(n=32), CompileConfig(mode="strict"), epochs=1)
    engine = trainer.fit_loop.epoch_loop.automatic_optimization._engine
    assert engine._alloc is not None and engine._graphs
    assert all(g.alloc is None for g in engine._graphs.values())  # 16 x 16 floats: below MIN_BYTES


def test_config_checks_the_flag():
    with pytest.raises(MisconfigurationException, match="cpu_caching_allocator='no'"):
        CompileConfig(cpu_caching_allocator="no")
