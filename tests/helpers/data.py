"""Tiny deterministic datasets: the same tensors on every run, independent of the global RNG."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

IN_FEATURES = 8
OUT_FEATURES = 2


def make_tensors(n: int, seed: int = 0, in_features: int = IN_FEATURES, out_features: int = OUT_FEATURES):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g)
    y = torch.randn(n, out_features, generator=g)
    return x, y


def make_dataset(n: int = 16, seed: int = 0, **kw) -> TensorDataset:
    return TensorDataset(*make_tensors(n, seed, **kw))


def make_loader(n: int = 16, batch_size: int = 4, seed: int = 0, **kw) -> DataLoader:
    """A non-shuffled loader of ``n`` (x, y) pairs; batches are identical across frameworks."""
    return DataLoader(make_dataset(n, seed, **kw), batch_size=batch_size, shuffle=False, num_workers=0)


class InputOnlyDataset(Dataset):
    """Batches of ``x`` only, for predict."""

    def __init__(self, n: int = 8, seed: int = 3, in_features: int = IN_FEATURES):
        self.x = make_tensors(n, seed, in_features=in_features)[0]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]
