"""The CUDA multi-tensor kernels of trainer._C (csrc/fused_optim_cuda.cu) against torch.optim.

GPU tests compare params and every state tensor with torch.optim (or the C++ CPU kernels, on the
same inputs, where torch has no equivalent: mixed dtypes in one group, per-tensor steps), over odd
shapes, non-contiguous and channels_last tensors, more tensors than one launch holds, bf16/fp16
params with and without fp32 master weights, device-side found_inf/grad_scale/clip_coef/lr/step.
They skip without a GPU and a CUDA build of the extension.

The CPU tests check setup.py's decision to compile the CUDA sources (never with a CPU torch) and
the backend order, so they run everywhere.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from helpers.optim_compare import Snapshot
from helpers.optim_compare import assert_state_close as _assert_state_close

import trainer.optim as topt
from trainer.optim import FusedAdam, FusedAdamW, FusedLion, FusedSGD, _backend
from trainer.optim import functional as F

ROOT = Path(__file__).resolve().parents[2]
CUDA_OK = torch.cuda.is_available() and topt.HAS_CUDA_EXT


def gpu(fn):
    """GPU-only test: skipped without a CUDA device and a CUDA build of trainer._C."""
    skip = pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU and trainer._C built with CUDA")
    return pytest.mark.gpu(skip(fn))


# Capacities of one launch in csrc/fused_optim_cuda.cu (kAdamN, kSgdN, kLionN, kNormN).
CAPACITY = {"adam": 48, "sgd": 64, "lion": 64, "norm": 160}
# A 3-D tensor of no vector-width multiple, a scalar, an empty tensor, a 2-D one (transposed grads),
# a 4-D channels_last one, one spanning several chunks (16384 elements each) with a ragged tail.
SHAPES = [(5, 123, 123), (), (0,), (7, 3), (2, 3, 5, 7), (40_000,)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float16: dict(rtol=3e-3, atol=3e-3)}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def make_params(shapes=SHAPES, dtype=torch.float32, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=g).to(dtype)
        if t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        out.append(torch.nn.Parameter(t.to(device)))
    return out


def set_grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        if p.dim() == 2 and p.numel() > 0:  # a transposed (non-contiguous) gradient
            grad = torch.randn(p.shape[::-1], generator=g).to(p.dtype).to(p.device).t()
        else:
            grad = torch.randn(p.shape, generator=g).to(p.dtype).to(p.device)
        p.grad = grad


def assert_state_close(ref, ours, ref_p, our_p, tol=None):
    """fp32 within a few ulps of the last update's operands (run_pair records them); else ``tol``."""
    _assert_state_close(ref, ours, ref_p, our_p, tol if tol is not None else TOL)


def run_pair(make_ref, make_ours, shapes=SHAPES, steps=4):
    ref_p, our_p = make_params(shapes), make_params(shapes)
    ref, ours = make_ref(ref_p), make_ours(our_p)
    for s in range(steps):
        set_grads(ref_p, s)
        set_grads(our_p, s)
        if s == steps - 1:
            ref.before_last = Snapshot(ref, ref_p)
        ref.step()
        ours.step()
    return ref_p, our_p, ref, ours


