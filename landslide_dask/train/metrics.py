"""Pixel metrics from a confusion matrix: MCC (the paper's headline), precision, recall, F1, IoU.

Counts are accumulated as integers (chunk by chunk, rank by rank) and only then turned into ratios,
so metrics over a whole region do not depend on how it was split. Degenerate cases (a 0/0 ratio):
a map without errors scores 1, any other 0, so "no landslides predicted where none exist" is
perfect and "nothing predicted where some exist" scores recall 0 and MCC 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..cube.inventory import LABEL_UNKNOWN

__all__ = ["IGNORE", "Confusion"]

#: Truth pixels scored by no metric: the cube's unknown label (outside the inventory's mapped area).
IGNORE = LABEL_UNKNOWN


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @classmethod
    def from_arrays(cls, pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> "Confusion":
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

    def precision(self) -> float:
        if self.tp + self.fp == 0:
            return 1.0 if self.fn == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    def recall(self) -> float:
        if self.tp + self.fn == 0:
            return 1.0 if self.fp == 0 else 0.0
        return self.tp / (self.tp + self.fn)

    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2 * self.tp / denom

    def iou(self) -> float:
        denom = self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else self.tp / denom

    def mcc(self) -> float:
        """Matthews correlation coefficient in [-1, 1].

        When a row or column of the matrix is empty the formula is 0/0: then a perfect map (no
        errors at all) scores 1, and anything else 0, the convention of Chicco & Jurman (2020).
        """
        tp, fp, fn, tn = (float(v) for v in (self.tp, self.fp, self.fn, self.tn))
        denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        if denom == 0:
            return 1.0 if fp == 0 and fn == 0 else 0.0
        return (tp * tn - fp * fn) / math.sqrt(denom)

    def scores(self) -> dict[str, float | int]:
        return {"mcc": self.mcc(), "precision": self.precision(), "recall": self.recall(), "f1": self.f1(),
                "iou": self.iou(), **asdict(self)}
