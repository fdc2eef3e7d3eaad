"""Lightning's ``utilities.deepspeed``: ``convert_zero_checkpoint_to_fp32_state_dict`` (a ZeRO checkpoint folder
to one fp32 file)."""
from trainer.strategies.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

__all__ = ["convert_zero_checkpoint_to_fp32_state_dict"]