def cuda_kernel_launches(fn, name: str) -> int:
    """How many kernels whose name contains ``name`` ``fn`` launched."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.count for e in prof.key_averages() if name in e.key)


# ------------------------------------------------------------------------------------------------
# GPU: against torch.optim
# ------------------------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("op", _backend._CUDA_OPS)
def test_every_op_has_a_cuda_kernel(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"trainer::{op}", "CUDA")
    assert topt.resolve_backend("cuda") == "cuda"


@gpu
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("torch_cls,ours_cls", [(torch.optim.AdamW, FusedAdamW), (torch.optim.Adam, FusedAdam)],
                         ids=["adamw", "adam-l2"])
def test_adam_matches_torch(torch_cls, ours_cls, amsgrad, maximize):
    kw = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.1, amsgrad=amsgrad, maximize=maximize)
    ref_p, our_p, ref, ours = run_pair(lambda p: torch_cls(p, foreach=False, **kw),
                                       lambda p: ours_cls(p, backend="cuda", **kw))
    assert_state_close(ref, ours, ref_p, our_p)


@gpu
@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.0, weight_decay=1e-2, maximize=True),
                                dict(momentum=0.9, dampening=0.1, weight_decay=1e-2),
                                dict(momentum=0.9, nesterov=True, weight_decay=1e-2, maximize=True)])
def test_sgd_matches_torch(kw):
    ref_p, our_p, ref, ours = run_pair(lambda p: torch.optim.SGD(p, lr=0.05, foreach=False, **kw),
                                       lambda p: FusedSGD(p, lr=0.05, backend="cuda", **kw))
    assert_state_close(ref, ours, ref_p, our_p)


def lion_reference(params, grads, exp_avgs, lr, beta1, beta2, wd, maximize=False):
    for p, g, m in zip(params, grads, exp_avgs):
        g = -g if maximize else g
        c = beta1 * m + (1 - beta1) * g
        p.mul_(1 - lr * wd).add_(torch.sign(c), alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1 - beta2)


@gpu
@pytest.mark.parametrize("maximize", [False, True])
def test_lion_matches_reference(maximize):
    params = make_params()
    ref = [p.detach().clone() for p in params]
    ref_m = [torch.zeros_like(p) for p in ref]
    opt = FusedLion(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, maximize=maximize, backend="cuda")
    for s in range(4):
        set_grads(params, s)
        lion_reference(ref, [p.grad for p in params], ref_m, 1e-3, 0.9, 0.99, 0.1, maximize)
        opt.step()
    for p, r, m in zip(params, ref, ref_m):
        torch.testing.assert_close(p.detach(), r, **TOL[torch.float32])
        torch.testing.assert_close(opt.state[p]["exp_avg"], m, **TOL[torch.float32])


@gpu
@pytest.mark.parametrize("which", ["adam", "sgd", "lion"])
def test_more_tensors_than_one_launch_holds(which):
    """3 launches' worth of small tensors (and ragged sizes) update exactly like torch.optim."""
    n = 3 * CAPACITY[which] + 5
    shapes = [(1 + (7 * i) % 53,) for i in range(n)]
    make = {
        "adam": (lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=False),
                 lambda p: FusedAdamW(p, lr=1e-2, backend="cuda")),
        "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=False),
                lambda p: FusedSGD(p, lr=0.1, momentum=0.9, backend="cuda")),
        "lion": (None, lambda p: FusedLion(p, lr=1e-3, weight_decay=0.1, backend="cuda")),
    }[which]
    if which == "lion":
        params = make_params(shapes)
        ref = [p.detach().clone() for p in params]
        ref_m = [torch.zeros_like(p) for p in ref]
        opt = make[1](params)
        for s in range(2):
            set_grads(params, s)
            lion_reference(ref, [p.grad for p in params], ref_m, 1e-3, 0.9, 0.99, 0.1)
            opt.step()
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach(), r, **TOL[torch.float32])
        return
    ref_p, our_p, ref, ours = run_pair(make[0], make[1], shapes=shapes, steps=2)
    assert_state_close(ref, ours, ref_p, our_p)


@gpu
@pytest.mark.parametrize("n_tensors,launches", [(1, 1), (CAPACITY["adam"], 1), (CAPACITY["adam"] + 1, 2),
                                                (3 * CAPACITY["adam"], 3)])
