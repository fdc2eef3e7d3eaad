"""CPU compile choices (trainer/compile/lowering.py): the graph rewrite and the kept-whole ops, and a
tiny GPT-shaped model (embeddings, bias+GELU, residual adds, tied head) compiled vs eager."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils.data import DataLoader, TensorDataset

import trainer as L
from trainer.compile import CompileConfig
from trainer.compile.engine import _inductor_compile
from trainer.compile.lowering import decompositions, gelu_backward, unfuse_bias_addmm

from .models import fit, max_rel_diff

aten = torch.ops.aten


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_unfuse_bias_addmm_only_where_every_consumer_is_pointwise():
    w1, b1 = torch.randn(16, 8), torch.randn(16)
    w2, b2 = torch.randn(4, 16), torch.randn(4)

    def f(x, w1, b1, w2, b2):
        h = F.gelu(F.linear(x, w1, b1))  # addmm -> gelu: unfused
        q = F.linear(h, w2, b2)  # addmm -> sum (a reduction): kept
        return q.sum(0), h

    args = (torch.randn(5, 8), w1, b1, w2, b2)
    gm = make_fx(f, tracing_mode="fake")(*args)
    assert _targets(gm).count(aten.addmm.default) == 2
    assert unfuse_bias_addmm(gm) == 1
    assert _targets(gm).count(aten.addmm.default) == 1 and aten.mm.default in _targets(gm)
    for got, want in zip(gm(*args), f(*args)):
        torch.testing.assert_close(got, want)


def test_unfuse_bias_addmm_looks_through_views_and_skips_scaled_or_2d_inputs():
    w, b = torch.randn(6, 4), torch.randn(6)
    c = torch.randn(3, 6)

    def f(x, w, b, c):
        y = F.linear(x, w, b).view(3, 2, 3) + 1  # through a view into an add: unfused
        z = torch.addmm(c, x, w.t())  # 2-D input: kept
        s = torch.addmm(b, x, w.t(), beta=0.5).relu()  # beta != 1: kept
        return y, z, s

    args = (torch.randn(3, 4), w, b, c)
    gm = make_fx(f, tracing_mode="fake")(*args)
    assert unfuse_bias_addmm(gm) == 1
    assert _targets(gm).count(aten.addmm.default) == 2
    for got, want in zip(gm(*args), f(*args)):
        torch.testing.assert_close(got, want)


def test_decompositions_keep_embedding_backward_whole():
    table = decompositions()
    assert all(getattr(op, "overloadpacket", None) is not aten.embedding_dense_backward for op in table)
    assert aten.native_layer_norm_backward.default in table  # the rest of inductor's table is kept


def test_gelu_backward_shares_one_exp_and_matches_aten():
    assert decompositions()[aten.gelu_backward.default] is gelu_backward
    torch.manual_seed(0)
    x = torch.cat([torch.randn(4096) * 3, torch.tensor([0.0, -0.0, 1e-8, -1e-8, 9.0, -9.0, 40.0, -40.0])])
    g = torch.randn_like(x)
    got = gelu_backward(g, x)
    want = aten.gelu_backward(g, x)
    exact = aten.gelu_backward(g.double(), x.double())
    assert (got - want).abs().max() <= 1e-6 * want.abs().max()
    # as close to the float64 result as ATen's own float32 kernel
    assert (got.double() - exact).abs().max() <= 1.5 * (want.double() - exact).abs().max() + 1e-7
    # the tanh form and other dtypes keep inductor's decomposition
    torch.testing.assert_close(gelu_backward(g, x, "tanh"), aten.gelu_backward(g, x, approximate="tanh"))
    gb, xb = g.bfloat16(), x.bfloat16()
    torch.testing.assert_close(gelu_backward(gb, xb), aten.gelu_backward(gb, xb), rtol=1e-2, atol=1e-2)

    # what inductor generates from it: one fused kernel with a single exp and no erf call
    from torch._inductor.utils import run_and_get_code

    h, b = torch.randn(64, 32), torch.randn(32)
    gm = make_fx(lambda g, h, b: aten.gelu_backward(g, h + b))(torch.randn(64, 32), h, b)
    fn, (code,) = run_and_get_code(lambda: _inductor_compile(gm, [torch.randn(64, 32), h, b]))
    out = fn(g[:2048].view(64, 32), h, b)
    out = out[0] if isinstance(out, (tuple, list)) else out
    torch.testing.assert_close(out, aten.gelu_backward(g[:2048].view(64, 32), h + b), rtol=1e-6, atol=1e-6)
    assert code.count(".exp()") == 1 and ".erf()" not in code, code


class TinyGPT(L.LightningModule):
    def __init__(self, vocab: int = 32, ctx: int = 8, d: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.register_buffer("positions", torch.arange(ctx), persistent=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        h = self.tok(x) + self.pos(self.positions[: x.shape[1]])
        h = h + self.mlp(self.ln(h))
        return F.cross_entropy(self.head(h).flatten(0, 1), y.flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.randint(0, 32, (96, 9), generator=g)
        return DataLoader(TensorDataset(data[:, :-1], data[:, 1:]), batch_size=8)


def test_tiny_gpt_compiled_matches_eager(tmp_path):
    eager = fit(TinyGPT(), False)
    compiled = fit(TinyGPT(), CompileConfig(mode="strict"))
    assert compiled.compile_report.mode == "full"
    assert compiled.global_step == eager.global_step >= 10
    assert max_rel_diff(compiled.lightning_module, eager.lightning_module) < 1e-5
    # what inductor generated: both biased linears feed pointwise ops, so no addmm survives inductor's
    # own post-grad patterns (which turn mm + bias add back into addmm on CPUs), and the embedding
    # backward is ATen's kernel
    engine = compiled.fit_loop.epoch_loop.automatic_optimization._engine
    graph = next(iter(engine._graphs.values()))
    x, y = next(iter(compiled.lightning_module.train_dataloader()))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        graph.fn(*engine._prefix, x, y)
    events = prof.events()
    ops = {e.key: e.count for e in prof.key_averages()}
    bias_addmms = [e.input_shapes for e in events if e.name == "aten::addmm" and len(e.input_shapes[0]) == 1]
    assert not bias_addmms and ops.get("aten::mm", 0) >= 6, (bias_addmms, ops)
    assert ops.get("aten::embedding_dense_backward", 0) == 2, ops  # token and position tables
    # the MLP's GELU (after its first linear) runs as trainer's kernels, forward and backward
    assert ops.get("trainer::bias_gelu", 0) == 1 and ops.get("trainer::bias_gelu_backward", 0) == 1, ops
