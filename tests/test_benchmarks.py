"""The benchmarks, in their small modes, so they cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import BENCH, SHARED_DATA


def _run(script: str, *args: str) -> str:
    p = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_liveness_benchmark_small_mode():
    out = _run("liveness.py", "--seconds", "3", "--burners", "1", "--info-interval", "5ms")
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "scheduler_info" in rows and "worker_table" in rows
    assert rows["worker_table"].rstrip().endswith("| 0 |")  # the scheduler's own answer never misses a worker
    assert "longest a busy worker went unheard" in out


def test_worker_env_benchmark_small_mode():
    out = _run("worker_env.py", "--steps", "1", "--repeat", "1", "--window", "64", "--batch-size", "2")
    assert "| distributed's default | 65536 |" in out and "| landslide_dask (WORKER_CONFIG) | unset |" in out


def test_cube_benchmark_small_mode(tmp_path):
    out = _run("cube.py", "--small", "--workdir", str(tmp_path), "--json", str(tmp_path / "r.json"))
    res = json.loads((tmp_path / "r.json").read_text())
    regions = res["regions"]
    assert [r["size_km"] for r in regions] == [0.5, 1.0]
    assert all(r["cube"]["pixels"] > 0 < r["raw"]["pixels"] for r in regions)
    assert [m["dates"] for m in res["median"]] == [4, 8, 16]
    for r in regions:  # the three loaders ran on the same items and grid, and agree pixel for pixel
        loaders = {ld["loader"]: ld for ld in r["loaders"]}
        assert set(loaders) == {"landslide_dask", "stackstac", "odc-stac"}
        assert all(ld["sums"] == loaders["landslide_dask"]["sums"] and ld["seconds"] > 0 for ld in loaders.values())
        assert loaders["landslide_dask"]["tasks"] < loaders["stackstac"]["tasks"]
    assert "| raw read / cube |" in out and "peak memory, 4x the area" in out and "| np.nanmedian ms |" in out
    assert "| same pixels as landslide_dask |" in out


def test_train_benchmark_small_mode(train_cubes, tmp_path):
    out = _run("train.py", "--small", "--cubes", *train_cubes, "--json", str(tmp_path / "r.json"))
    res = json.loads((tmp_path / "r.json").read_text())
    assert [r["workers"] for r in res["ddp"]] == [1, 2] and all(r["samples_per_s"] > 0 for r in res["ddp"])
    assert res["local"]["loader"]["samples_per_s"] > 0 and "scaling efficiency" in out


def test_predict_benchmark_small_mode(train_cubes, tmp_path):
    from .helpers.models import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "tiny.pt", bands=("blue", "green", "red", "nir"))
    out = _run(
        "predict.py", "--small", "--cube", train_cubes[0], "--model", str(ckpt), "--json", str(tmp_path / "r.json")
    )
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["throughput"]["end_to_end"]["km2_per_hour"] > 0 and len(res["memory"]["runs"]) == 2
    assert res["batch_sizes"][0]["batch_size"] == 1 and "whole-image" in out


def test_generalisation_benchmark_small_mode(train_cubes, tmp_path):
    out = _run(
        "generalisation.py", "--small", "--cubes", str(Path(train_cubes[0]).parent), "--out", str(tmp_path / "g")
    )
    table = (tmp_path / "g" / "ablation.md").read_text()
    assert "post only" in table and "pre+post (no terrain)" in table and "post only" in out


def test_country_benchmark_small_mode(small_country, tmp_path):
    _run("country.py", "--small", "--data", str(small_country), "--out", str(tmp_path / "c"))
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    assert [r["workers"] for r in res["results"]] == [2] and all(r["failed"] == 0 for r in res["results"])
    assert res["seconds_per_km2_per_worker"] > 0 and res["projection_nepal_hours_by_workers"]["1"] > 0


IBURI = SHARED_DATA / "iburi_2018"


@pytest.mark.skipif(not IBURI.exists(), reason="../shared/data/iburi_2018 is not in this clone")
def test_real_event_benchmark_small_mode_and_the_demo_on_the_real_event(tmp_path):
    import json
    import shutil

    import pandas as pd

    # progressive is left out here (its path is tests/train/test_loop.py's): the suite's time
    out = _run(
        "real_event.py",
        "--out",
        str(tmp_path / "bench"),
        "--small",
        "--event",
        str(IBURI),
        "--models",
        "local,transfer,real-transfer,self-trained,combined,chattogram-local",
    )
    table = (tmp_path / "bench" / "real_event.md").read_text(encoding="utf-8")
    for model in ("local", "transfer", "combined"):
        assert f"| {model} |" in table and (tmp_path / "bench" / "maps" / model / "map.png").stat().st_size > 10_000
    assert "Iburi test blocks" in table and "(unseen)" in table and "koukita/2018_09_06_atumatyou" in table
    # the floor: the pixel baseline, trained on the local model's blocks, scored on the same test blocks
    rows = pd.read_csv(tmp_path / "bench" / "real_event.csv")
    base = rows[rows["model"] == "pixel baseline"].iloc[0]
    assert base["scored on"] == "Iburi test blocks" and base["mcc"] > 0.2 and 0 < base["AP"] <= 1
    assert (tmp_path / "bench" / "maps" / "pixel-baseline" / "map.png").stat().st_size > 10_000
    assert "| AP |" in table and "| MCC at best t |" in table
    # the threshold rule's loss and what the two model families reach together are in the table too
    assert base["MCC at best t"] >= base["mcc"]
    both = rows[rows["model"] == "local + pixel baseline"]
    assert len(both) == 1 and both["scored on"].iloc[0] == "Iburi test blocks" and 0 < both["AP"].iloc[0] <= 1
    # the second real region, where present: a model trained with it maps Iburi unseen, and models
    # that never saw it are scored on it per pixel and per labelled blob
    chatto_rows = rows[rows["scored on"] == "Chattogram (unseen; sparse samples)"]
    if (IBURI.parent / "chattogram_s2_tiles").exists():
        assert "| real-transfer | synthetic + Chattogram | Iburi test blocks |" in table
        st = rows[(rows["model"] == "self-trained") & (rows["scored on"] == "Iburi test blocks")]
        assert len(st) == 1 and st["trained on"].iloc[0].endswith("(no Iburi label)")
        assert set(chatto_rows["model"]) == {"transfer", "combined"}
        assert chatto_rows["blobs found"].str.endswith("/120").all()
        assert chatto_rows["blobs rejected"].str.endswith("/214").all()
        # Chattogram's own floor on its test blocks, beside the unseen models on the same blocks
        test_rows = rows[rows["scored on"].str.startswith("Chattogram test blocks")]
        assert set(test_rows["model"]) == {"pixel baseline", "chattogram-local", "transfer", "combined"}
        assert not rows[(rows["model"] == "chattogram-local") & rows["scored on"].str.startswith("Iburi")].shape[0]
        base_ch = test_rows[test_rows["model"] == "pixel baseline"].iloc[0]
        assert base_ch["trained on"] == "Chattogram (its training blocks)" and 0 < base_ch["AP"] <= 1
        found = test_rows["blobs found"]  # every model scored on the same blobs (NaN would pass .all())
        assert found.notna().all() and found.str.split("/").str[1].nunique() == 1
    else:
        assert chatto_rows.empty
    assert "Pre-event gap" in out
    # the same test blocks in every run: no model that saw Iburi trained on them
    local = pd.read_csv(tmp_path / "bench" / "models" / "local" / "windows.csv")
    combined = pd.read_csv(tmp_path / "bench" / "models" / "combined" / "windows.csv")
    iburi = [p for p in combined["path"].unique() if p.endswith("iburi_2018.zarr")][0]
    key = ["row", "col"]
    a = local.sort_values(key)[[*key, "split"]].reset_index(drop=True)
    b = combined[combined["path"] == iburi].sort_values(key)[[*key, "split"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    # the teacher comparison on the same cubes, beside the Chattogram tiles where present
    chatto = IBURI.parent / "chattogram_s2_tiles"
    t = _run(
        "teacher.py",
        "--cubes",
        str(tmp_path / "bench" / "cubes"),
        *(["--chattogram", str(chatto)] if chatto.exists() else []),
    )
    assert "| iburi_2018 post |" in t and "| hokkaido_like pre |" in t and "PSD slope" in t
    assert ("| chattogram (real) |" in t) == chatto.exists()
    # `demo --real` maps the event with the model the demo trained (here the small transfer model)
    demo = tmp_path / "demo-out"
    (demo / "model").mkdir(parents=True)
    shutil.copy(tmp_path / "bench" / "models" / "transfer" / "best.pt", demo / "model" / "best.pt")
    p = subprocess.run(
        [sys.executable, "-m", "landslide_dask.cli", "demo", "--real", str(IBURI), "--out", str(demo)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pixels:  mcc" in p.stdout and "koukita/2018_09_06_atumatyou" in p.stdout
    assert "no pre-event image: mapped from post-event imagery and terrain" in p.stdout
    rep = json.loads((demo / "real" / "iburi_2018" / "demo-model" / "report.json").read_text())
    assert rep["attribution"].startswith("Inventory:") and rep["evaluated_km2"] > 20


def test_products_benchmark_small_mode(tmp_path):
    out = _run("products.py", "--small", "--json", str(tmp_path / "r.json"))
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["pixels"] for r in rows] == [300 * 300, 600 * 600]
    assert all(r["polygons"] > 0 and r["tiles"] > 0 and r["total_s"] > 0 for r in rows)
    assert all(r.get("page_errors", 0) == 0 for r in rows)
    assert "| km2 |" in out and "the pixels took" in out
