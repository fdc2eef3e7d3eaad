"""Lightning's ``lightning.pytorch.tuner``: ``Tuner(trainer).lr_find(...)`` / ``.scale_batch_size(...)``."""
from trainer.tuner.tuning import Tuner

__all__ = ["Tuner"]
