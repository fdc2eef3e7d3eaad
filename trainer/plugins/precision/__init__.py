"""Lightning's ``plugins.precision``: the Trainer's precision plugins (one implementation, :mod:`trainer.precision`).
``Trainer(plugins=[DoublePrecision()])`` is ``Trainer(precision="64-true")``."""
from trainer.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

__all__ = ["DoublePrecision", "HalfPrecision", "MixedPrecision", "Precision"]