def test_one_launch_per_group_up_to_capacity(n_tensors, launches):
    params = make_params([(1000 + i,) for i in range(n_tensors)])
    opt = FusedAdamW(params, lr=1e-3, backend="cuda")
    set_grads(params, 0)
    assert cuda_kernel_launches(opt.step, "adam_kernel") == launches


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("master", [False, True])
@pytest.mark.parametrize("which", ["adamw", "sgd", "lion"])
def test_low_precision_params_against_fp32_reference(which, dtype, master):
    """bf16/fp16 params, fp32 state: the fp32 reference runs on upcast params and grads."""
    ours_p = make_params(dtype=dtype)
    ref_p = [torch.nn.Parameter(p.detach().float()) for p in ours_p]
    if which == "adamw":
        ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
        ours = FusedAdamW(ours_p, lr=1e-2, master_weights=master, backend="cuda")
    elif which == "sgd":
        ref = torch.optim.SGD(ref_p, lr=0.05, momentum=0.9, nesterov=True, foreach=False)
        ours = FusedSGD(ours_p, lr=0.05, momentum=0.9, nesterov=True, master_weights=master, backend="cuda")
    else:
        ref = None
        ref_w = [p.detach().clone() for p in ref_p]
        ref_m = [torch.zeros_like(p) for p in ref_w]
        ours = FusedLion(ours_p, lr=1e-3, weight_decay=0.1, master_weights=master, backend="cuda")
    for s in range(3):
        set_grads(ours_p, s)
        for r, o in zip(ref_p, ours_p):
            r.grad = o.grad.float()
        if ref is not None:
            ref.step()
        else:
            lion_reference(ref_w, [r.grad for r in ref_p], ref_m, 1e-3, 0.9, 0.99, 0.1)
        ours.step()
    refs = [r.detach() for r in ref_p] if ref is not None else ref_w
    for r, o in zip(refs, ours_p):
        st = ours.state[o]
        assert o.dtype == dtype
        assert all(v.dtype == torch.float32 for v in st.values() if isinstance(v, torch.Tensor))
        torch.testing.assert_close(o.detach().float(), r, **TOL[dtype])
        if master:
            # the fp32 master follows the fp32 reference closely, and the param is its rounding (RNE)
            torch.testing.assert_close(st["master_param"], r, rtol=1e-5, atol=1e-5)
            assert torch.equal(o.detach(), st["master_param"].to(dtype))


@gpu
@pytest.mark.parametrize("make", [lambda p: FusedAdamW(p, lr=0.1, amsgrad=True, backend="cuda"),
                                  lambda p: FusedSGD(p, lr=0.1, momentum=0.9, backend="cuda"),
                                  lambda p: FusedLion(p, lr=0.1, backend="cuda")], ids=["adamw", "sgd", "lion"])
def test_found_inf_on_device_skips_without_host_sync(make):
    params = make_params([(5, 7), (3,), (20_000,)])
    opt = make(params)
    set_grads(params, 0)
    opt.step()
    before_p = [p.detach().clone() for p in params]
    before_s = copy.deepcopy(opt.state_dict()["state"])
    set_grads(params, 1)
    params[0].grad[1, 2] = float("inf")
    params[2].grad[7] = float("nan")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the step raises
    try:
        norm = F.grad_norm([p.grad for p in params])
        found_inf = F.found_inf_from_norm(norm)
        opt.step(found_inf=found_inf)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert found_inf.is_cuda and found_inf.item() == 1.0
    for b, p in zip(before_p, params):
        assert torch.equal(b, p.detach())
    after_s = opt.state_dict()["state"]
    for i in before_s:
        for k, v in before_s[i].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, after_s[i][k]), k  # the step count did not move either
    # found_inf == 0 on the device: the step happens
    set_grads(params, 2)
    opt.step(found_inf=torch.zeros((), device="cuda"))
    assert not torch.equal(before_p[0], params[0].detach())


@gpu
def test_grad_scale_and_clip_coef_on_device_fold_into_the_step():
    """step(grad_scale=s, clip_coef=c) with device tensors == torch AdamW on clip(grads / s)."""
    ref_p, our_p = make_params(), make_params()
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    ours = FusedAdamW(our_p, lr=torch.tensor(1e-2, device="cuda"), backend="cuda")
    scale = torch.tensor(1024.0, device="cuda")
    for s in range(3):
        set_grads(our_p, s)
        for p in our_p:
            p.grad.mul_(scale)
        torch.cuda.set_sync_debug_mode("error")
        try:
            norm = F.grad_norm([p.grad for p in our_p], scale)
            clip = F.clip_coef_from_norm(norm, max_norm=5.0)
            ours.step(grad_scale=scale, clip_coef=clip)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for r, o in zip(ref_p, our_p):
            r.grad = o.grad / scale
        torch.nn.utils.clip_grad_norm_(ref_p, 5.0, foreach=False)
        ref.step()
    assert_state_close(ref, ours, ref_p, our_p, dict(rtol=1e-5, atol=1e-5))


