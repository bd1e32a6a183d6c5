"""Seamless blended-window inference: independence of chunking, no seams, equality with a direct
whole-array computation, resumability, the valid mask, COG export and clear bad-input errors.

Everything runs on tiny cubes written here and a tiny, randomly initialised model whose output
varies strongly with its input (so seams and mistakes show), with 128 px windows.

How the defaults were chosen is in the README ("Mapping a region"; measured on the demo
checkpoint against one whole-image pass).
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import landslide_dask.predict as P
from landslide_dask.errors import InputDataError
from landslide_dask.predict import engine, store
from landslide_dask.predict import run as R
from landslide_dask.predict import windows as W
from landslide_dask.products.cog import export_cog
from landslide_dask.train.model import LandslideNet, ModelConfig

from ..helpers.cubes import BANDS, make_arrays, write_test_cube
from ..helpers.models import OV, WIN, make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    a = make_arrays()
    a["valid"][:, :30] = False  # an invalid strip (outside the AOI)
    a["valid"][120:140, 100:150] = False  # a cloud hole
    return a


@pytest.fixture(scope="module")
def cube64(tmp_path_factory, arrays) -> Path:
    return write_test_cube(tmp_path_factory.mktemp("c64") / "cube.zarr", arrays, chunk=64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cube64, ckpt) -> np.ndarray:
    """An uninterrupted prediction of cube64 (probability array)."""
    out = P.predict(
        cube64, ckpt, tmp_path_factory.mktemp("ref") / "pred.zarr", window=WIN, overlap=OV, batch_size=3, progress=False
    )
    return P.open_prediction(out)["probability"].values


def _prob(out: Path) -> np.ndarray:
    return P.open_prediction(out)["probability"].values


# ---------------------------------------------------------------------------------------------
# the direct computation the dask graph must reproduce
# ---------------------------------------------------------------------------------------------
def _model_of(ckpt_path: Path):
    ck = torch.load(ckpt_path, weights_only=True)
    m = LandslideNet(ModelConfig.from_dict(ck["model_config"])).eval()
    m.load_state_dict(ck["state_dict"])
    return m, ck


def _normalised_padded(arrays: dict, ck: dict, pad: int, extra: int) -> dict[str, np.ndarray]:
    """Whole-cube normalised inputs, zero-padded by ``pad`` before and ``extra`` after each axis."""
    valid = arrays["valid"]
    out = {}
    for s in ck["streams"]:
        x = (np.stack([arrays["hillshade"], arrays["slope"]]) if s == "terrain" else arrays[s]).astype(np.float32)
        x = (x - np.float32(ck["stats"]["mean"][s])[:, None, None]) / np.float32(ck["stats"]["std"][s])[:, None, None]
        x[:, ~valid] = 0
        out[s] = np.pad(x, ((0, 0), (pad, extra), (pad, extra)))
    return out


def _tukey(n: int, overlap: int) -> np.ndarray:
    """The blending weight along one axis, written out independently of predict.py."""
    t = np.ones(n)
    for i in range(min(overlap, n)):
        ramp = np.sin(np.pi * (i + 0.5) / (2 * overlap)) ** 2
        t[i] = min(t[i], ramp)
        t[n - 1 - i] = min(t[n - 1 - i], ramp)
    return np.maximum(t, 1e-3)


def direct_blend(arrays: dict, ckpt_path: Path, window: int, overlap: int) -> np.ndarray:
    """Blended windows computed in one process on whole in-memory arrays (no dask, no zarr)."""
    model, ck = _model_of(ckpt_path)
    h, w = arrays["valid"].shape
    wins = P.windows_of((h, w), window, overlap)
    pad = max(0, -min(min(r, c) for r, c, _, _ in wins))
    x = _normalised_padded(arrays, ck, pad, window)
    acc = np.zeros((h + 2 * pad + window, w + 2 * pad + window), np.float64)
    wsum = np.zeros_like(acc)
    with torch.inference_mode():
        for r, c, wh, ww in wins:
            inp = {
                s: torch.from_numpy(v[None, :, r + pad : r + pad + wh, c + pad : c + pad + ww].copy())
                for s, v in x.items()
            }
            p = torch.sigmoid(model(inp)["logits"])[0, 0].numpy()
            wt = np.outer(_tukey(wh, overlap), _tukey(ww, overlap))
            acc[r + pad : r + pad + wh, c + pad : c + pad + ww] += wt * p
            wsum[r + pad : r + pad + wh, c + pad : c + pad + ww] += wt
    prob = (acc / np.maximum(wsum, 1e-12))[pad : pad + h, pad : pad + w]
    out = np.rint(prob * 255).astype(np.uint8)
    out[~arrays["valid"]] = 0
    return out


def whole_image(arrays: dict, ckpt_path: Path) -> np.ndarray:
    """One forward pass over the whole cube (zero-padded to the model's 32 px multiple)."""
    model, ck = _model_of(ckpt_path)
    h, w = arrays["valid"].shape
    x = _normalised_padded(arrays, ck, 0, 0)
    H, W = -(-h // 32) * 32, -(-w // 32) * 32
    inp = {s: torch.from_numpy(np.pad(v, ((0, 0), (0, H - h), (0, W - w))))[None] for s, v in x.items()}
    with torch.inference_mode():
        p = torch.sigmoid(model(inp)["logits"])[0, 0, :h, :w].numpy()
    out = np.rint(p * 255).astype(np.uint8)
    out[~arrays["valid"]] = 0
    return out


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
def test_overhead_at_defaults_is_at_most_1_3_and_reported(cube64, ckpt, tmp_path):
    assert P.asymptotic_overhead() <= 1.3
    # every square region from 10 km (1000 px at 10 m) to 300 km, and a few oblong ones
    sizes = list(range(1000, 5000, 1)) + list(range(5000, 30001, 37))
    worst = max(P.overhead((n, n)) for n in sizes)
    assert worst <= 1.3, worst
    assert max(P.overhead((n, 3 * n + 17)) for n in range(1000, 6000, 11)) <= 1.3
    # the function measures what it says: windows x area / pixels
    assert P.overhead((1000, 1000), 512, 0) == pytest.approx(1024**2 / 1000**2)
    assert P.overhead((10000, 10000), 512, 256) > 3.5  # 50 % overlap costs ~4x
    # ...and predict records it
    out = P.predict(cube64, ckpt, tmp_path / "p.zarr", window=WIN, overlap=OV, progress=True)
    attrs = P.open_prediction(out).attrs
    assert attrs["overhead"] == pytest.approx(P.overhead((200, 232), WIN, OV), abs=1e-4)
    assert attrs["window"] == WIN and attrs["overlap"] == OV and attrs["threshold"] == 0.4
    assert attrs["crs"] == "EPSG:32633" and attrs["transform"] == [10.0, 0.0, 500.0, 0.0, -10.0, 1000.0]


def test_same_region_chunked_two_ways_gives_the_same_probabilities(tmp_path, arrays, ckpt, reference):
    other = write_test_cube(tmp_path / "c96.zarr", arrays, chunk=(96, 80))
    out = P.predict(other, ckpt, tmp_path / "pred96.zarr", window=WIN, overlap=OV, batch_size=3, progress=False)
    ds = P.open_prediction(out)
    assert ds["probability"].encoding["chunks"] == (96, 80)  # output chunks follow the cube's
    got = ds["probability"].values
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1
    assert (got == reference).mean() > 0.999  # in fact identical: the window grid ignores chunking
    assert reference[arrays["valid"]].std() > 10  # the model output is not flat


def test_matches_a_direct_whole_array_computation(arrays, ckpt, reference):
    direct = direct_blend(arrays, ckpt, WIN, OV)
    assert np.abs(direct.astype(int) - reference.astype(int)).max() <= 1
    # Against one whole-image pass, blending is far closer than naive tiling. (Not equal: this
    # model's receptive field exceeds the 200 px cube, and its bilinear upsampling clamps at every
    # input edge, so the cube border itself shifts values; on the 1202 px demo cube, pixels > 64 px
    # from the border differ by <= 4/255 at the defaults.)
    whole = whole_image(arrays, ckpt)
    naive = direct_blend(arrays, ckpt, WIN, 0)
    m = arrays["valid"]
    d_blend = np.abs(whole.astype(int) - reference.astype(int))[m]
    d_naive = np.abs(whole.astype(int) - naive.astype(int))[m]
    assert np.percentile(d_naive, 99) >= 20
    assert np.percentile(d_blend, 99) <= np.percentile(d_naive, 99) / 2
    assert d_blend.mean() <= d_naive.mean() / 2


def _line_steps(prob: np.ndarray, axis: int, margin: int = 16) -> dict[int, float]:
    """Mean |p[b] - p[b-1]| along each line b (rows for axis 0, columns for axis 1), in 1/255,
    leaving out ``margin`` px at the cube border."""
    d = np.abs(np.diff(prob.astype(float), axis=axis))
    d = d[margin:-margin, margin:-margin].mean(axis=1 - axis)
    return {b + margin + 1: float(v) for b, v in enumerate(d)}


def test_smooth_input_shows_no_seam_where_naive_tiling_does(tmp_path, ckpt):
    arrays = make_arrays(shape=(256, 256), kind="ramp")  # a gentle ramp: the output is smooth too
    cube = write_test_cube(tmp_path / "ramp.zarr", arrays, chunk=64)
    ours = _prob(P.predict(cube, ckpt, tmp_path / "blend.zarr", window=WIN, overlap=OV, progress=False))
    naive = _prob(P.predict(cube, ckpt, tmp_path / "naive.zarr", window=WIN, overlap=0, progress=False))
    chunk_edges = set(range(64, 256, 64))
    for axis in (0, 1):
        for prob, overlap, is_naive in ((ours, OV, False), (naive, 0, True)):
            edges = {e for r, h in P.axis_windows(256, WIN, overlap) for e in (r, r + h)} | chunk_edges
            steps = _line_steps(prob, axis)
            at_edges = max(v for b, v in steps.items() if b in edges)
            elsewhere = [v for b, v in steps.items() if b not in edges]
            if is_naive:  # naive tiling: a step many times the ramp's slope at the tile edges
                assert at_edges >= 10 * np.median(elsewhere), (at_edges, np.median(elsewhere))
            else:  # blended: window and chunk edges are no steeper than any other line
                assert at_edges <= max(elsewhere) + 0.1 and at_edges <= 1.0, (at_edges, max(elsewhere))


def test_valid_mask_is_respected(arrays, reference, cube64, ckpt, tmp_path):
    assert (reference[~arrays["valid"]] == 0).all()
    assert (reference[arrays["valid"]] > 0).mean() > 0.5
    ds = P.open_prediction(P.predict(cube64, ckpt, tmp_path / "v.zarr", window=WIN, overlap=OV, progress=False))
    assert (ds["valid"].values == arrays["valid"]).all()
    # the lazy in-memory variant is the same computation
    lazy = P.lazy_probability(cube64, ckpt, window=WIN, overlap=OV, batch_size=3)
    assert lazy.chunks == ((64, 64, 64, 8), (64, 64, 64, 40)) and (lazy.compute() == reference).all()


def test_windows_without_valid_pixels_are_skipped(tmp_path, ckpt, monkeypatch):
    a = make_arrays(shape=(200, 232), seed=1)
    a["valid"][:, :150] = False
    cube = write_test_cube(tmp_path / "half.zarr", a, chunk=64)
    seen = []
    orig = engine.run_batch

    def spy(plan, windows):
        res = orig(plan, windows)
        seen.extend(r is not None for r in res)
        return res

    monkeypatch.setattr(engine, "run_batch", spy)
    prob = _prob(P.predict(cube, ckpt, tmp_path / "p.zarr", window=WIN, overlap=OV, progress=False))
    assert len(seen) == len(P.windows_of((200, 232), WIN, OV)) and 0 < sum(seen) < len(seen)
    assert (prob[:, :150] == 0).all() and (prob[:, 150:] > 0).any()


def test_window_results_held_at_once_do_not_grow_with_the_region(tmp_path, ckpt, monkeypatch):
    """Memory per worker: the window results alive at any moment are those of a strip of chunk
    rows across the region, the same for a region 4x taller (grouping all same-sized windows
    first, as predict once did, held ~every window of the region until the trimmed last column
    ran)."""
    import weakref

    orig, lock = engine.run_batch, threading.Lock()
    live = {"now": 0, "peak": 0}

    def released() -> None:
        with lock:
            live["now"] -= 1

    def tracking(plan, windows):
        res = orig(plan, windows)
        for r in res:
            if r is not None:
                with lock:
                    live["now"] += 1
                    live["peak"] = max(live["peak"], live["now"])
                weakref.finalize(r, released)
        return res

    monkeypatch.setattr(engine, "run_batch", tracking)
    monkeypatch.setattr(engine, "local_threads", lambda device: 2)
    peaks = {}
    for h in (400, 1600):
        cube = write_test_cube(tmp_path / f"c{h}.zarr", make_arrays(shape=(h, 232), seed=2), chunk=64)
        live.update(now=0, peak=0)
        P.predict(cube, ckpt, tmp_path / f"p{h}.zarr", window=WIN, overlap=OV, batch_size=1, progress=False)
        assert live["now"] == 0  # every window result is released once its chunks are written
        peaks[h] = live["peak"]
    n_large = len(P.windows_of((1600, 232), WIN, OV))
    # 3 windows per row; a strip: the windows overlapping a band of 6 chunk rows (384 px) at most
    strip = 3 * ((6 * 64 + WIN) // (WIN - OV) + 1)
    assert peaks[1600] <= strip < n_large / 2, (peaks, strip, n_large)
    assert peaks[400] <= strip


class _Interrupt(RuntimeError):
    pass


def test_interrupted_run_resumes_skipping_finished_chunks(tmp_path, cube64, ckpt, reference, monkeypatch):
    out = tmp_path / "pred.zarr"
    total = len(W.chunk_grid((200, 232), (64, 64)))
    lock, calls = threading.Lock(), {"n": 0}
    orig_write = store.write_block

    def failing_write(out_, name, *a):
        with lock:
            calls["n"] += name == "probability"
            if calls["n"] > 3:  # three chunks written, then "the machine dies"
                raise _Interrupt("killed")
        return orig_write(out_, name, *a)

    monkeypatch.setattr(store, "write_block", failing_write)
    monkeypatch.setattr(engine, "local_threads", lambda device: 1)  # deterministic order of chunks
    with pytest.raises(_Interrupt):
        P.predict(cube64, ckpt, out, window=WIN, overlap=OV, batch_size=3, progress=False)
    monkeypatch.setattr(store, "write_block", orig_write)
    done = store.done_chunks(out)
    assert len(done) == 3 < total
    with pytest.raises(InputDataError, match="rerun"):
        P.open_prediction(out)  # partial output is never taken for a finished one
    with pytest.raises(InputDataError, match="rerun"):
        export_cog(out, tmp_path / "x.tif")
    # other arguments: refused, nothing touched
    with pytest.raises(InputDataError, match="overlap"):
        P.predict(cube64, ckpt, out, window=WIN, overlap=64, batch_size=3, progress=False)

    assembled = []
    orig_assemble = R.assemble

    def counting(plan, i, j, contributions):
        assembled.append((i, j))
        return orig_assemble(plan, i, j, contributions)

    monkeypatch.setattr(R, "assemble", counting)
    P.predict(cube64, ckpt, out, window=WIN, overlap=OV, batch_size=3, progress=False)
    assert sorted(assembled) == sorted(set(W.chunk_grid((200, 232), (64, 64))) - done)
    assert (_prob(out) == reference).all()  # identical to the uninterrupted run
    assembled.clear()
    P.predict(cube64, ckpt, out, window=WIN, overlap=OV, batch_size=3, progress=False)
    assert assembled == []  # complete: nothing recomputed


def test_distributed_client_gives_the_local_result(tmp_path, cube64, ckpt, reference):
    from distributed import Client

    from landslide_dask.clusters.start import local_cluster

    with local_cluster(2, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        assert client.scheduler.address.startswith("tls://")  # the package's cluster: TLS by default
        out = P.predict(
            cube64, ckpt, tmp_path / "d.zarr", client=client, window=WIN, overlap=OV, batch_size=3, progress=True
        )
        loaded = client.run(lambda: len(engine._MODELS))
    assert (_prob(out) == reference).all()
    assert sum(loaded.values()) >= 1 and max(loaded.values()) == 1  # one model per worker process


def test_graph_carries_paths_not_the_model(cube64, ckpt):
    plan, batches, _, _ = P.prepare(cube64, ckpt, window=WIN, overlap=OV, batch_size=3, device="cpu", threads=1)
    tasks = R.graph(plan, batches, W.chunk_grid(plan.shape, plan.chunks))
    graph = {}
    for t in tasks:
        graph.update(dict(t.__dask_graph__()))
    assert sum(len(b) for b in batches) == len(P.windows_of(plan.shape, WIN, OV))
    assert len(graph) == len(batches) + len(tasks)  # each batch of windows computed once
    per_task = len(pickle.dumps(graph)) / len(graph)
    assert per_task < 2000, per_task  # paths and offsets only; the weights alone are larger
    assert len(pickle.dumps(graph)) < os.path.getsize(ckpt)


def test_cog_export_validates_and_matches(tmp_path, cube64, ckpt, reference, arrays):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    out = P.predict(cube64, ckpt, tmp_path / "p.zarr", window=WIN, overlap=OV, batch_size=3, progress=False)
    tif = export_cog(out, tmp_path / "p.tif", blocksize=64)
    ok, errors, _ = cog_validate(str(tif))
    assert ok, errors
    with rasterio.open(tif) as src:
        assert src.dtypes == ("uint8",) and src.count == 1 and src.crs.to_epsg() == 32633
        assert tuple(src.transform)[:6] == (10.0, 0.0, 500.0, 0.0, -10.0, 1000.0)
        assert (src.read(1) == reference).all()  # exactly the zarr's values
        assert ((src.read_masks(1) > 0) == arrays["valid"]).all()  # invalid pixels masked


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_checkpoint_bands_or_streams_not_matching_the_cube(tmp_path, ckpt, arrays):
    other_bands = write_test_cube(tmp_path / "b.zarr", arrays, bands=["B02", "B03", "B04", "B08"])
    with pytest.raises(InputDataError, match=r"bands .*B02.*missing") as e:
        P.predict(other_bands, ckpt, tmp_path / "o.zarr", progress=False)
    assert str(ckpt) in str(e.value) and "b.zarr" in str(e.value)
    no_pre = write_test_cube(tmp_path / "n.zarr", {k: v for k, v in arrays.items() if k != "pre"})
    with pytest.raises(InputDataError, match="'pre'"):
        P.predict(no_pre, ckpt, tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists()
    # a post-only model fits the post-only cube; extra bands in another order are selected by name
    post_ckpt = make_checkpoint(tmp_path / "post.pt", streams=("post", "terrain"))
    P.predict(no_pre, post_ckpt, tmp_path / "ok.zarr", window=WIN, overlap=OV, progress=False)
    rev = {k: (v[::-1].copy() if k in ("pre", "post") else v) for k, v in arrays.items()}
    reordered = write_test_cube(tmp_path / "r.zarr", rev, bands=BANDS[::-1])
    a = _prob(P.predict(reordered, ckpt, tmp_path / "r1.zarr", window=WIN, overlap=OV, progress=False))
    b = _prob(
        P.predict(
            write_test_cube(tmp_path / "s.zarr", arrays),
            ckpt,
            tmp_path / "r2.zarr",
            window=WIN,
            overlap=OV,
            progress=False,
        )
    )
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_cube_without_valid_pixels(tmp_path, ckpt):
    a = make_arrays(shape=(64, 64))
    a["valid"][:] = False
    cube = write_test_cube(tmp_path / "empty.zarr", a, chunk=32)
    with pytest.raises(InputDataError, match="no valid pixel") as e:
        P.predict(cube, ckpt, tmp_path / "o.zarr", progress=False)
    assert "empty.zarr" in str(e.value)
    assert not (tmp_path / "o.zarr").exists()


def test_corrupt_chunk_names_variable_and_chunk(tmp_path, ckpt, arrays):
    cube = write_test_cube(tmp_path / "c.zarr", arrays, chunk=64)
    chunk = cube / "post" / "c" / "0" / "1" / "2"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 3])
    P.clear_caches()
    out = tmp_path / "o.zarr"
    with pytest.raises(InputDataError, match=r"chunk \(1, 2\) of 'post'.*rebuild") as e:
        P.predict(cube, ckpt, out, window=WIN, overlap=OV, progress=False)
    assert str(chunk) in str(e.value)
    with pytest.raises(InputDataError, match="unfinished"):
        P.open_prediction(out)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_file_that_is_not_a_checkpoint_is_refused_unpickled(tmp_path, cube64):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(tmp_path / "pwned")))
    with pytest.raises(InputDataError, match="not a landslide-dask checkpoint"):
        P.predict(cube64, evil, tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o.zarr").exists()


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_output_folder_that_is_not_a_prediction_is_not_overwritten(tmp_path, cube64, ckpt):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(InputDataError, match="not a landslide-dask prediction"):
        P.predict(cube64, ckpt, out, progress=False)
    assert (out / "precious.txt").exists()
