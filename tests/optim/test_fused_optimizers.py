"""trainer.optim against torch.optim, step by step: params and every state tensor.

Runs every backend that can run on the CPU here (the C++ kernels of trainer._C, and the torch
fallback); the Triton kernels are checked under the interpreter in tests/kernels.
"""
from __future__ import annotations

import copy

import pytest
import torch
from helpers.optim_compare import Snapshot
from helpers.optim_compare import assert_state_close as _assert_state_close

import trainer.optim as topt
from trainer.optim import FusedAdam, FusedAdamW, FusedLion, FusedSGD
from trainer.optim import functional as F

BACKENDS = [pytest.param("cpp", marks=pytest.mark.skipif(not topt.HAS_CPP, reason="trainer._C not built")), "torch"]
# odd shapes: a 3-D tensor whose size is no multiple of any vector width, a scalar, an empty tensor
SHAPES = [(5, 123, 123), (), (0,), (7, 3), (1000,)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float16: dict(rtol=3e-3, atol=3e-3)}


def make_params(shapes=SHAPES, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def set_grads(params, step, noncontig=True):
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        if noncontig and p.dim() == 2 and p.numel() > 0:
            # a transposed (non-contiguous) gradient, as a matmul backward can produce
            p.grad = torch.randn(p.shape[::-1], generator=g).to(p.dtype).t()
            assert not p.grad.is_contiguous()
        else:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def assert_state_close(ref, ours, ref_p, our_p, tol=None):
    """fp32 within a few ulps where the run recorded a `Snapshot`; else the dtype's tolerance."""
    _assert_state_close(ref, ours, ref_p, our_p, tol if tol is not None else TOL)


def run_pair(make_ref, make_ours, steps=4, dtype=torch.float32):
    ref_p, our_p = make_params(dtype=dtype), make_params(dtype=dtype)
    ref, ours = make_ref(ref_p), make_ours(our_p)
    for s in range(steps):
        set_grads(ref_p, s)
        set_grads(our_p, s)
        if s == steps - 1:
            ref.before_last = Snapshot(ref, ref_p)
        ref.step()
        ours.step()
    return ref_p, our_p, ref, ours


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_adamw_matches_torch(backend, amsgrad, maximize):
    kw = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.1, amsgrad=amsgrad, maximize=maximize)
    ref_p, our_p, ref, ours = run_pair(lambda p: torch.optim.AdamW(p, foreach=False, **kw),
                                       lambda p: FusedAdamW(p, backend=backend, **kw))
    assert_state_close(ref, ours, ref_p, our_p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_betas_within_ulps_and_the_fp32_one_minus_beta2_bias_fails(backend):
    """Regression (d7bec46): kernels computed `1 - beta2` in fp32, 1.29e-5 relative low at beta2=0.999.

    Our kernels must pass at default betas, and the comparison must catch that bias: a FusedAdamW whose
    beta2 is the one the biased kernel effectively used fails it on exp_avg_sq.
    """
    ref_p, our_p, ref, ours = run_pair(lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=False),
                                       lambda p: FusedAdamW(p, lr=1e-3, backend=backend))
    assert_state_close(ref, ours, ref_p, our_p)
    one_minus_beta2_fp32 = float(torch.tensor(1.0) - torch.tensor(0.999))
    assert abs(one_minus_beta2_fp32 / (1 - 0.999) - 1) > 1e-5  # the bias the kernels had
    ref_p, our_p, ref, biased = run_pair(
        lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=False),
        lambda p: FusedAdamW(p, lr=1e-3, betas=(0.9, 1 - one_minus_beta2_fp32), backend=backend))
    with pytest.raises(AssertionError, match="exp_avg_sq"):
        assert_state_close(ref, biased, ref_p, our_p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_l2_matches_torch(backend):
    kw = dict(lr=3e-3, weight_decay=0.05, amsgrad=True)
    ref_p, our_p, ref, ours = run_pair(lambda p: torch.optim.Adam(p, foreach=False, **kw),
                                       lambda p: FusedAdam(p, backend=backend, **kw))
    assert_state_close(ref, ours, ref_p, our_p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9, dampening=0.1, weight_decay=1e-2),
                                dict(momentum=0.9, nesterov=True, weight_decay=1e-2, maximize=True)])