@gpu
def test_amp_grad_scaler_hands_scale_and_found_inf_to_the_kernel():
    model = torch.nn.Linear(16, 8).cuda()
    ref_model = copy.deepcopy(model)
    opt = FusedAdamW(model.parameters(), lr=1e-2, backend="cuda")
    ref = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, fused=True)
    scaler, ref_scaler = (torch.amp.GradScaler("cuda", init_scale=2.0 ** 10) for _ in range(2))
    x = torch.randn(32, 16, device="cuda")
    for i in range(4):
        for m, o, sc in ((model, opt, scaler), (ref_model, ref, ref_scaler)):
            o.zero_grad()
            loss = m(x).pow(2).mean() * (float("inf") if i == 2 else 1.0)  # step 2 overflows: skipped
            sc.scale(loss).backward()
            sc.step(o)
            sc.update()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert scaler.get_scale() == ref_scaler.get_scale()


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_grad_norm(dtype):
    shapes = SHAPES + [(3, 4)] * (CAPACITY["norm"] + 20)  # two launches
    grads = [p.detach() for p in make_params(shapes, dtype=dtype)]
    grads.append(torch.randn(20, 30, device="cuda").to(dtype).t())  # non-contiguous
    ref = torch.linalg.vector_norm(torch.cat([g.float().flatten() for g in grads]).double()).float()
    got = F.grad_norm(grads, backend="cuda")
    assert got.dtype == torch.float32 and got.dim() == 0 and got.is_cuda
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    assert torch.equal(F.grad_norm(grads, backend="cuda"), got)  # deterministic
    for scale in (torch.tensor(4.0), torch.tensor(4.0, device="cuda")):
        torch.testing.assert_close(F.grad_norm(grads, scale, backend="cuda"), ref / 4, rtol=1e-5, atol=0)
    grads[3][0, 0] = float("inf")
    assert torch.isinf(F.grad_norm(grads, backend="cuda"))
    grads[3][0, 0] = float("nan")
    assert torch.isnan(F.grad_norm(grads, backend="cuda"))


@gpu
def test_grad_norm_of_empty_tensors_is_zero():
    got = torch.ops.trainer.grad_norm([torch.empty(0, device="cuda"), torch.empty(0, 3, device="cuda")])
    assert got.is_cuda and got.item() == 0.0


# ------------------------------------------------------------------------------------------------
# GPU: against the C++ CPU kernels on identical inputs (what torch.optim cannot express)
# ------------------------------------------------------------------------------------------------
MIXED = [(torch.float32, (33, 17)), (torch.bfloat16, (5000,)), (torch.float16, (3, 129)), (torch.float32, (0,)),
         (torch.bfloat16, ()), (torch.float32, (70_001,))]


def _mixed_lists(seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=g).to(dt) for dt, s in MIXED]
    gs = [torch.randn(s, generator=g).to(dt) for dt, s in MIXED]
    state = lambda: [torch.rand(s, generator=g) for _, s in MIXED]  # noqa: E731  (positive: also for exp_avg_sq)
    return ps, gs, state


def _both(lists):
    """(cpu copies, cuda copies) of nested lists of tensors."""
    cpu = [[t.clone() for t in lst] if isinstance(lst, list) else lst.clone() for lst in lists]
    dev = [[t.cuda() for t in lst] if isinstance(lst, list) else lst.cuda() for lst in lists]
    return cpu, dev


# bf16/fp16 results are one rounding of fp32 values that agree to fp32 precision: equal, or one
# ulp apart where the two compilers contract multiply-adds differently.
ONE_ULP = {torch.float32: TOL[torch.float32], torch.bfloat16: dict(rtol=1e-2, atol=1e-5),
           torch.float16: dict(rtol=1e-3, atol=1e-5)}


