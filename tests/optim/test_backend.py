"""trainer/optim/_backend.py: the C++ extension is present where the test command built it, and a
missing native backend is a warning, never a quiet switch to slower kernels."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from trainer.optim import _backend


def test_extension_is_built():
    """The README's set-up builds trainer._C; without it a third of the kernel tests would only skip.

    TRAINER_ALLOW_MISSING_EXT=1 is for a deliberate pure-Python install, never CI."""
    if os.environ.get("TRAINER_ALLOW_MISSING_EXT") == "1":
        pytest.skip("TRAINER_ALLOW_MISSING_EXT=1: a pure-Python install was asked for")
    assert _backend.HAS_CPP, (f"trainer._C did not load ({_backend._C_ERROR}); build it with "
                              "`pip install --no-build-isolation -e .` (scripts/setup.sh does)")


def test_missing_cpp_backend_is_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(_backend, "HAS_CPP", False)
    monkeypatch.setattr(_backend, "_C_ERROR", "ImportError: no module named trainer._C")
    monkeypatch.setattr(_backend, "_chosen", {})
    with caplog.at_level(logging.INFO, logger="trainer.optim"):
        assert _backend.resolve_backend("cpu") == "torch"
        assert _backend.resolve_backend("cpu") == "torch"  # decided and said once
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    msg = warnings[0].getMessage()
    assert "'cpp'" in msg and "no module named trainer._C" in msg and "'torch'" in msg


def test_normal_choice_is_info_only(monkeypatch, caplog):
    monkeypatch.setattr(_backend, "_chosen", {})
    with caplog.at_level(logging.INFO, logger="trainer.optim"):
        choice = _backend.resolve_backend("cpu")
    assert choice == _backend.available_backends("cpu")[0]
    if _backend.HAS_CPP:
        assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_compiled_update_uses_the_cuda_kernels_when_built(monkeypatch):
    """The compiled step's optimizer goes to torch.ops.trainer.* on CUDA when the CUDA kernels are built
    (it used to be CPU-only, leaving a GPU with inductor's per-parameter update)."""
    from trainer.optim import _backend as b

    monkeypatch.setattr(b, "HAS_CPP", True)
    monkeypatch.setattr(b, "HAS_CUDA_EXT", True)
    assert b.compiled_update_uses_ext({"cuda"})
    assert b.compiled_update_uses_ext({"cpu"})
    assert not b.compiled_update_uses_ext({"cpu", "cuda"})  # one kernel call cannot span devices
    assert not b.compiled_update_uses_ext({"mps"})
    assert not b.compiled_update_uses_ext(set())
    monkeypatch.setattr(b, "HAS_CUDA_EXT", False)  # a CPU-only build of trainer._C
    assert not b.compiled_update_uses_ext({"cuda"})
    assert b.compiled_update_uses_ext({"cpu"})
    monkeypatch.setattr(b, "HAS_CPP", False)
    assert not b.compiled_update_uses_ext({"cpu"})


def test_float_lr_stays_on_the_parameters_device_for_triton_and_torch_kernels():
    """A float lr must not become a new CPU tensor copied to the GPU every step (a blocking copy):
    the Triton/torch kernels get one device scalar per device, refreshed in place with fill_.
    The 'meta' device stands in for a GPU here."""
    from trainer.optim import functional as F

    meta = torch.device("meta")
    for backend in ("triton", "torch"):
        t1 = F._lr_tensor(0.1, meta, backend)
        t2 = F._lr_tensor(0.2, meta, backend)
        assert t1.device == meta and t1.dtype == torch.float32 and t1.dim() == 0
        assert t2 is t1  # refreshed in place, never re-created
    for backend in ("cpp", "cuda"):  # these read the scalar on the host: a CPU tensor costs no copy
        assert F._lr_tensor(0.1, meta, backend).device.type == "cpu"
    assert F._lr_tensor(0.1, torch.device("cpu"), "torch").item() == pytest.approx(0.1)
    given = torch.tensor(0.3, device=meta)
    assert F._lr_tensor(given, meta, "triton") is given  # a user's tensor lr (e.g. in a CUDA graph) as is


def test_compiled_adam_step_counter_lives_on_the_parameters_device():
    """The compiled engine keeps Adam's step on the parameter's device always (not only under CUDA
    graphs or 16-mixed), as torch's fused/capturable Adam does; 'meta' stands in for a GPU."""
    from trainer.compile.engine import init_adam_state, place_adam_step

    group = {"amsgrad": False}
    p = torch.zeros(3, device="meta")
    st: dict = {}
    init_adam_state(st, p, group)
    assert st["step"].device.type == "cpu"  # torch.optim's own initial placement, kept for the state_dict
    place_adam_step(st, p)
    assert st["step"].device == p.device and st["step"].dim() == 0
    on_device = st["step"]
    place_adam_step(st, p)
    assert st["step"] is on_device  # moved once, then left alone
    cpu_p, cpu_st = torch.zeros(3), {}
    init_adam_state(cpu_st, cpu_p, group)
    before = cpu_st["step"]
    place_adam_step(cpu_st, cpu_p)
    assert cpu_st["step"] is before


@pytest.mark.parametrize("amsgrad", [False, True])
def test_unfused_update_ops_take_device_lr_and_step_without_host_reads(monkeypatch, amsgrad):
    """The per-parameter ops of the compiled step read lr/step with float() only when they are CPU
    tensors; for device tensors (a GPU) they compute the same update as tensor arithmetic. The
    device path is forced on CPU tensors here and must match the host path."""
    from trainer.compile import ops

    assert ops._on_host(torch.zeros(()), torch.zeros(()))
    assert not ops._on_host(torch.zeros(()), torch.zeros((), device="meta"))

    def run(host: bool):
        monkeypatch.setattr(ops, "_on_host", lambda *ts: host)
        g = torch.Generator().manual_seed(0)
        p, b = torch.randn(5, 3, generator=g), torch.zeros(5, 3)
        m, v, vmax, step = torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5, 3), torch.tensor(0.0)
        for _ in range(3):
            grad = torch.randn(5, 3, generator=g)
            ops.adam_param_(p, grad, m, v, vmax if amsgrad else None, step, torch.tensor(1e-2), 0.9, 0.99, 1e-8,
                            0.1, amsgrad, False, True)
            ops.sgd_param_(p, grad, b, torch.tensor(0.1), 0.9, 0.0, 0.01, True, False)
        return p, m, v, b, step

    for a, h in zip(run(False), run(True)):
        torch.testing.assert_close(a, h, rtol=1e-5, atol=1e-6)
