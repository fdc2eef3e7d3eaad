"""Shared benchmark workloads: a model, its data and its loss, defined once so that every runner
(hand-written loop, Lightning, trainer) trains exactly the same thing on exactly the same batches.

- ``tiny_mlp``: MLP 32-64-64-10 (GELU), batch 32, random data. Overhead-bound: a step is a few
  hundred microseconds of math, so per-step framework cost shows directly.
- ``mlp``: MLP 784-1024-1024-10 (GELU), batch 128, random data. Compute-bound (~1.4 GFLOP/step).
- ``gpt``: a nanoGPT-style decoder, 4 layers, d=128, 4 heads, context 64, byte vocabulary (256),
  batch 16, next-byte prediction on deterministically generated English-like text. One sample is
  one 64-byte sequence.

Data is materialised once as a list of ready batches and served by ``DataLoader(batch_size=None)``
(no per-sample indexing or collate), so the data path costs the same, and almost nothing, for
every runner.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

Batch = Tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    batch_size: int
    steps_per_epoch: int
    make_model: Callable[[], nn.Module]
    make_batches: Callable[[int, int, int], List[Batch]]  # (steps, batch_size, seed) -> batches
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (model output, target) -> loss
    # training FLOPs (forward + backward) per sample of the model make_model() builds, and tokens per
    # sample (1 for the MLPs): the benchmark reports tokens/s and MFU from them
    flops_per_sample: Callable[[nn.Module], float] = lambda model: float("nan")
    tokens_per_sample: int = 1


class BatchDataset(Dataset):
    """A list of ready-made ``(x, y)`` batches; use with ``DataLoader(batch_size=None)``."""

    def __init__(self, batches: List[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return self.batches[i]


def make_loader(batches: List[Batch]) -> DataLoader:
    # batch_size=None: items are already batches; shuffle=False: every runner sees the same order.
    return DataLoader(BatchDataset(batches), batch_size=None, shuffle=False, num_workers=0)


# --------------------------------------------------------------------------- MLPs on random data

def _mlp(sizes: List[int]) -> nn.Module:
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def _random_classification(d_in: int, n_classes: int) -> Callable[[int, int, int], List[Batch]]:
    def make(steps: int, batch_size: int, seed: int) -> List[Batch]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(steps * batch_size, d_in, generator=g)
        y = torch.randint(0, n_classes, (steps * batch_size,), generator=g)
        # contiguous copies, not views of one big tensor: that is what a DataLoader would yield
        return [(x[i:i + batch_size].clone(), y[i:i + batch_size].clone())
                for i in range(0, steps * batch_size, batch_size)]
    return make


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


# --------------------------------------------------------------------------- GPT on byte text

class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_head)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """nanoGPT's model, minus dropout, with tied input/output embeddings."""

    def __init__(self, vocab: int = 256, context: int = 64, d: int = 128, n_layer: int = 4, n_head: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.register_buffer("positions", torch.arange(context), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(self.positions[: idx.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


_WORDS = (
    "the of and to in a is that for it as with was on be by this are from at or an have not which "
    "but all were when we there can been has more if will would their so what about up out them into "
    "only its time other some could these two may then do first any like now such make over our even "
    "most after also made many before must through back years where much your way well down should "
    "because each just those people how too little state good very world still own see men work long "
    "get here between both life being under never day same another know while last might us great old "
    "year off come since against go came right used take three train model step graph kernel loss "
    "gradient batch layer weight optimizer epoch device memory tensor data value"
).split()


def bundled_text(n_bytes: int = 1 << 18, seed: int = 0) -> bytes:
    """Deterministic English-like text (Zipf-distributed words, sentences, paragraphs): realistic
    byte statistics for a byte-level language model without shipping or downloading a corpus."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(_WORDS))]
    out: List[str] = []
    size = 0
    while size < n_bytes:
        words = rng.choices(_WORDS, weights, k=rng.randint(5, 16))
        sentence = " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!", ";", ","])
        sentence += "\n\n" if rng.random() < 0.1 else " "
        out.append(sentence)
        size += len(sentence)
    return "".join(out).encode("ascii")[:n_bytes]


def _byte_windows(context: int) -> Callable[[int, int, int], List[Batch]]:
    def make(steps: int, batch_size: int, seed: int) -> List[Batch]:
        data = torch.frombuffer(bytearray(bundled_text()), dtype=torch.uint8).long()
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, len(data) - context - 1, (steps, batch_size), generator=g)
        offsets = torch.arange(context + 1)
        batches = []
        for row in starts:
            window = data[row[:, None] + offsets]  # (B, T+1)
            batches.append((window[:, :-1].contiguous(), window[:, 1:].contiguous()))
        return batches
    return make


def next_token_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


# --------------------------------------------------------------------------- FLOPs

def mlp_flops_per_sample(model: nn.Module) -> float:
    """Forward 2 FLOPs per weight (multiply-add), backward 4 (input and weight gradients): 6 per
    weight per sample; biases and activations are lower-order."""
    return 6.0 * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def gpt_flops_per_sample(model: nn.Module) -> float:
    """The PaLM / nanoGPT estimate per token, 6 N + 12 L d T (N: parameters without the position
    table, the tied token table counted once for the output projection; 12 L d T: the attention
    scores and the weighted sum, forward and backward, without the causal halving), times T tokens."""
    n = sum(p.numel() for p in model.parameters()) - model.pos.weight.numel()
    layers, d, t = len(model.blocks), model.tok.weight.shape[1], model.pos.weight.shape[0]
    return (6.0 * n + 12.0 * layers * d * t) * t


# --------------------------------------------------------------------------- the registry

WORKLOADS: Dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("tiny_mlp", "MLP 32-64-64-10 GELU, batch 32, random data (overhead-bound)",
                 batch_size=32, steps_per_epoch=256,
                 make_model=lambda: _mlp([32, 64, 64, 10]),
                 make_batches=_random_classification(32, 10), loss_fn=cross_entropy,
                 flops_per_sample=mlp_flops_per_sample),
        Workload("mlp", "MLP 784-1024-1024-10 GELU, batch 128, random data (compute-bound)",
                 batch_size=128, steps_per_epoch=32,
                 make_model=lambda: _mlp([784, 1024, 1024, 10]),
                 make_batches=_random_classification(784, 10), loss_fn=cross_entropy,
                 flops_per_sample=mlp_flops_per_sample),
        Workload("gpt", "GPT 4 layers d=128 4 heads, context 64, bytes (vocab 256), batch 16; sample = 64-byte sequence",
                 batch_size=16, steps_per_epoch=32,
                 make_model=lambda: GPT(vocab=256, context=64, d=128, n_layer=4, n_head=4),
                 make_batches=_byte_windows(64), loss_fn=next_token_loss,
                 flops_per_sample=gpt_flops_per_sample, tokens_per_sample=64),
    ]
}
