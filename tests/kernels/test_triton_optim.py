"""Triton kernels of kernels/ on the CPU, under the Triton interpreter, against the C++/torch ops.

TRITON_INTERPRET must be set before triton is first imported, and pytest may already have
imported it (via trainer.optim) in this process, so the checks run in a fresh subprocess with the
variable set. Sizes stay small: the interpreter runs each program in Python.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import triton  # noqa: E402,F401  (the triton extra, installed by scripts/setup.sh: missing fails)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

INTERPRET_SCRIPT = textwrap.dedent(r"""
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    import trainer_kernels as kernels
    assert kernels.HAS_TRITON, kernels.TRITON_ERROR
    import trainer.optim as topt
    from trainer.optim import functional as F
    assert "triton" in topt.available_backends("cpu")

    T = torch.ops.trainer_triton
    tol = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
           torch.float16: dict(rtol=3e-3, atol=3e-3)}
    # odd shapes, a scalar, an empty tensor, and more tensors than one launch holds (16)
    SHAPES = [(5, 13, 17), (), (0,), (7, 3), (1500,)] + [(1 + i % 5,) for i in range(14)]

    def mk(dtype, seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(s, generator=g).to(dtype) for s in SHAPES]

    def grads(dtype, seed):
        gs = mk(dtype, seed)
        gs[3] = torch.randn(3, 7, generator=torch.Generator().manual_seed(seed)).to(dtype).t()  # non-contiguous
        return gs

    def clone(ts):
        return [t.clone() for t in ts]

    def zeros(ps):
        return [torch.zeros(p.shape, dtype=torch.float32) for p in ps]

    def reference(step_fn, state_names, dtype, steps=3, **kw):
        # the same functional step on the triton backend and on the torch fallback
        out = {}
        for be in ("triton", "torch"):
            p = mk(dtype, 0)
            st = {n: zeros(p) for n in state_names}
            for s in range(steps):
                step_fn(be, p, grads(dtype, 10 + s), st, s + 1, **kw)
            out[be] = (p, st)
        (pt, st_t), (pr, st_r) = out["triton"], out["torch"]
        for a, b in zip(pt, pr):
            torch.testing.assert_close(a, b, **tol[dtype])
        # The interpreter rounds fp32->bf16 toward zero (numpy has no bf16; measured: 1+3*2**-9 -> 1.0
        # where torch gives 1.0078125), GPU Triton and torch round to nearest even: so bf16 params
        # drift by an ulp, and state that reads them (SGD's weight decay) gets the bf16 tolerance.
        st_tol = tol[torch.float32] if dtype != torch.bfloat16 else tol[dtype]
        for n in state_names:
            for a, b in zip(st_t[n], st_r[n]):
                torch.testing.assert_close(a, b, **st_tol)

    def adamw(be, p, g, st, step, amsgrad, decoupled):
        F.fused_adamw_(p, g, st["m"], st["v"], st.get("x", []), torch.tensor(float(step)), torch.tensor(1e-2),
                       0.9, 0.99, 1e-8, 0.1, amsgrad, False, decoupled=decoupled, backend=be)

    def sgd(be, p, g, st, step, nesterov):
        F.fused_sgd_(p, g, st["b"], torch.tensor(0.1), 0.9, 0.0, 1e-2, nesterov, False, step == 1, backend=be)

    def lion(be, p, g, st, step):
        F.fused_lion_(p, g, st["m"], torch.tensor(1e-2), 0.9, 0.99, 0.1, True, backend=be)

    for dtype in (torch.float32, torch.bfloat16):
        reference(adamw, ["m", "v"], dtype, amsgrad=False, decoupled=True)
    for dtype in (torch.float32, torch.float16):
        reference(adamw, ["m", "v", "x"], dtype, amsgrad=True, decoupled=False)
    reference(sgd, ["b"], torch.float32, nesterov=True)
    reference(sgd, ["b"], torch.bfloat16, nesterov=False)
    reference(lion, ["m"], torch.float32)

    # master weights: the fp32 master is updated, the bf16 param is its rounding
    p = mk(torch.bfloat16, 0)
    w = [x.float() for x in p]
    w_ref = clone(w)
    m, v, m_r, v_r = zeros(p), zeros(p), zeros(p), zeros(p)
    g = grads(torch.bfloat16, 1)
    F.fused_adamw_(p, g, m, v, [], torch.tensor(1.0), 1e-2, 0.9, 0.99, 1e-8, 0.1, False, False,
                   master_params=w, backend="triton")
    F.fused_adamw_(w_ref, [x.float() for x in g], m_r, v_r, [], torch.tensor(1.0), 1e-2, 0.9, 0.99, 1e-8, 0.1,
                   False, False, backend="torch")
    for a, b, c in zip(w, w_ref, p):
        torch.testing.assert_close(a, b, **tol[torch.float32])
        # the param is the master rounded to bf16 (toward zero under the interpreter, see above)
        assert ((c.float() - a).abs() <= a.abs() * 2**-7).all()

    # AMP: unscale + clip in the kernel; found_inf skips everything
    p, p_r = mk(torch.float32, 0), mk(torch.float32, 0)
    m, v, m_r, v_r = zeros(p), zeros(p), zeros(p), zeros(p)
    g = grads(torch.float32, 2)
    scale, clip = torch.tensor(256.0), torch.tensor(0.5)
    F.fused_adamw_(p, [x * 256 for x in g], m, v, [], torch.tensor(1.0), 1e-2, 0.9, 0.99, 1e-8, 0.0, False, False,
                   scale, torch.tensor(0.0), clip, backend="triton")
    F.fused_adamw_(p_r, [x * 0.5 for x in g], m_r, v_r, [], torch.tensor(1.0), 1e-2, 0.9, 0.99, 1e-8, 0.0, False,
                   False, backend="torch")
    for a, b in zip(p + m + v, p_r + m_r + v_r):
        torch.testing.assert_close(a, b, **tol[torch.float32])
    before = clone(p + m + v)
    g[0][0, 0, 0] = float("nan")
    F.fused_adamw_(p, g, m, v, [], torch.tensor(2.0), 1e-2, 0.9, 0.99, 1e-8, 0.0, False, False,
                   None, torch.tensor(1.0), None, backend="triton")
    F.fused_sgd_(p, g, zeros(p), 0.1, 0.9, 0.0, 0.0, False, False, False, None, torch.tensor(1.0), backend="triton")
    F.fused_lion_(p, g, m, 0.1, 0.9, 0.99, 0.0, False, None, torch.tensor(1.0), backend="triton")
    for a, b in zip(before, p + m + v):
        assert torch.equal(a, b, ) or (a.numel() == 0)

    # grad norm
    g = grads(torch.float32, 3) + grads(torch.bfloat16, 4)
    ref = torch.linalg.vector_norm(torch.cat([x.float().flatten() for x in g]))
    torch.testing.assert_close(T.grad_norm(g), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(T.grad_norm(g, torch.tensor(8.0)), ref / 8, rtol=1e-5, atol=0)
    g[5][0] = float("inf")
    assert not torch.isfinite(T.grad_norm(g))
    print("TRITON-INTERPRET-OK")
""")


def _run(script: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_triton_kernels_under_interpreter():
    r = _run(INTERPRET_SCRIPT, {"TRITON_INTERPRET": "1"})
    assert "TRITON-INTERPRET-OK" in r.stdout, r.stdout[-3000:] + r.stderr[-5000:]


TRACE_SCRIPT = textwrap.dedent(r"""
    # Without the interpreter (and without a GPU) Triton kernels cannot run here, but dynamo can
    # trace the triton_ops: a recording backend checks each is one node and no graph breaks.
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    import trainer_kernels as kernels
    assert kernels.HAS_TRITON, kernels.TRITON_ERROR
    T = torch.ops.trainer_triton
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        n_out = len(gm.graph.find_nodes(op="output")[0].args[0])
        return lambda *args: [torch.zeros(())] * n_out  # never runs the kernels

    p = [torch.randn(4, 3), torch.randn(5)]
    g = [torch.randn_like(x) for x in p]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    lr, step, scale, fi, clip = (torch.tensor(x) for x in (1e-3, 1.0, 2.0, 0.0, 1.0))
    calls = {
        "fused_adamw_": lambda: T.fused_adamw_(p, g, m, v, [], [], [step], lr, 0.9, 0.999, 1e-8, 0.0, False, False,
                                               True, scale, fi, clip),
        "fused_sgd_": lambda: T.fused_sgd_(p, g, m, [], lr, 0.9, 0.0, 0.0, False, False, False, scale, fi, clip),
        "fused_lion_": lambda: T.fused_lion_(p, g, m, [], lr, 0.9, 0.99, 0.0, False, scale, fi, clip),
        "grad_norm": lambda: T.grad_norm(g, scale),
    }
    for name, fn in calls.items():
        graphs.clear()
        torch._dynamo.reset()
        torch.compile(fn, fullgraph=True, backend=record)()
        assert len(graphs) == 1, name
        targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
        assert len(targets) == 1 and targets[0].startswith(f"trainer_triton.{name}"), (name, targets)
    print("TRITON-TRACE-OK")
""")


def test_triton_ops_trace_as_single_nodes():
    r = _run(TRACE_SCRIPT, {})
    assert "TRITON-TRACE-OK" in r.stdout, r.stdout[-3000:] + r.stderr[-5000:]


CHANNELS_LAST_SCRIPT = textwrap.dedent(r"""
    # channels_last parameters (conv weights under memory_format=channels_last): the kernels walk
    # each tensor's memory flat, as trainer._C's prepare() does; they used to reject them.
    import os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    import trainer_kernels as kernels
    assert kernels.HAS_TRITON, kernels.TRITON_ERROR
    from trainer.optim import functional as F

    cl = torch.channels_last
    def mk(seed):
        return [torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(seed)).to(memory_format=cl),
                torch.randn(7, generator=torch.Generator().manual_seed(seed + 1))]
    out = {}
    for be in ("triton", "torch"):
        p = mk(0)
        # the first gradient in the other (contiguous) layout: copied into the param's
        g = [mk(1)[0].contiguous(), mk(1)[1]]
        m = [torch.zeros_like(x, memory_format=torch.preserve_format) for x in p]
        v = [torch.zeros_like(x, memory_format=torch.preserve_format) for x in p]
        b = [torch.zeros_like(x, memory_format=torch.preserve_format) for x in p]
        F.fused_adamw_(p, g, m, v, [], torch.tensor(1.0), torch.tensor(1e-2), 0.9, 0.99, 1e-8, 0.1, False, False,
                       backend=be)
        F.fused_sgd_(p, g, b, torch.tensor(0.1), 0.9, 0.0, 0.0, False, False, True, backend=be)
        F.fused_lion_(p, g, m, torch.tensor(1e-2), 0.9, 0.99, 0.1, False, backend=be)
        out[be] = p + m + v + b
    assert out["triton"][0].is_contiguous(memory_format=cl)
    for a, r in zip(out["triton"], out["torch"]):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
    # a state in another layout than its param: a clear error, never a silently mispaired update
    p = mk(0)
    try:
        F.fused_adamw_(p, mk(1), [torch.zeros(3, 4, 5, 6), torch.zeros(7)], [torch.zeros_like(x) for x in p], [],
                       torch.tensor(1.0), torch.tensor(1e-2), 0.9, 0.99, 1e-8, 0.0, False, False, backend="triton")
    except ValueError as e:
        assert "exp_avgs[0]" in str(e) and "preserve_format" in str(e), e
    else:
        raise AssertionError("no error for a state laid out unlike its param")
    print("TRITON-CHANNELS-LAST-OK")
""")


def test_triton_kernels_take_channels_last_params():
    r = _run(CHANNELS_LAST_SCRIPT, {"TRITON_INTERPRET": "1"})
    assert "TRITON-CHANNELS-LAST-OK" in r.stdout, r.stdout[-3000:] + r.stderr[-5000:]
