"""Lightning's ``utilities.seed``: ``isolate_rng`` (restores the torch/numpy/python RNG states on exit)."""
from trainer.seed import isolate_rng

__all__ = ["isolate_rng"]
