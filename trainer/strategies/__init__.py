"""Strategies: how the step runs on one or many devices."""
from trainer.strategies.single_device import SingleDeviceStrategy, Strategy

__all__ = ["Strategy", "SingleDeviceStrategy"]
