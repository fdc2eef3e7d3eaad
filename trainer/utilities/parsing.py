"""Lightning's ``utilities.parsing``: ``AttributeDict``, ``is_picklable`` and the dotted-attribute helpers the tuner
uses (``lightning_hasattr``/``getattr``/``setattr``: the model, its ``hparams``, or the trainer's datamodule)."""
from trainer.tuner._attributes import lightning_getattr, lightning_hasattr, lightning_setattr
from trainer.utilities import AttributeDict, is_picklable

__all__ = ["AttributeDict", "is_picklable", "lightning_getattr", "lightning_hasattr", "lightning_setattr"]
