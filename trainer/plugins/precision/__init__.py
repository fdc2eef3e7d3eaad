"""Lightning's ``plugins.precision``: the Trainer's precision plugins (one implementation, :mod:`trainer.precision`).
``Trainer(plugins=[DoublePrecision()])`` is ``Trainer(precision="64-true")``; ``FSDPPrecision`` and
``DeepSpeedPrecision`` are the FSDP and DeepSpeed strategies' plugins."""
from trainer._unavailable import requires
from trainer.plugins.precision.deepspeed import DeepSpeedPrecision
from trainer.plugins.precision.fsdp import FSDPPrecision
from trainer.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

XLAPrecision = requires("XLAPrecision", "torch_xla", "pip install torch_xla", "TPU precision")
BitsandbytesPrecision = requires("BitsandbytesPrecision", "bitsandbytes", "pip install bitsandbytes",
                                 "int8/nf4 quantised layers, CUDA only")
TransformerEnginePrecision = requires("TransformerEnginePrecision", "transformer_engine",
                                      "pip install transformer_engine[pytorch]", "fp8 on Hopper, CUDA only")

__all__ = ["BitsandbytesPrecision", "DeepSpeedPrecision", "DoublePrecision", "FSDPPrecision", "HalfPrecision",
           "MixedPrecision", "Precision", "TransformerEnginePrecision", "XLAPrecision"]
