"""Lightning's enum helpers at Lightning's path (``lightning.pytorch.utilities.enums``)."""
from __future__ import annotations

from enum import Enum


class LightningEnum(str, Enum):
    """A string enum that compares equal to its value in any letter case (``GradClipAlgorithmType.NORM == "Norm"``)."""

    @classmethod
    def from_str(cls, value: str, source: str = "key") -> "LightningEnum":
        """The member whose key (``source="key"``), value (``"value"``) or either (``"any"``, keys first) matches
        ``value`` in any letter case; a ``ValueError`` listing the choices otherwise."""
        if source not in ("key", "value", "any"):
            raise ValueError(f"`source` must be 'key', 'value' or 'any', got {source!r}")
        if source in ("key", "any"):
            for key in cls.__members__:
                if key.lower() == value.lower():
                    return cls[key]
        if source in ("value", "any"):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        choices = (list(cls.__members__) if source != "value" else []) + (
            [m.value for m in cls] if source != "key" else [])
        raise ValueError(f"Invalid match: expected one of {choices}, but got {value}.")

    def __eq__(self, other: object) -> bool:
        other = other.value if isinstance(other, Enum) else str(other)
        return self.value.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.value.lower())


class GradClipAlgorithmType(LightningEnum):
    """``gradient_clip_algorithm``: ``NORM`` clips the norm of all gradients together, ``VALUE`` each element."""

    VALUE = "value"
    NORM = "norm"

    @staticmethod
    def supported_type(val: str) -> bool:
        return any(x.value == val for x in GradClipAlgorithmType)

    @staticmethod
    def supported_types() -> list:
        return [x.value for x in GradClipAlgorithmType]


__all__ = ["GradClipAlgorithmType", "LightningEnum"]
