"""Training on real (synthetic) cubes with DDP over two Dask worker processes: learning, checkpoints,
resume after a killed worker, strategies and the leave-one-out table."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from landslide_dask.cube.read import open_cube
from landslide_dask.errors import InputDataError, UsageError
from landslide_dask.train.checkpoint import load_checkpoint
from landslide_dask.train.config import TrainConfig
from landslide_dask.train.ddp import DistributedTrainingError
from landslide_dask.train.experiment import leave_one_out, train_strategy
from landslide_dask.train.loop import train
from landslide_dask.train.scoring import evaluate, tiles

TINY = {
    "encoder_blocks": [1, 1, 1, 1],
    "encoder_widths": [8, 16, 32, 32],
    "stem_widths": {"pre": 8, "post": 8, "terrain": 8},
}


@pytest.fixture(scope="module")
def cubes(train_cubes) -> list[str]:
    return train_cubes


def _cfg(cubes: list[str], out: Path, **kw) -> TrainConfig:
    base = dict(
        cubes=cubes,
        out=str(out),
        window=64,
        stride=32,
        block=128,
        batch_size=8,
        epochs=4,
        steps_per_epoch=12,
        lr=3e-3,
        patience=10,
        model=TINY,
        progress=False,
        threads=1,
        restarts=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_learns_and_checkpoints_load_safely(client, cubes, tmp_path):
    res = train(client, _cfg(cubes, tmp_path))
    # A model that predicts nothing scores MCC 0; learning shows as a clearly positive MCC.
    assert res["best_mcc"] > 0.3, res["history"]
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2, 3]
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # plain containers and tensors only
    assert raw["bands"] == ["blue", "green", "red", "nir"]
    assert raw["streams"] == ["pre", "post", "terrain"]
    assert 0.0 < raw["threshold"] < 1.0 and raw["threshold"] == res["threshold"]
    assert set(raw["stats"]["mean"]) == {"pre", "post", "terrain"}
    assert raw["provenance"]["inventories"] == [Path(c).stem for c in cubes]
    for f in ("metrics.csv", "metrics.json", "curves.png", "windows.csv", "result.json", "last.pt"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 4
    # the score reported for validation is what evaluate() recomputes from the checkpoint
    index = pd.read_csv(tmp_path / "windows.csv")
    conf = sum(
        (evaluate(res["best"], c, split="val", index=index) for c in cubes[1:]),
        evaluate(res["best"], cubes[0], split="val", index=index),
    )
    assert conf.mcc() == pytest.approx(res["best_mcc"], abs=2e-3)


def test_a_file_that_is_not_a_checkpoint_is_refused_without_unpickling(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(InputDataError, match="weights_only"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    torch.save({"format": 99, "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(InputDataError, match="not a landslide-dask checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.getcwd()) / 'pwned'}",))


def _kill_rank1_after_first_checkpoint(client, out: Path) -> threading.Thread:
    def watch():
        while not (out / "last.pt").exists():
            time.sleep(0.05)
        pids = client.run(os.getpid)
        os.kill(pids[sorted(pids)[1]], signal.SIGKILL)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_killed_worker_fails_clearly_and_the_rerun_resumes(client, cubes, tmp_path):
    cfg = _cfg(cubes, tmp_path, epochs=3, steps_per_epoch=20)
    watcher = _kill_rank1_after_first_checkpoint(client, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(DistributedTrainingError, match="died") as err:
        train(client, cfg, timeout_s=30)
    assert time.monotonic() - t0 < 60
    watcher.join(5)
    assert "worker" in str(err.value)
    done_before = torch.load(tmp_path / "last.pt", weights_only=True)["epoch"]
    assert f"epoch {done_before + 1} of 3 is checkpointed" in str(err.value)
    assert "rerun the same command to resume" in str(err.value)
    assert done_before < 2 and not (tmp_path / "result.json").exists()
    client.wait_for_workers(2, timeout=60)
    res = train(client, cfg, timeout_s=60)
    assert res["resumed_from"] == done_before + 1
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2]


def test_lost_worker_is_replaced_and_training_resumes_by_itself_with_restarts(client, cubes, tmp_path):
    cfg = _cfg(cubes, tmp_path, epochs=3, steps_per_epoch=20, restarts=1)
    watcher = _kill_rank1_after_first_checkpoint(client, tmp_path)
    res = train(client, cfg, timeout_s=30)
    watcher.join(5)
    assert not watcher.is_alive()  # a worker was killed mid-run ...
    assert res["resumed_from"] >= 1  # ... and the run went on from its checkpoint, not from scratch
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2] and (tmp_path / "result.json").exists()


def test_progressive_stages_continue_from_the_previous_stage(client, cubes, tmp_path):
    res = train_strategy(client, "progressive", cubes, _cfg(cubes, tmp_path, epochs=1, steps_per_epoch=3))
    s1 = load_checkpoint(tmp_path / "stage-1" / "best.pt")
    s2 = load_checkpoint(tmp_path / "stage-2" / "best.pt")
    assert res["best"] == str(tmp_path / "stage-2" / "best.pt")
    assert s1["provenance"]["inventories"] == [Path(cubes[0]).stem]
    assert s2["provenance"]["inventories"] == [Path(c).stem for c in cubes]
    assert s2["train_config"]["init_from"] == str(tmp_path / "stage-1" / "best.pt")
    assert s2["stats"] == s1["stats"]  # the parent's normalisation is kept
    with pytest.raises(UsageError, match="local strategy trains on one inventory"):
        train_strategy(client, "local", cubes, _cfg(cubes, tmp_path / "x"))


def test_leave_one_out_table_scores_each_region_unseen_and_resumes(client, cubes, tmp_path):
    cfg = _cfg(cubes, tmp_path, epochs=1, steps_per_epoch=3)
    table = leave_one_out(client, cubes, cfg)
    names = [Path(c).stem for c in cubes]
    assert sorted(table["region"]) == sorted(names * 2)
    unseen = table[table["strategy"] == "combined (unseen)"].set_index("region")
    assert unseen.loc[names[0], "trained_on"] == names[1]
    for _, r in table.iterrows():
        assert -1 <= r["mcc"] <= 1 and r["tp"] + r["fp"] + r["fn"] + r["tn"] > 0
    # an unseen region is scored on every valid, inventoried pixel of it
    ds = open_cube(cubes[0])
    known = int(((ds["label"] != 255) & ds["valid"]).sum())
    row = unseen.loc[names[0]]
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == known
    assert (tmp_path / "results.csv").exists() and "| **mean** |" in (tmp_path / "results.md").read_text()
    # a rerun reuses every finished run instead of training again
    mtime = (tmp_path / f"without-{names[0]}" / "combined" / "best.pt").stat().st_mtime
    again = leave_one_out(client, cubes, cfg)
    assert (tmp_path / f"without-{names[0]}" / "combined" / "best.pt").stat().st_mtime == mtime
    pd.testing.assert_frame_equal(again, table)


@pytest.mark.parametrize("h,w,size", [(202, 202, 64), (128, 300, 64), (1202, 1202, 512), (100, 90, 512)])
def test_scoring_tiles_count_every_pixel_exactly_once(tmp_path, h, w, size):
    import xarray as xr

    path = tmp_path / "c.zarr"
    xr.Dataset({"valid": (("y", "x"), np.ones((h, w), bool))}).to_zarr(path, consolidated=False)
    t = tiles(str(path), size, 32)
    s = t.attrs["window"]
    seen = np.zeros((h, w), int)
    for _, r in t.iterrows():
        win = np.ones((s, s), int)
        win[: r["skip_r"]] = 0
        win[:, : r["skip_c"]] = 0
        seen[r["row"] : r["row"] + s, r["col"] : r["col"] + s] += win
    assert s % 32 == 0 and (seen == 1).all()


def test_landslide4sense_patches_train_and_evaluate_per_patch(client, tmp_path):
    from landslide_dask.cube.patches import import_patches

    from ..helpers.l4s import S, write_l4s

    write_l4s(tmp_path / "TrainData", n=20)
    cube = str(import_patches(tmp_path / "TrainData", tmp_path / "l4s.zarr", progress=False))
    cfg = _cfg(
        [cube],
        tmp_path / "model",
        streams=("post", "terrain"),
        window=S,
        stride=S,
        block=S,
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
        model={**TINY, "stem_widths": {"post": 8, "terrain": 8}},
    )
    res = train(client, cfg)
    ck = load_checkpoint(res["best"])
    assert ck["streams"] == ["post", "terrain"] and set(ck["stats"]["mean"]) == {"post", "terrain"}
    conf = evaluate(res["best"], cube, tile=S)
    ds = open_cube(cube)
    assert conf.tp + conf.fp + conf.fn + conf.tn == int(((ds["label"] != 255) & ds["valid"]).sum())


def test_a_worker_lost_before_the_first_checkpoint_restarts_from_scratch(client, cubes, tmp_path, capsys):
    from landslide_dask.train.ddp import running_ranks

    cfg = _cfg(cubes, tmp_path, epochs=2, steps_per_epoch=30, restarts=1)
    killed: list[tuple[str, bool]] = []

    def watch():  # kill rank 1's worker as soon as its rank runs, long before epoch 1 ends
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ranks = client.run(running_ranks)
            busy = sorted(a for a, r in ranks.items() if r)
            if len(busy) == 2:
                pid = client.run(os.getpid, workers=[busy[1]])[busy[1]]
                checkpointed = (tmp_path / "last.pt").exists()
                os.kill(pid, signal.SIGKILL)
                killed.append((busy[1], checkpointed))
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    res = train(client, cfg, timeout_s=30)
    t.join(5)
    assert killed and killed[0][1] is False  # a worker was killed before any epoch was checkpointed
    assert res["restarts"] == 1 and res["resumed_from"] == 0  # a second run, from scratch
    assert [h["epoch"] for h in res["history"]] == [0, 1]
    said = capsys.readouterr().out
    assert "before the first checkpoint; starting again from scratch" in said, said


def test_an_rgb_model_trained_on_four_band_cubes_maps_and_scores_a_three_band_cube(client, cubes, tmp_path):
    import landslide_dask.predict as P
    from landslide_dask.cube.build import write_cube

    res = train(
        client,
        _cfg(cubes, tmp_path / "rgb", epochs=1, steps_per_epoch=4, bands=("blue", "green", "red"), pre_dropout=0.2),
    )
    ck = load_checkpoint(res["best"])
    assert ck["bands"] == ["blue", "green", "red"] and ck["train_config"]["pre_dropout"] == 0.2
    assert len(ck["stats"]["mean"]["post"]) == 3 and ck["stats"]["units"] == "reflectance_x10000"
    # the same region as another sensor would deliver it: three bands, in another order
    ds = open_cube(cubes[0])
    rgb = write_cube(ds.sel(band=["red", "green", "blue"]).chunk({"band": -1}), tmp_path / "rgb.zarr", progress=False)
    assert evaluate(res["best"], rgb) == evaluate(res["best"], cubes[0])  # the same inputs, so the same counts
    b = P.predict(rgb, res["best"], tmp_path / "b.zarr", progress=False)
    assert P.open_prediction(b).attrs["bands"] == ["blue", "green", "red"]
    # a cube without one of the model's bands is refused, naming it
    no_blue = write_cube(ds.sel(band=["red", "green", "nir"]).chunk({"band": -1}), tmp_path / "nb.zarr", progress=False)
    with pytest.raises(InputDataError, match=r"missing \['blue'\]"):
        evaluate(res["best"], no_blue)
    with pytest.raises(InputDataError, match=r"missing \['blue'\]"):
        train(client, _cfg([cubes[0], str(no_blue)], tmp_path / "bad", bands=("blue", "green", "red")))


def test_stream_dropout_trains_on_cubes_with_and_without_a_stream_and_maps_a_post_only_cube(client, cubes, tmp_path):
    """One model for Iburi-like cubes (pre, post, terrain) and Chattogram-like tiles (post only): trained
    with pre-event and terrain dropout on both kinds, it maps a post-only cube; without the dropout,
    such a cube is refused for training and for mapping, saying which option makes it work."""
    import landslide_dask.predict as P
    from landslide_dask.cube.build import write_cube

    ds = open_cube(cubes[1])
    post_only = write_cube(
        ds.drop_vars(["pre", "pre_valid", "slope", "hillshade"], errors="ignore"),
        tmp_path / "post_only.zarr",
        progress=False,
    )
    with pytest.raises(InputDataError, match="--stream-dropout terrain"):
        train(
            client,
            _cfg([cubes[0], str(post_only)], tmp_path / "no-dropout", epochs=1, steps_per_epoch=2, pre_dropout=0.2),
        )
    from landslide_dask.train.loop import prepare

    with pytest.raises(InputDataError, match=r"\['terain'\], which are not streams"):
        prepare(_cfg([cubes[0]], tmp_path / "typo", stream_dropout={"terain": 0.2}))
    res = train(
        client,
        _cfg(
            [cubes[0], str(post_only)],
            tmp_path / "both",
            epochs=1,
            steps_per_epoch=4,
            pre_dropout=0.2,
            stream_dropout={"terrain": 0.3},
        ),
    )
    ck = load_checkpoint(res["best"])
    assert ck["train_config"]["stream_dropout"] == {"terrain": 0.3} and len(ck["stats"]["mean"]["terrain"]) == 2
    out = P.predict(post_only, res["best"], tmp_path / "p.zarr", progress=False)
    pred = P.open_prediction(out)
    valid = open_cube(post_only)["valid"].values
    np.testing.assert_array_equal(pred["valid"].values, valid)  # every valid pixel mapped
    assert pred["no_pre"].values[valid].all()  # from post-event imagery alone
    assert evaluate(res["best"], post_only).positives > 0
    # a model trained without terrain dropout does not map it, and says why
    plain = tmp_path / "plain.pt"
    ck["train_config"] = {**ck["train_config"], "stream_dropout": {}}
    torch.save(ck, plain)
    with pytest.raises(InputDataError, match="stream-dropout terrain"):
        P.predict(post_only, plain, tmp_path / "q.zarr", progress=False)
