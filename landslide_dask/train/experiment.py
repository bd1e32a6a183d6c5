"""Training strategies and the paper's experiment: can one model map a region it never saw?

- ``local``: one inventory, scored on that inventory's own held-out test blocks;
- ``combined``: all inventories at once;
- ``progressive``: inventories added one at a time, each stage continuing from the previous
  stage's weights (and normalisation) on the union so far.

``leave_one_out`` trains combined (and optionally progressive) models on all inventories but one
and scores each on the one left out, as a whole unseen region, beside local models for comparison.
Every training run lives in its own folder and is skipped when it already finished, so a killed
experiment resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..errors import UsageError
from .config import TrainConfig
from .loop import finished, train
from .metrics import fmt
from .scoring import evaluate

__all__ = [
    "STRATEGIES",
    "SCORES",
    "region_name",
    "train_strategy",
    "score_row",
    "leave_one_out",
    "write_table",
    "markdown_table",
]

STRATEGIES = ("local", "combined", "progressive")
SCORES = ("mcc", "precision", "recall", "f1", "iou")


def region_name(cube: str | Path) -> str:
    return Path(cube).name.removesuffix(".zarr")


def _train_once(client, cfg: TrainConfig, log=print) -> dict:
    done = finished(cfg.out)
    if done is not None:
        log(f"[experiment] {cfg.out}: finished earlier, reusing it")
        return done
    log(f"[experiment] training {cfg.strategy} on {', '.join(region_name(c) for c in cfg.cubes)} -> {cfg.out}")
    return train(client, cfg)


def train_strategy(client, strategy: str, cubes: list[str], cfg: TrainConfig, log=print) -> dict:
    """Train one model by ``strategy`` on ``cubes`` into ``cfg.out``; returns rank 0's summary."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if strategy == "local" and len(cubes) != 1:
        raise UsageError(
            f"the local strategy trains on one inventory, got {len(cubes)} cubes: "
            "give one --cube, or use --strategy combined / progressive"
        )
    if strategy != "progressive":
        return _train_once(client, replace(cfg, cubes=list(cubes), strategy=strategy), log)
    parent = cfg.init_from
    result: dict = {}
    for k in range(1, len(cubes) + 1):
        stage = replace(
            cfg, cubes=list(cubes[:k]), strategy="progressive", init_from=parent, out=str(Path(cfg.out) / f"stage-{k}")
        )
        result = _train_once(client, stage, log)
        parent = result["best"]
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "result.json").write_text(json.dumps(result, indent=1))
    return result


def score_row(region: str, strategy: str, trained_on: list[str], conf, ckpt: str) -> dict:
    scores = conf.scores()
    return {
        "region": region,
        "strategy": strategy,
        "trained_on": "+".join(trained_on),
        **{k: (round(float(scores[k]), 4) if scores[k] is not None else None) for k in SCORES},
        "threshold": conf.threshold,
        "threshold_rule": conf.threshold_rule,
        "tp": scores["tp"],
        "fp": scores["fp"],
        "fn": scores["fn"],
        "tn": scores["tn"],
        "checkpoint": ckpt,
    }


def leave_one_out(
    client,
    cubes: list[str],
    cfg: TrainConfig,
    strategies: tuple[str, ...] = ("combined",),
    local: bool = True,
    log=print,
) -> pd.DataFrame:
    """The generalisation table: for each region, models trained without it scored on all of it,
    and (``local``) a model trained on the region itself scored on its own test blocks."""
    if len(cubes) < 2:
        raise UsageError("leave-one-out needs at least two inventories (cubes)")
    unknown = set(strategies) - {"combined", "progressive"}
    if unknown:
        raise UsageError(f"leave-one-out strategies are combined and progressive, not {sorted(unknown)}")
    out = Path(cfg.out)
    rows = []
    for held in cubes:
        name = region_name(held)
        others = [c for c in cubes if c != held]
        for strategy in strategies:
            run = replace(cfg, out=str(out / f"without-{name}" / strategy))
            res = train_strategy(client, strategy, others, run, log)
            conf = evaluate(res["best"], held)
            rows.append(score_row(name, f"{strategy} (unseen)", [region_name(c) for c in others], conf, res["best"]))
            log(
                f"[experiment] {name} unseen, {strategy}: MCC {fmt(conf.mcc())} P {fmt(conf.precision())} "
                f"R {fmt(conf.recall())}"
            )
        if local:
            run = replace(cfg, out=str(out / "local" / name))
            res = train_strategy(client, "local", [held], run, log)
            index = pd.read_csv(Path(run.out) / "windows.csv")
            conf = evaluate(res["best"], held, split="test", index=index)
            rows.append(score_row(name, "local (test blocks)", [name], conf, res["best"]))
            log(f"[experiment] {name} local: MCC {fmt(conf.mcc())}")
    table = pd.DataFrame(rows)
    write_table(table, out)
    return table


def write_table(table: pd.DataFrame, out: Path, name: str = "results") -> None:
    """CSV for machines, Markdown (with a mean row per strategy) for people."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(markdown_table(table) + "\n")


def markdown_table(table: pd.DataFrame) -> str:
    cols = ["region", "strategy", "trained_on", *SCORES]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[c]) if c not in SCORES else fmt(r[c]) for c in cols) + " |")
    for strategy, g in table.groupby("strategy", sort=False):
        if len(g) > 1:
            means = " | ".join(f"**{g[c].mean():.3f}**" for c in SCORES)
            lines.append(f"| **mean** | {strategy} | {len(g)} regions | {means} |")
    return "\n".join(lines)
