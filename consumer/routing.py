"""The models a consumer serves at one time (champion, optional shadow and canary) and how records are routed to them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from consumer.records import InputRecord

if TYPE_CHECKING:  # annotations only: the settings import this module and must load no model code
    from model.serving.predictor import Prediction


class PredictorLike(Protocol):
    """What the core needs from a model (`model.serving.predictor.Predictor` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def backend(self) -> str:
        """How the model runs (e.g. the embedding backend), for the model-info metric."""
        ...

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        """One prediction per overview; a model trained with titles reads `titles` too."""
        ...


class Role(StrEnum):
    """Which model produced an output."""

    CHAMPION = "champion"
    """Serves all traffic not routed to the canary."""
    CANARY = "canary"
    """Serves a stable share of traffic (by key or partition) on the main output topic."""
    SHADOW = "shadow"
    """Sees every record beside the champion; its outputs go to the shadow topic only."""


class CanaryBy(StrEnum):
    """How the canary share is chosen; either way the choice is stable for a movie."""

    KEY = "key"
    """Hash of the record key (or id when there is no key): the same movie always goes the same way."""
    PARTITION = "partition"
    """Whole partitions: partition p goes to the canary when its hash falls under the share."""


def bucket(text: str) -> float:
    """A stable number in [0, 1) for a string (not Python's per-process salted hash)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class ModelSet:
    """An immutable set of models; the service swaps whole sets between batches."""

    champion: PredictorLike
    shadow: PredictorLike | None = None
    canary: PredictorLike | None = None
    canary_share: float = 0.0
    canary_by: CanaryBy = CanaryBy.KEY

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            raise ValueError(f"canary share must lie in [0, 1], got {self.canary_share}")

    def routes_to_canary(self, record: InputRecord, fallback_key: str | None) -> bool:
        if self.canary is None or self.canary_share <= 0.0:
            return False
        if self.canary_by is CanaryBy.PARTITION:
            return bucket(f"{record.topic}/{record.partition}") < self.canary_share
        key = record.key.decode("utf-8", "replace") if record.key is not None else fallback_key
        # Records with neither key nor id have no identity to keep stable: use their coordinates.
        return bucket(key if key is not None else record.coordinates) < self.canary_share

    def with_champion(self, champion: PredictorLike) -> ModelSet:
        return ModelSet(champion, self.shadow, self.canary, self.canary_share, self.canary_by)
