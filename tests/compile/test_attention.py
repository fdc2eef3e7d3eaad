"""Short-sequence CPU attention (csrc/attention.cpp, trainer/compile/attention.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
from trainer.compile import CompileConfig, _ext
from trainer.compile import attention as A

from .models import max_rel_diff

pytestmark = pytest.mark.skipif(not _ext.built("small_attention_fwd"), reason="trainer._C (the C++ extension) is not built")


def _reference(q, k, v, causal, scale):
    # float64 math attention
    q, k, v = (t.double() for t in (q, k, v))
    s = (q @ k.transpose(-2, -1)) * scale
    if causal:
        t = q.shape[-2]
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("b,h,t,d", [(2, 3, 64, 32), (1, 2, 5, 8), (2, 1, 70, 40), (1, 2, 130, 128), (3, 2, 1, 16)])
def test_forward_and_backward_match_float64_attention(causal, b, h, t, d):
    g = torch.Generator().manual_seed(t * 7 + d)
    # q, k, v as the transposed split of one fused projection: strided, head dimension contiguous
    qkv = torch.randn(b, t, 3 * h * d, generator=g)
    q, k, v = (x.view(b, t, h, d).transpose(1, 2).requires_grad_() for x in qkv.split(h * d, dim=2))
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    scale = 0.3 if d == 40 else 1 / math.sqrt(d)
    out = A.small_attention(q, k, v, is_causal=causal, scale=None if d != 40 else scale)
    ref = _reference(q, k, v, causal, scale)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert out.stride() == torch.empty(b, t, h, d).transpose(1, 2).stride()
    go = torch.randn(b, h, t, d, generator=g)
    got = torch.autograd.grad(out, (q, k, v), go)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    want = torch.autograd.grad(_reference(qd, kd, vd, causal, scale), (qd, kd, vd), go.double())
    for a, w in zip(got, want):
        torch.testing.assert_close(a.double(), w, rtol=1e-5, atol=1e-5)


def test_fake_outputs_have_the_kernels_layout():
    from torch._subclasses.fake_tensor import FakeTensorMode

    q = torch.randn(2, 3, 16, 8)
    real = torch.ops.trainer.small_attention_fwd(q, q, q, True, 0.5)
    with FakeTensorMode() as mode:
        fq = mode.from_tensor(q)
        fake = torch.ops.trainer.small_attention_fwd(fq, fq, fq, True, 0.5)
        fgrads = torch.ops.trainer.small_attention_bwd(fq, fq, fq, fq, fake[1], True, 0.5)
        fgrads += (torch.ops.trainer.small_attention_bwd_packed(fq, fq, fq, fq, fake[1], True, 0.5),)
    grads = torch.ops.trainer.small_attention_bwd(q, q, q, q, real[1], True, 0.5)
    grads += (torch.ops.trainer.small_attention_bwd_packed(q, q, q, q, real[1], True, 0.5),)
    for r, f in zip((*real, *grads), (*fake, *fgrads)):
        assert r.shape == f.shape and r.stride() == f.stride()


@pytest.mark.parametrize("causal,b,t,h,d", [(True, 2, 16, 3, 8), (False, 1, 70, 2, 40)])
def test_packed_backward_is_the_split_backward_without_the_copy(causal, b, t, h, d):
    from torch.fx.experimental.proxy_tensor import make_fx

    def grad_of_fused_qkv(qkv, go):
        q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in qkv.split(h * d, 2))
        out = A.small_attention(q, k, v, is_causal=causal)
        return torch.autograd.grad(out, qkv, go)[0]

    g = torch.Generator().manual_seed(t)
    qkv, go = torch.randn(b, t, 3 * h * d, generator=g, requires_grad=True), torch.randn(b, h, t, d, generator=g)
    gm = make_fx(grad_of_fused_qkv)(qkv, go)
    assert "aten.cat" in gm.code
    assert A.pack_grads(gm) == 1
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.cat.default not in targets and torch.ops.trainer.small_attention_bwd.default not in targets
    assert torch.ops.trainer.small_attention_bwd_packed.default in targets
    got, want = gm(qkv, go), grad_of_fused_qkv(qkv, go)
    assert torch.equal(got, want) and got.shape == want.shape and got.stride() == want.stride()

    # gradients that do not meet in one cat (separate q, k, v tensors) are left as they are
    def separate(q, k, v, go):
        return torch.autograd.grad(A.small_attention(q, k, v, is_causal=causal), (q, k, v), go)

    qkv3 = [torch.randn(b, h, t, d, generator=g, requires_grad=True) for _ in range(3)]
    gm = make_fx(separate)(*qkv3, go)
    assert A.pack_grads(gm) == 0


def test_head_biases_are_added_as_q_k_v_are_read():
    g = torch.Generator().manual_seed(3)
    b, h, t, d = 2, 3, 20, 8
    q, k, v, go = (torch.randn(b, h, t, d, generator=g) for _ in range(4))
    bq, bk, bv = (torch.randn(h, d, generator=g) for _ in range(3))
    ops = torch.ops.trainer
    out, p = ops.small_attention_fwd(q, k, v, True, 0.3, q_bias=bq, k_bias=bk, v_bias=bv)
    qb, kb, vb = q + bq[:, None], k + bk[:, None], v + bv[:, None]
    want_out, want_p = ops.small_attention_fwd(qb, kb, vb, True, 0.3)
    assert torch.equal(out, want_out) and torch.equal(p, want_p)
    grads = ops.small_attention_bwd(go, q, k, v, p, True, 0.3, q_bias=bq, k_bias=bk, v_bias=bv)
    want = ops.small_attention_bwd(go, qb, kb, vb, p, True, 0.3)
    assert all(torch.equal(a, w) for a, w in zip(grads, want))
    packed = ops.small_attention_bwd_packed(go, q, k, v, p, True, 0.3, q_bias=bq, k_bias=bk, v_bias=bv)
    assert torch.equal(packed, torch.cat([w.transpose(1, 2).reshape(b, t, h * d) for w in want], -1))
    with pytest.raises(RuntimeError, match=r"\[H, D\]"):
        ops.small_attention_fwd(q, k, v, True, 0.3, q_bias=bq.t().contiguous())


def test_fused_qkv_bias_is_folded_into_the_kernels():
    from torch.fx.experimental.proxy_tensor import make_fx

    b, t, h, d = 2, 16, 3, 8

    def step(x, w, bias, go):
        q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in F.linear(x, w, bias).split(h * d, 2))
        out = A.small_attention(q, k, v, is_causal=True)
        return out, torch.autograd.grad(out, (x, w, bias), go)

    g = torch.Generator().manual_seed(1)
    args = (torch.randn(b, t, 20, generator=g, requires_grad=True),
            torch.randn(3 * h * d, 20, generator=g, requires_grad=True),
            torch.randn(3 * h * d, generator=g, requires_grad=True), torch.randn(b, h, t, d, generator=g))
    gm = make_fx(step, tracing_mode="fake")(*args)
    assert A.pack_grads(gm) == 1 and A.fold_qkv_bias(gm) == 1
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.addmm.default not in [n.target for n in nodes]
    kernels = [n for n in nodes if n.target in (torch.ops.trainer.small_attention_fwd.default,
                                                torch.ops.trainer.small_attention_bwd_packed.default)]
    assert len(kernels) == 2 and all(set(n.kwargs) == {"q_bias", "k_bias", "v_bias"} for n in kernels)
    (out, grads), (want_out, want_grads) = gm(*args), step(*args)
    torch.testing.assert_close(out, want_out, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert A.fold_qkv_bias(gm) == 0  # nothing left to fold

    # a projection whose output is read elsewhere too keeps its addmm
    def also_read(x, w, bias, go):
        qkv = F.linear(x, w, bias)
        q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in qkv.split(h * d, 2))
        return A.small_attention(q, k, v, is_causal=True), qkv.sum()

    gm = make_fx(also_read, tracing_mode="fake")(*args)
    assert A.fold_qkv_bias(gm) == 0


def test_covers_only_what_the_kernel_does():
    q = torch.randn(2, 2, 8, 4)
    assert A.covers(q, q, q)
    assert not A.covers(q, q, q, attn_mask=torch.ones(8, 8, dtype=torch.bool))
    assert not A.covers(q, q, q, dropout_p=0.1)
    assert not A.covers(q, q, q, enable_gqa=True)
    assert not A.covers(q.bfloat16(), q.bfloat16(), q.bfloat16())
    assert not A.covers(q[0], q[0], q[0])  # 3-D
    assert not A.covers(q, q[:, :1], q)  # shapes differ
    assert not A.covers(q.transpose(-1, -2), q.transpose(-1, -2), q.transpose(-1, -2))  # strided head dim
    long = torch.randn(1, 1, A.MAX_T + 1, 4)
    assert not A.covers(long, long, long)


def test_the_mode_routes_covered_calls_only():
    q = torch.randn(1, 2, 8, 4)
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    with A.SmallAttention(), torch.profiler.profile() as prof:
        a = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        b = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)  # not covered: ATen's
    names = [e.name for e in prof.events()]
    assert names.count("trainer::small_attention_fwd") == 1
    torch.testing.assert_close(a, F.scaled_dot_product_attention(q, q, q, is_causal=True))
    torch.testing.assert_close(b, F.scaled_dot_product_attention(q, q, q, attn_mask=mask))


class TinyAttn(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(32, 32)
        self.qkv = nn.Linear(32, 96, bias=False)  # a key bias gets a zero gradient (softmax shift), all noise
        self.out = nn.Linear(32, 32)

    def training_step(self, batch, batch_idx):
        x, y = batch
        h = self.emb(x)
        b, t, c = h.shape
        q, k, v = (z.view(b, t, 4, 8).transpose(1, 2) for z in self.qkv(h).split(c, dim=2))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        logits = self.out(h + a) @ self.emb.weight.t()
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, 32, (64, 17), generator=g)
        return DataLoader(TensorDataset(data[:, :-1], data[:, 1:]), batch_size=8)


def _fit(compile):
    trainer = L.Trainer(max_epochs=2, compile=compile, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    model = TinyAttn()
    trainer.fit(model)
    return model, trainer


def test_compiled_step_uses_the_kernels_and_matches_eager():
    eager, _ = _fit(False)
    model, trainer = _fit(CompileConfig(mode="strict"))
    assert trainer.global_step == 16
    assert max_rel_diff(model, eager) < 1e-5
    engine = trainer.fit_loop.epoch_loop.automatic_optimization._engine
    code = next(iter(engine._graphs.values())).cap.gm.code
    assert "small_attention_fwd" in code and "small_attention_bwd" in code
    assert "flash_attention" not in code
    # what runs: the gradients of the fused qkv projection come out of the kernel packed (no cat)
    x, y = next(iter(model.train_dataloader()))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        next(iter(engine._graphs.values())).fn(*engine._prefix, x, y)
    ran = {e.key for e in prof.key_averages()}
    assert "trainer::small_attention_bwd_packed" in ran and "aten::cat" not in ran, ran
    off, trainer_off = _fit(CompileConfig(mode="strict", cpu_attention=False))
    code = next(iter(trainer_off.fit_loop.epoch_loop.automatic_optimization._engine._graphs.values())).cap.gm.code
    assert "small_attention" not in code and "flash_attention" in code
    assert max_rel_diff(off, eager) < 1e-5
