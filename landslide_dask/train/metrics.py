"""Pixel metrics from a confusion matrix: MCC (the paper's headline), precision, recall, F1, IoU.

Counts are accumulated as integers (chunk by chunk, rank by rank) and only then turned into ratios,
so metrics over a whole region do not depend on how it was split.

Degenerate cases are never scored as perfect: where the truth holds no landslide pixel (or no
other pixel), MCC, recall, F1 and IoU are undefined (NaN, shown as "undefined"): a split without
landslides cannot tell a good model from one that maps nothing. Where landslides exist and none
are predicted, precision and MCC are 0 (and recall 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..cube.inventory import LABEL_UNKNOWN

__all__ = ["IGNORE", "Confusion", "average_precision", "best_level", "defined", "fmt"]

#: Truth pixels scored by no metric: the cube's unknown label (outside the inventory's mapped area).
IGNORE = LABEL_UNKNOWN


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    # where a Confusion came from a map: the threshold it was counted at and the rule that chose it
    # (``predict.thresholds``); not part of equality, dropped by addition
    threshold: float | None = field(default=None, compare=False)
    threshold_rule: str | None = field(default=None, compare=False)

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @classmethod
    def from_arrays(cls, pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> Confusion:
        """pred, truth: 0/1 arrays; truth == 255 and mask == False are ignored."""
        keep = truth != IGNORE
        if mask is not None:
            keep &= mask.astype(bool)
        p = pred.astype(bool)[keep]
        t = truth[keep] == 1
        tp = int(np.count_nonzero(p & t))
        fp = int(np.count_nonzero(p & ~t))
        fn = int(np.count_nonzero(~p & t))
        return cls(tp, fp, fn, int(p.size) - tp - fp - fn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def positives(self) -> int:
        """Landslide pixels in the truth."""
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn

    def precision(self) -> float:
        """tp / predicted; 0 where nothing is predicted but landslides exist, NaN where neither."""
        if self.tp + self.fp == 0:
            return 0.0 if self.positives else math.nan
        return self.tp / (self.tp + self.fp)

    def recall(self) -> float:
        """tp / landslide pixels; NaN where the truth holds none."""
        return self.tp / self.positives if self.positives else math.nan

    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.positives else math.nan

    def iou(self) -> float:
        return self.tp / (self.tp + self.fp + self.fn) if self.positives else math.nan

    def mcc(self) -> float:
        """Matthews correlation coefficient in [-1, 1]; NaN (undefined) when the truth lacks a class.

        When the truth holds both classes but the map predicts only one, the formula is 0/0 and
        the score is 0 (Chicco & Jurman 2020): a map of nothing is worth nothing, never 1.
        """
        if not self.positives or not self.negatives:
            return math.nan
        tp, fp, fn, tn = (float(v) for v in (self.tp, self.fp, self.fn, self.tn))
        denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        if denom == 0:
            return 0.0
        return (tp * tn - fp * fn) / math.sqrt(denom)

    def scores(self) -> dict[str, float | int | None]:
        """The scores and counts; an undefined score is None (JSON null), never a number."""
        s = {
            "mcc": self.mcc(),
            "precision": self.precision(),
            "recall": self.recall(),
            "f1": self.f1(),
            "iou": self.iou(),
        }
        counts = {k: v for k, v in asdict(self).items() if v is not None}
        return {**{k: (v if defined(v) else None) for k, v in s.items()}, **counts}


def average_precision(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the precision-recall curve, from counts of landslide and other pixels per score
    level (index = level, higher = more likely; e.g. the 256 levels of a probability x 255), so it
    adds up over chunks like the confusion counts. Step-wise, each level one threshold (as
    scikit-learn's ``average_precision_score`` with tied scores). It measures how well a map ranks
    pixels whatever its threshold; a map that ranks at random scores the landslide share.
    NaN where there is no landslide pixel."""
    pos = np.asarray(positives, np.float64)[::-1].cumsum()
    neg = np.asarray(negatives, np.float64)[::-1].cumsum()
    if not pos.size or pos[-1] == 0:
        return math.nan
    taken = pos + neg
    precision = np.divide(pos, taken, out=np.zeros_like(pos), where=taken > 0)
    recall_step = np.diff(np.r_[0.0, pos]) / pos[-1]
    return float((recall_step * precision).sum())


def best_level(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, int]:
    """The highest MCC any threshold level gives, and that level (pixels ``>= level`` are
    landslides), from the same per-level counts as :func:`average_precision`. Read with the
    labels of the scored pixels: what the map's ranking allows, not a threshold a user could
    choose; the gap to the map's MCC is what its threshold rule lost. NaN and -1 without both classes."""
    pos = np.asarray(positives, np.int64)
    neg = np.asarray(negatives, np.int64)
    tp, fp = pos[::-1].cumsum()[::-1], neg[::-1].cumsum()[::-1]
    if not pos.size or tp[0] == 0 or fp[0] == 0:
        return math.nan, -1
    scores = [Confusion(int(a), int(b), int(tp[0] - a), int(fp[0] - b)).mcc() for a, b in zip(tp, fp)]
    level = int(np.argmax(scores))
    return float(scores[level]), level


def defined(v) -> bool:
    """Whether a score is a number (not None, not NaN)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 3) -> str:
    """A score for people: fixed digits, or "undefined"."""
    return f"{float(v):.{digits}f}" if defined(v) else "undefined"
