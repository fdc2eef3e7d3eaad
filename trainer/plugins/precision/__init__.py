"""Lightning's ``plugins.precision``: the Trainer's precision plugins (one implementation, :mod:`trainer.precision`).
``Trainer(plugins=[DoublePrecision()])`` is ``Trainer(precision="64-true")``."""
from trainer._unavailable import requires
from trainer.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

XLAPrecision = requires("XLAPrecision", "torch_xla", "pip install torch_xla", "TPU precision")
BitsandbytesPrecision = requires("BitsandbytesPrecision", "bitsandbytes", "pip install bitsandbytes",
                                 "int8/nf4 quantised layers, CUDA only")
TransformerEnginePrecision = requires("TransformerEnginePrecision", "transformer_engine",
                                      "pip install transformer_engine[pytorch]", "fp8 on Hopper, CUDA only")

__all__ = ["BitsandbytesPrecision", "DoublePrecision", "HalfPrecision", "MixedPrecision", "Precision",
           "TransformerEnginePrecision", "XLAPrecision"]