def _close(cpu_lists, dev_lists):
    for a_l, b_l in zip(cpu_lists, dev_lists):
        for i, (a, b) in enumerate(zip(a_l, b_l)):
            torch.testing.assert_close(b.cpu(), a, **ONE_ULP[a.dtype], msg=lambda m: f"tensor {i}: {m}")


@gpu
@pytest.mark.skipif(not topt.HAS_CPP, reason="needs the C++ CPU kernels as the oracle")
@pytest.mark.parametrize("amsgrad,master,decoupled,maximize", [(False, False, True, False), (True, True, True, True),
                                                               (True, False, False, False), (False, True, False, True)])
@pytest.mark.parametrize("scalars_on", ["cpu", "cuda"])
def test_adam_matches_cpu_kernel_mixed_dtypes_per_tensor_steps(amsgrad, master, decoupled, maximize, scalars_on):
    ps, gs, state = _mixed_lists()
    m, v, x = state(), state(), state()
    w = [p.float() for p in ps] if master else []
    steps = [torch.tensor(float(k + 1)) for k in range(len(ps))]  # per-tensor steps, all different
    (p_c, g_c, m_c, v_c, x_c, w_c), (p_d, g_d, m_d, v_d, x_d, w_d) = _both([ps, gs, m, v, x, w])
    dev = "cuda" if scalars_on == "cuda" else "cpu"
    args = (3e-3, 0.9, 0.99, 1e-6, 0.05, amsgrad, maximize, decoupled)
    for lists, where in (((p_c, g_c, m_c, v_c, x_c, w_c), "cpu"), ((p_d, g_d, m_d, v_d, x_d, w_d), dev)):
        p, g, mm, vv, xx, ww = lists
        st = [s.to(where) for s in steps]
        lr, beta1, beta2, eps, wd, ams, mx, dec = args
        torch.ops.trainer.fused_adamw_(p, g, mm, vv, xx if ams else [], ww, st, torch.tensor(lr, device=where), beta1,
                                       beta2, eps, wd, ams, mx, dec, torch.tensor(8.0, device=where),
                                       torch.tensor(0.0, device=where), torch.tensor(0.5, device=where))
    _close([p_c, m_c, v_c, x_c if amsgrad else [], w_c], [p_d, m_d, v_d, x_d if amsgrad else [], w_d])


@gpu
@pytest.mark.skipif(not topt.HAS_CPP, reason="needs the C++ CPU kernels as the oracle")
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("master", [False, True])
def test_sgd_and_lion_match_cpu_kernel_mixed_dtypes(first, master):
    ps, gs, state = _mixed_lists(1)
    b, m = state(), state()
    w = [p.float() for p in ps] if master else []
    (p_c, g_c, b_c, m_c, w_c), (p_d, g_d, b_d, m_d, w_d) = _both([ps, gs, b, m, w])
    for p, g, bb, ww, where in ((p_c, g_c, b_c, w_c, "cpu"), (p_d, g_d, b_d, w_d, "cuda")):
        torch.ops.trainer.fused_sgd_(p, g, bb, ww, torch.tensor(0.1, device=where), 0.9, 0.1, 1e-2, False, True, first,
                                     torch.tensor(2.0, device=where), None, None)
    _close([p_c, b_c, w_c], [p_d, b_d, w_d])
    (p_c, g_c, m_c, w_c), (p_d, g_d, m_d, w_d) = _both([ps, gs, m, w])
    for p, g, mm, ww, where in ((p_c, g_c, m_c, w_c, "cpu"), (p_d, g_d, m_d, w_d, "cuda")):
        torch.ops.trainer.fused_lion_(p, g, mm, ww, torch.tensor(1e-3, device=where), 0.9, 0.99, 0.1, False, None,
                                      None, torch.tensor(0.7, device=where))
    _close([p_c, m_c, w_c], [p_d, m_d, w_d])