def test_sgd_matches_torch(backend, kw):
    ref_p, our_p, ref, ours = run_pair(lambda p: torch.optim.SGD(p, lr=0.05, foreach=False, **kw),
                                       lambda p: FusedSGD(p, lr=0.05, backend=backend, **kw))
    assert_state_close(ref, ours, ref_p, our_p)


def lion_reference(params, grads, exp_avgs, lr, beta1, beta2, wd):
    for p, g, m in zip(params, grads, exp_avgs):
        c = beta1 * m + (1 - beta1) * g
        p.mul_(1 - lr * wd).add_(torch.sign(c), alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lion_matches_reference(backend):
    params = make_params()
    ref = [p.detach().clone() for p in params]
    ref_m = [torch.zeros_like(p) for p in ref]
    opt = FusedLion(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, backend=backend)
    for s in range(4):
        set_grads(params, s)
        lion_reference(ref, [p.grad for p in params], ref_m, 1e-3, 0.9, 0.99, 0.1)
        opt.step()
    for p, r, m in zip(params, ref, ref_m):
        torch.testing.assert_close(p.detach(), r, **TOL[torch.float32])
        torch.testing.assert_close(opt.state[p]["exp_avg"], m, **TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_small_tensors(backend):
    shapes = [(1 + (7 * i) % 53,) for i in range(400)]
    ref_p, our_p = make_params(shapes), make_params(shapes)
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    ours = FusedAdamW(our_p, lr=1e-2, backend=backend)
    for s in range(2):
        set_grads(ref_p, s)
        set_grads(our_p, s)
        ref.before_last = Snapshot(ref, ref_p)
        ref.step()
        ours.step()
    assert_state_close(ref, ours, ref_p, our_p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("master", [False, True])
def test_low_precision_params_against_fp32_reference(backend, dtype, master):
    """bf16/fp16 params with fp32 state: the fp32 reference runs on upcast params and grads."""
    ours_p = make_params(dtype=dtype)
    ref_p = [torch.nn.Parameter(p.detach().float()) for p in ours_p]
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    ours = FusedAdamW(ours_p, lr=1e-2, master_weights=master, backend=backend)
    for s in range(3):
        set_grads(ours_p, s)
        for r, o in zip(ref_p, ours_p):
            r.grad = o.grad.float()
        ref.step()
        ours.step()
    for r, o in zip(ref_p, ours_p):
        st = ours.state[o]
        assert st["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(o.detach().float(), r.detach(), **TOL[dtype])
        if master:
            # the fp32 master follows the fp32 reference to fp32 precision, and the param is its rounding
            torch.testing.assert_close(st["master_param"], r.detach(), **TOL[torch.float32])
            assert torch.equal(o.detach(), st["master_param"].to(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [lambda p, b: FusedAdamW(p, lr=0.1, backend=b),
                                  lambda p, b: FusedSGD(p, lr=0.1, momentum=0.9, backend=b),
                                  lambda p, b: FusedLion(p, lr=0.1, backend=b)], ids=["adamw", "sgd", "lion"])
def test_found_inf_leaves_everything_untouched(backend, make):
    params = make_params([(5, 7), (3,)])
    opt = make(params, backend)
    set_grads(params, 0)
    opt.step()
    before_p = [p.detach().clone() for p in params]
    before_s = copy.deepcopy(opt.state_dict()["state"])
    set_grads(params, 1)
    params[0].grad[1, 2] = float("inf")
    params[1].grad[0] = float("nan")
    norm = F.grad_norm([p.grad for p in params], backend=backend if backend == "torch" else None)
    found_inf = F.found_inf_from_norm(norm)
    assert found_inf.item() == 1.0
    opt.step(found_inf=found_inf)
    for b, p in zip(before_p, params):
        assert torch.equal(b, p.detach())
    after_s = opt.state_dict()["state"]
    for i in before_s:
        for k, v in before_s[i].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, after_s[i][k]), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scale_and_clip_coef_fold_into_the_step(backend):
    """step(grad_scale=s, clip_coef=c) == torch AdamW on grads / s * c."""
    ref_p, our_p = make_params(), make_params()
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    ours = FusedAdamW(our_p, lr=1e-2, backend=backend)
    scale = torch.tensor(1024.0)
    for s in range(3):
        set_grads(our_p, s)
        for p in our_p:
            p.grad.mul_(scale)
        norm = F.grad_norm([p.grad for p in our_p], scale, backend=backend if backend == "torch" else None)
        clip = F.clip_coef_from_norm(norm, max_norm=5.0)
        for r, o in zip(ref_p, our_p):
            r.grad = o.grad / scale
        torch.nn.utils.clip_grad_norm_(ref_p, 5.0, foreach=False)
        ref.step()
        ours.step(grad_scale=scale, clip_coef=clip)
    assert_state_close(ref, ours, ref_p, our_p, dict(rtol=1e-5, atol=1e-5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_norm(backend, dtype):
    grads = [p.detach() for p in make_params(SHAPES + [(3, 4)] * 50, dtype=dtype)]
    grads.append(torch.randn(20, 30).to(dtype).t())  # non-contiguous
    ref = torch.linalg.vector_norm(torch.cat([g.float().flatten() for g in grads]))
    got = F.grad_norm(grads, backend=backend)
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(F.grad_norm(grads, torch.tensor(4.0), backend=backend), ref / 4, rtol=1e-5, atol=0)
    grads[3][0, 0] = float("inf")
    assert not torch.isfinite(F.grad_norm(grads, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lr_tensor_and_changing_lr(backend):
    ref_p, our_p = make_params(), make_params()
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    ours = FusedAdamW(our_p, lr=torch.tensor(1e-2), backend=backend)
    for s in range(3):
        set_grads(ref_p, s)
        set_grads(our_p, s)
        ref.before_last = Snapshot(ref, ref_p)
        ref.step()
        ours.step()
        ref.param_groups[0]["lr"] *= 0.5
        ours.param_groups[0]["lr"].mul_(0.5)
    assert_state_close(ref, ours, ref_p, our_p)


@pytest.mark.parametrize("torch_cls,ours_cls,kw", [
    (torch.optim.AdamW, FusedAdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    (torch.optim.Adam, FusedAdam, dict(lr=1e-2, weight_decay=0.1)),
    (torch.optim.SGD, FusedSGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
], ids=["adamw", "adam", "sgd"])
def test_state_dict_interchangeable_with_torch(torch_cls, ours_cls, kw):
    """2 steps in one, load into the other, 2 more steps: same as 4 steps in the first, both ways."""
    for first, second in [(torch_cls, ours_cls), (ours_cls, torch_cls)]:
        base_p = make_params()
        base = first(base_p, **kw)
        p1 = make_params()
        o1 = first(p1, **kw)
        for s in range(2):
            for ps, o in ((base_p, base), (p1, o1)):
                set_grads(ps, s)
                o.step()
        sd = copy.deepcopy(o1.state_dict())
        p2 = [torch.nn.Parameter(p.detach().clone()) for p in p1]
        o2 = second(p2, **kw)
        o2.load_state_dict(sd)
        for s in range(2, 4):
            set_grads(base_p, s)
            base.step()
            set_grads(p2, s)
            o2.step()
        for a, b in zip(base_p, p2):
            torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
        # and the round trip keeps torch's names and group keys
        assert set(o2.state_dict()["param_groups"][0]) >= set(torch_cls(make_params(), **kw).param_groups[0]) - {
            "params"}


def test_param_groups_semantics():
    a, b = make_params([(3, 4)]), make_params([(5,)], seed=1)
    opt = FusedAdamW([{"params": a}, {"params": b, "lr": 0.0}], lr=1e-2)
    set_grads(a + b, 0)
    b0 = b[0].detach().clone()
    opt.step()
    assert torch.equal(b[0].detach(), b0)  # lr 0 group untouched
    opt.add_param_group({"params": make_params([(2,)], seed=2)})
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["betas"] == (0.9, 0.999)
    opt.zero_grad()
    assert all(p.grad is None for p in a + b)


def test_explicit_unavailable_backend_raises():
    with pytest.raises(topt.BackendUnavailable, match="'cuda' is unavailable for cpu"):
        FusedAdamW(make_params([(3,)]), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        FusedAdamW(make_params([(3,)]), backend="nope")


def test_auto_backend_is_fastest_available():
    assert topt.resolve_backend("cpu") == ("cpp" if topt.HAS_CPP else "torch")
    assert topt.available_backends("cpu")[-1] == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
def test_adamw_cuda_backends_match_torch(backend):
    if backend not in topt.available_backends("cuda"):
        pytest.skip(f"{backend} unavailable: built without it")
    kw = dict(lr=1e-2, weight_decay=0.1, amsgrad=True)
    ref_p = [torch.nn.Parameter(p.detach().cuda()) for p in make_params()]
    our_p = [torch.nn.Parameter(p.detach().cuda()) for p in make_params()]
    ref, ours = torch.optim.AdamW(ref_p, **kw), FusedAdamW(our_p, backend=backend, **kw)
    for s in range(3):
        for ps in (ref_p, our_p):
            set_grads(ps, s)
            for p in ps:
                p.grad = p.grad.cuda()
        ref.before_last = Snapshot(ref, ref_p)
        ref.step()
        ours.step()
    assert_state_close(ref, ours, ref_p, our_p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_skipped_first_step_creates_no_momentum_buffer(backend):
    """GradScaler skips torch.optim.SGD's step() on inf/NaN; the first real step then sets the buffer to
    its gradient. A buffer created on the skipped step would make it momentum * 0 + (1 - dampening) * g."""
    ref_p, our_p = make_params(), make_params()
    ref = torch.optim.SGD(ref_p, lr=0.1, momentum=0.9, dampening=0.5, foreach=False)
    ours = FusedSGD(our_p, lr=0.1, momentum=0.9, dampening=0.5, backend=backend)
    set_grads(our_p, 0)
    ours.step(found_inf=torch.ones(()))  # skipped; torch's step() would not run at all
    assert all("momentum_buffer" not in ours.state[p] for p in our_p)
    for s in (1, 2):
        set_grads(ref_p, s)
        set_grads(our_p, s)
        ref.step()
        ours.step(found_inf=torch.zeros(()))
    for r, o in zip(ref_p, our_p):
        torch.testing.assert_close(o.detach(), r.detach())
        torch.testing.assert_close(ours.state[o]["momentum_buffer"], ref.state[r]["momentum_buffer"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grad_format", [torch.channels_last, torch.contiguous_format], ids=["cl_grad", "nchw_grad"])
def test_channels_last_params_match_torch(backend, grad_format):
    """A channels_last conv weight: the torch fallback made its grads contiguous, pairing elements of
    different positions (0.4 off after one SGD step)."""
    def make():
        torch.manual_seed(0)
        return [torch.randn(3, 4, 5, 6).to(memory_format=torch.channels_last).requires_grad_()]

    ref_p, our_p = make(), make()
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    ours = FusedAdamW(our_p, lr=1e-2, backend=backend)
    for s in range(2):
        g = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(s))
        ref_p[0].grad = g.clone()
        our_p[0].grad = g.clone().to(memory_format=grad_format)
        ref.step()
        ours.step()
    torch.testing.assert_close(our_p[0].detach(), ref_p[0].detach())
    assert our_p[0].is_contiguous(memory_format=torch.channels_last)
