"""The single-device strategy: the :class:`~trainer.strategies.strategy.Strategy` base as is, on one device."""
from __future__ import annotations

from trainer.strategies.strategy import Strategy


class SingleDeviceStrategy(Strategy):
    strategy_name = "single_device"
