"""``lightning.pytorch.overrides.distributed``: the predict loader's index-recording batch sampler under
Lightning's (private) name, which Lightning's tests check ``trainer.predict_dataloaders.batch_sampler`` against."""
from trainer.loops.batch_indices import IndexBatchSamplerWrapper as _IndexBatchSamplerWrapper

__all__ = ["_IndexBatchSamplerWrapper"]