@gpu
def test_shared_step_and_step_dtypes():
    """A single shared step tensor, and a non-fp32 step on the device, equal per-tensor fp32 steps."""
    ps, gs, state = _mixed_lists(2)
    base = [state(), state()]
    results = []
    for steps in ([torch.tensor(3.0, device="cuda")] * len(ps), [torch.tensor(3.0, device="cuda")],
                  [torch.tensor(3, device="cuda")], [torch.tensor(3.0)]):
        p = [t.cuda() for t in ps]
        m, v = [t.cuda() for t in base[0]], [t.cuda() for t in base[1]]
        torch.ops.trainer.fused_adamw_(p, [t.cuda() for t in gs], m, v, [], [], steps, torch.tensor(1e-2), 0.9, 0.999,
                                       1e-8, 0.01, False, False, True)
        results.append(p + m + v)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@gpu
@pytest.mark.skipif(not topt.HAS_CPP, reason="needs the C++ CPU kernels as the oracle")
def test_scratch_copies_for_mismatched_layouts_are_written_back():
    """Param channels_last, grad contiguous, state contiguous: updated in place like the CPU kernel."""
    p = torch.randn(2, 8, 5, 3, device="cuda").contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 8, 5, 3, device="cuda")
    m, v = torch.zeros(2, 8, 5, 3, device="cuda"), torch.zeros(2, 8, 5, 3, device="cuda")
    ref = [t.cpu().clone() for t in (p, g, m, v)]
    torch.ops.trainer.fused_adamw_([p], [g], [m], [v], [], [], [torch.tensor(1.0)], torch.tensor(0.1), 0.9, 0.999,
                                   1e-8, 0.0, False, False, True)
    rp, rg, rm, rv = ref
    torch.ops.trainer.fused_adamw_([rp], [rg], [rm], [rv], [], [], [torch.tensor(1.0)], torch.tensor(0.1), 0.9,
                                   0.999, 1e-8, 0.0, False, False, True)
    assert not torch.equal(p.cpu(), ref[0].clone().zero_())
    for a, b in zip((p, m, v), (rp, rm, rv)):
        torch.testing.assert_close(a.cpu(), b, **TOL[torch.float32])
    assert p.is_contiguous(memory_format=torch.channels_last)


@gpu
def test_compiled_step_keeps_one_node_per_op_on_cuda():
    from torch._dynamo.testing import CompileCounterWithBackend

    def step(p, g, m, v, lr, st):
        n = F.grad_norm(g, backend="cuda")
        F.fused_adamw_(p, g, m, v, [], st, lr, 0.9, 0.999, 1e-8, 0.01, False, False, None, None,
                       F.clip_coef_from_norm(n, 1.0), backend="cuda")
        return n

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, fullgraph=True, backend=counter)
    p = [torch.randn(4, 3, device="cuda"), torch.randn(5, device="cuda")]
    pe = [t.clone() for t in p]
    g = [torch.randn_like(t) for t in p]
    m, v, me, ve = ([torch.zeros_like(t) for t in p] for _ in range(4))
    for i in range(3):
        lr, st = torch.tensor(1e-2 / (i + 1), device="cuda"), torch.tensor(float(i + 1), device="cuda")
        torch.testing.assert_close(compiled(p, g, m, v, lr, st), step(pe, g, me, ve, lr, st))
    for a, b in zip(p + m + v, pe + me + ve):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert counter.frame_count == 1


# ------------------------------------------------------------------------------------------------
# CPU: the build decision and the backend order (run everywhere)
# ------------------------------------------------------------------------------------------------
def _load_setup():
    spec = importlib.util.spec_from_file_location("trainer_setup_py", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # not __main__: setup() does not run
    return mod


@pytest.fixture
def toolkit(tmp_path):
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "cuda_runtime.h").write_text("")
    return str(tmp_path)


def test_setup_never_builds_cuda_sources_with_a_cpu_torch(toolkit):
    s = _load_setup()
    cu = ["csrc/fused_optim_cuda.cu"]
    ok, why = s.cuda_build_decision(cu, None, None, toolkit, "13.0", env={})
    assert not ok and "CPU build" in why
    # and in this very environment: a CPU torch gets no CUDA build, whatever toolkit is installed
    if torch.version.cuda is None:
        from torch.utils import cpp_extension

        home = cpp_extension.CUDA_HOME
        ok, why = s.cuda_build_decision(sorted(str(p) for p in (ROOT / "csrc").glob("*.cu")), torch.version.cuda,
                                        getattr(torch.version, "hip", None), home, s.nvcc_version(home))
        assert not ok, why
        assert not topt.HAS_CUDA_EXT
        if topt.HAS_CPP:
            assert _backend._C.with_cuda == 0


def test_setup_cuda_decision_table(toolkit, tmp_path):
    s = _load_setup()
    cu = ["csrc/fused_optim_cuda.cu"]
    d = s.cuda_build_decision
    assert d(cu, "13.0", None, toolkit, "13.0", env={})[0]
    assert d(cu, "12.8", None, toolkit, "12.6", env={})[0]  # minor mismatch: torch only warns
    with pytest.raises(s.CudaBuildError, match=r"nvcc 13.0 .* torch's CUDA 12.8 .*TRAINER_CUDA=0"):
        d(cu, "12.8", None, toolkit, "13.0", env={})  # major mismatch: torch would refuse; say so, no silent CPU build
    assert not d(cu, "12.8", None, toolkit, "13.0", env={"TRAINER_CUDA": "0"})[0]  # CPU-only asked for
    assert d(cu, "12.8", None, toolkit, "13.0", env={"TRAINER_CUDA": "1"})[0]  # ... unless forced
    assert not d(cu, "13.0", None, toolkit, "13.0", env={"TRAINER_CUDA": "0"})[0]
    assert not d([], "13.0", None, toolkit, "13.0", env={})[0]  # nothing to compile
    assert not d(cu, "13.0", None, None, None, env={})[0]  # no toolkit
    assert not d(cu, "13.0", None, str(tmp_path / "nothing"), "13.0", env={})[0]  # a CUDA_HOME without headers
    assert not d(cu, None, "6.2", toolkit, None, env={})[0]  # ROCm torch: not hipified
    assert s.nvcc_version(None) is None and s.nvcc_version(str(tmp_path / "nothing")) is None
    assert s.toolkit_root(toolkit) == toolkit and s.toolkit_root(None) is None


def test_setup_arch_list_defaults_to_ampere_and_hopper_without_a_gpu():
    s = _load_setup()
    assert s.cuda_arch_list({}, visible_gpus=0) == "8.0;9.0+PTX"
    assert s.cuda_arch_list({}, visible_gpus=1) is None  # torch targets the visible GPUs
    assert s.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "8.6"}, visible_gpus=0) == "8.6"  # the user's choice wins
    assert s.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "8.6"}, visible_gpus=2) == "8.6"


def test_setup_march_native_is_opt_in():
    s = _load_setup()
    assert not any("march" in f for f in s.cxx_flags({}))
    assert not any("march" in f for f in s.cxx_flags({"TRAINER_NATIVE": "0"}))
    assert "-march=native" in s.cxx_flags({"TRAINER_NATIVE": "1"})
    assert "-fno-math-errno" in s.cxx_flags({})
    with pytest.raises(ValueError, match=r"TRAINER_NATIVE='yes'.*'0'.*'1'"):
        s.cxx_flags({"TRAINER_NATIVE": "yes"})


def test_backend_order_prefers_cuda_kernels(monkeypatch):
    assert topt.BACKENDS == ("cuda", "triton", "cpp", "torch")
    monkeypatch.setattr(_backend, "HAS_CUDA_EXT", True)
    monkeypatch.setattr(_backend, "HAS_TRITON", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _backend.available_backends("cuda") == ["cuda", "triton", "torch"]
    monkeypatch.setattr(_backend, "HAS_CUDA_EXT", False)
    assert _backend.available_backends("cuda") == ["triton", "torch"]
    assert "cuda" not in _backend.available_backends("cpu")


def test_has_cuda_ext_follows_the_dispatcher():
    """HAS_CUDA_EXT is true exactly when every trainer op has a CUDA kernel registered."""
    if not topt.HAS_CPP:
        pytest.skip("trainer._C not built")
    has = all(torch._C._dispatch_has_kernel_for_dispatch_key(f"trainer::{op}", "CUDA") for op in _backend._CUDA_OPS)
    assert topt.HAS_CUDA_EXT == has
    assert has == bool(_backend._C.with_cuda)
