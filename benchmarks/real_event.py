"""A real event, several ways: local, transfer (synthetic only, or with a second real region),
combined and progressive models on Iburi 2018, read against a pixel baseline.

What it runs, all through the package's public API and in one run:

1. The Iburi 2018 folder as shipped (``../shared/data/iburi_2018``) -> STAC collection -> labelled
   cube (``events.event_cube``: the README's walk-through); the synthetic demo regions -> cubes.
2. Four trainings of the demo-size model on RGB + terrain (``--bands blue,green,red``, the only
   bands the scene has), with pre-event dropout (the scene's pre-event mosaic has a 40 % gap):
   - **local**: the Iburi inventory alone, split by spatial blocks (train / val / test);
   - **transfer**: the synthetic regions but the held-out one, no Iburi data at all;
   - **real-transfer**: those synthetic regions and a second real region, the Chattogram Sentinel-2
     tiles (post-event RGB only, no terrain, sparse labelled samples; ``cube.tiles``), still no
     Iburi data: the paper's question on real data, Iburi as the unseen region;
   - **self-trained**: real-transfer (else transfer) continued for half its epochs on its sources
     plus Iburi pseudo-labelled by its own map (``train.selftrain``): still no Iburi label;
   - **combined**: those synthetic regions and Iburi together;
   - **progressive**: the transfer model continued on synthetic regions + Iburi;
   - **chattogram-local**: Chattogram's own training blocks alone (post-event RGB only): with the
     pixel baseline on the same blocks, Chattogram's floor, which tells a transfer failure on it
     from samples no model can learn.
   A region's blocks are dealt by its name, so Iburi's test blocks are the same in every run and
   no model trains on them.
3. The pixel baseline (``landslide_dask.baseline``: gradient-boosted trees on per-pixel features)
   trains on the local model's training blocks, takes its threshold on its validation blocks and
   is scored on the same test blocks: the floor every CNN row is read against.
4. Every model maps the whole scene (blended windows) and is scored on Iburi's test blocks
   (pixel MCC, precision, recall, F1, IoU, average precision; object precision / recall); transfer also on the whole
   labelled (western) area; combined, progressive and transfer also on the held-out synthetic
   region; transfer and combined also on Chattogram, which they never saw (per pixel and per
   labelled blob), on all its samples and on its test blocks beside chattogram-local and a pixel
   baseline trained on its training blocks. Maps beside the post-event image, with the inventory's
   attribution, in ``OUT/maps``.
5. ``OUT/real_event.md``: the table, the training curves' summary and where the maps are.

The east of the scene has imagery and no labels here; it is mapped, never scored, and nothing is
tuned on it.

    python benchmarks/real_event.py --out real-event-bench            # full: ~50 min on 2 CPU cores
    python benchmarks/real_event.py --out /tmp/small --small          # CI: tiny model, a crop, minutes
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVENT = ROOT.parent / "shared" / "data" / "iburi_2018"
DEFAULT_CHATTOGRAM = ROOT.parent / "shared" / "data" / "chattogram_s2_tiles"
CHATTOGRAM_CREDIT = (
    "Chattogram tiles and labels: github.com/murad-geoAi/sentinel2-landslide-detection-dl "
    "(MIT per its README). Imagery: Copernicus Sentinel-2."
)
SCORES = ("mcc", "precision", "recall", "f1", "iou")
AP = "average_precision"
TINY = {
    "encoder_blocks": [1, 1, 1, 1],
    "encoder_widths": [8, 16, 32, 32],
    "stem_widths": {"pre": 8, "post": 8, "terrain": 8},
}
SMALL_AOI = "141.8903,42.6824,141.955,42.7695"  # the labelled west only: a quick cube for CI


def synthetic_cubes(data: Path, cubes_dir: Path, size_km: float, n_regions: int) -> list[str]:
    """The demo's synthetic regions as cubes (made and built if absent)."""
    from landslide_dask.cube.build import CubeSpec, build_cube
    from landslide_dask.demo.synth import make_demo_data
    from landslide_dask.stac.server import serve_stac

    if not (data / "regions.json").exists():
        make_demo_data(data, size_km=size_km, n_regions=n_regions)
    regions = json.loads((data / "regions.json").read_text())
    out = []
    cubes_dir.mkdir(parents=True, exist_ok=True)
    with serve_stac(data) as url:
        for r in regions:
            path = cubes_dir / f"{r['name']}.zarr"
            if not (path / "zarr.json").exists():
                spec = CubeSpec(
                    stac_url=url,
                    event_date=date.fromisoformat(r["event_date"]),
                    aoi=data / r["aoi"],
                    out=path,
                    inventory=data / r["inventory"],
                    inventory_area=data / r["inventory_area"],
                    chunk=512,
                )
                build_cube(spec, progress=False, quicklook=False)
            out.append(str(path))
    return out


def post_only(c):
    """A training config on the post-event stream alone (Chattogram's tiles have nothing else)."""
    return replace(c, streams=("post",), model={**c.model, "stem_widths": {"post": c.model["stem_widths"]["post"]}})


def train_once(client, cfg):
    """Train unless this folder already holds a finished run (a killed benchmark resumes)."""
    from landslide_dask.train.loop import finished, train

    done = finished(cfg.out)
    if done is not None:
        print(f"[real-event] {cfg.out}: finished earlier, reusing it", flush=True)
        return done
    t0 = time.perf_counter()
    print(f"[real-event] training {Path(cfg.out).name} on {', '.join(Path(c).stem for c in cfg.cubes)}", flush=True)
    res = train(client, cfg)
    res["train_seconds"] = time.perf_counter() - t0
    (Path(cfg.out) / "result.json").write_text(json.dumps(res, indent=1))
    return res


def curve_summary(res: dict) -> str:
    """Epochs run, the best epoch and its validation MCC, and the last epoch's."""
    from landslide_dask.train.metrics import defined, fmt

    h = res["history"]
    best = max(h, key=lambda e: e["mcc"] if defined(e["mcc"]) else -2.0)
    return (
        f"{len(h)} epochs; best val MCC {fmt(best['mcc'])} at epoch {best['epoch'] + 1}, "
        f"last {fmt(h[-1]['mcc'])}; loss {h[0]['train_loss']:.3f} -> {h[-1]['train_loss']:.3f}"
    )


def row(model: str, trained_on: str, scored_on: str, rep: dict | None = None, conf=None) -> dict:
    """A table row; an undefined score (an empty class) stays empty, never 0 or 1."""
    px = rep["pixel"] if rep is not None else conf.scores()
    ob = rep["object"] if rep is not None else None

    def num(v) -> float | None:
        return None if v is None or v != v else round(float(v), 3)

    return {
        "model": model,
        "trained on": trained_on,
        "scored on": scored_on,
        **{k: num(px.get(k)) for k in SCORES},
        "AP": num(px.get(AP)),
        "MCC at best t": num(px.get("mcc_best_threshold")),
        "threshold": num(rep["threshold"] if rep is not None else conf.threshold),
        "object P": num(ob["precision"]) if ob else None,
        "object R": num(ob["recall"]) if ob else None,
        "blobs found": (
            f"{rep['blobs']['found']}/{rep['blobs']['landslide_blobs']}"
            if rep is not None and rep.get("blobs")
            else None
        ),
        "blobs rejected": (
            f"{rep['blobs']['rejected']}/{rep['blobs']['non_landslide_blobs']}"
            if rep is not None and rep.get("blobs")
            else None
        ),
    }


def local_and_baseline(local_pred, base_pred, iburi: str, index, maps: Path, test_ds, event, folder: Path) -> dict:
    """The local CNN's and the pixel baseline's maps averaged (mean probability), its threshold the
    level of best MCC on the local model's validation blocks, scored on the test blocks: what the
    two model families reach together (a reading of what bounds them, not a shipped model)."""
    import numpy as np

    from landslide_dask.events import split_labels
    from landslide_dask.predict import open_prediction
    from landslide_dask.predict.report import evaluate_map

    local = open_prediction(local_pred)["probability"].data.astype(np.uint16)
    base = base_pred["probability"].data.astype(np.uint16)
    mean = base_pred.assign(probability=(("y", "x"), ((local + base + 1) // 2).astype(np.uint8)))
    mean.attrs["model"] = "mean of the local CNN and the pixel baseline"
    kw = {"inventory": folder / event.inventory, "attribution": event.attribution}
    val_ds, _ = split_labels(iburi, index, "val")
    val = evaluate_map(mean, val_ds, maps / "local+baseline-val", name=f"{event.name} local+baseline (val)", **kw)
    t = val["pixel"]["best_threshold"]
    return evaluate_map(
        mean,
        test_ds,
        maps / "local+baseline",
        threshold=t,
        name=f"{event.name} local+baseline",
        attribution_latin=event.attribution_latin,
        beside=True,
        **kw,
    )


def chattogram_test_rows(chatto: str, maps: dict, c, out: Path, names: dict, small: dict) -> list[dict]:
    """Chattogram's own floor: the pixel baseline trained on its training blocks (post-event bands
    only: it has no pre-event image nor terrain) and scored on its test blocks, beside the maps of
    models that never saw it on the same blocks. Tells a transfer failure from samples no model
    can learn."""
    from landslide_dask.baseline import baseline_prediction, train_pixel_baseline
    from landslide_dask.events import split_labels
    from landslide_dask.predict.report import evaluate_map
    from landslide_dask.train.chips import build_index

    index = build_index([chatto], c.window, c.stride, c.block, c.min_usable, seed=c.seed)
    base = train_pixel_baseline(index, chatto, bands=list(c.bands) if c.bands else None, seed=c.seed, **small)
    test_ds, _ = split_labels(chatto, index)
    where = "Chattogram test blocks"
    kw = {"attribution": CHATTOGRAM_CREDIT}
    rep = evaluate_map(baseline_prediction(base, chatto), test_ds, out / "chattogram-baseline", **kw)
    rows = [row("pixel baseline", "Chattogram (its training blocks)", where, rep)]
    for name, pred in maps.items():
        rep = evaluate_map(pred, test_ds, out / f"{name}-chattogram-test", **kw)
        rows.append(row(name, names[name], where if name == "chattogram-local" else f"{where} (unseen)", rep))
    return rows


def markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append(
            "| "
            + " | ".join(
                "–" if pd.isna(r[c]) else (f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])) for c in cols
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--event", default=str(DEFAULT_EVENT), help="the real event folder (default ../shared/data/iburi_2018)"
    )
    p.add_argument("--out", required=True, help="output folder (a rerun reuses finished cubes and trainings)")
    p.add_argument("--synthetic-data", help="demo data folder (default OUT/synthetic-data, made if absent)")
    p.add_argument("--epochs", type=int, help="epochs per training (default: the demo's)")
    p.add_argument("--steps", type=int, help="steps per epoch (default: the demo's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cubes", help="folder of the cubes (default OUT/cubes; built there if absent)")
    p.add_argument(
        "--models",
        type=lambda v: v.split(","),
        default=["local", "transfer", "real-transfer", "self-trained", "combined", "progressive", "chattogram-local"],
        help="which of local,transfer,real-transfer,self-trained,combined,progressive,chattogram-local to train "
        "and score (progressive needs transfer; real-transfer and chattogram-local need the Chattogram tiles; "
        "self-trained continues real-transfer, else transfer, on Iburi's own map)",
    )
    p.add_argument(
        "--chattogram",
        default=str(DEFAULT_CHATTOGRAM),
        help="the Chattogram Sentinel-2 tiles (default ../shared/data/chattogram_s2_tiles): a second real "
        "region, post-only with sparse labels; skipped when absent",
    )
    p.add_argument("--haze", type=float, help="haze augmentation probability (default: the demo's)")
    p.add_argument("--small", action="store_true", help="CI mode: tiny model, 1 epoch, a crop of the scene")
    args = p.parse_args(argv)

    from landslide_dask.baseline import baseline_prediction, train_pixel_baseline
    from landslide_dask.demo.run import DEMO_EPOCHS, DEMO_STEPS, demo_train_config, local_client
    from landslide_dask.events import event_cube, event_of, map_event, split_labels
    from landslide_dask.predict import predict
    from landslide_dask.predict.report import evaluate_map
    from landslide_dask.train.chips import build_index
    from landslide_dask.train.metrics import fmt
    from landslide_dask.train.scoring import evaluate

    t0 = time.perf_counter()
    out = Path(args.out)
    folder = Path(args.event)
    if not folder.exists():
        raise SystemExit(f"{folder} is not here: this benchmark needs the shared real-event data")
    event = event_of(folder)
    epochs = args.epochs or (1 if args.small else DEMO_EPOCHS)
    steps = args.steps or (2 if args.small else DEMO_STEPS)
    data = Path(args.synthetic_data) if args.synthetic_data else out / "synthetic-data"

    print(f"[real-event] cubes: {event.title} and the synthetic regions", flush=True)
    cubes_dir = Path(args.cubes) if args.cubes else out / "cubes"
    iburi = str(event_cube(folder, cubes_dir, aoi=SMALL_AOI if args.small else None, progress=False))
    synth = synthetic_cubes(data, cubes_dir, size_km=3.0 if args.small else 10.0, n_regions=2 if args.small else 4)
    *seen, unseen = synth
    chatto = None
    if Path(args.chattogram).exists():
        from landslide_dask.cube.tiles import import_tiles

        chatto = cubes_dir / "chattogram.zarr"
        if not (chatto / "zarr.json").exists():
            import_tiles(args.chattogram, chatto, region="chattogram", attribution=CHATTOGRAM_CREDIT)
        chatto = str(chatto)
    elif {"real-transfer", "chattogram-local"} & set(args.models):
        print(f"[real-event] {args.chattogram} is not here: no real-transfer nor chattogram-local model", flush=True)
        args.models = [m for m in args.models if m not in ("real-transfer", "chattogram-local")]
    t_cubes = time.perf_counter() - t0

    def cfg(name: str, cubes: list[str], **kw):
        c = demo_train_config(cubes, out / "models" / name, epochs)
        c = replace(c, steps_per_epoch=steps, progress=False, **kw)
        if args.haze is not None:
            c = replace(c, haze=args.haze)
        if args.small:
            c = replace(c, model=TINY, batch_size=4, block=128)
        return c

    results, rows = {}, []
    # local: one scene, so no haze augmentation nor terrain dropout, and twice the epochs (Iburi's validation blocks:
    # best
    # MCC 0.637 with haze, 0.646 without, 0.664 without and 20 epochs; it still rose to epoch 13)
    runs = {
        "local": lambda: cfg(
            "local",
            [iburi],
            strategy="local",
            haze=0.0,
            stream_dropout={},
            epochs=epochs if args.small or args.epochs else 2 * epochs,
        ),
        "transfer": lambda: cfg("transfer", seen, strategy="combined"),
        "real-transfer": lambda: cfg("real-transfer", [*seen, chatto], strategy="combined"),
        "combined": lambda: cfg("combined", [*seen, iburi], strategy="combined"),
        "progressive": lambda: cfg(
            "progressive", [*seen, iburi], strategy="progressive", init_from=results["transfer"]["best"]
        ),
        # post-event RGB only, as Chattogram has: no pre-event stream, no terrain, no haze
        "chattogram-local": lambda: post_only(
            cfg("chattogram-local", [chatto], strategy="local", haze=0.0, stream_dropout={}, pre_dropout=0.0)
        ),
    }
    with local_client(args.workers) as client:
        for name in runs:
            if name in args.models:
                results[name] = train_once(client, runs[name]())
        parent = "real-transfer" if "real-transfer" in results else "transfer"
        if "self-trained" in args.models and parent in results:
            # one round on Iburi's own map by the best unseen-region model: pseudo-labels, no Iburi label
            from landslide_dask.train.selftrain import self_train

            t_st = time.perf_counter()
            sources = [*seen, chatto] if parent == "real-transfer" else seen
            st_cfg = cfg("self-trained", sources, epochs=max(1, epochs // 2))
            results["self-trained"] = self_train(client, results[parent]["best"], st_cfg, iburi)
            results["self-trained"].setdefault("train_seconds", time.perf_counter() - t_st)
            print(
                f"[real-event] self-trained {parent} on Iburi's own map: {time.perf_counter() - t_st:.0f} s", flush=True
            )
        t_train = time.perf_counter() - t0 - t_cubes

        # Iburi's split as every run deals it (by the region's name): its test windows
        c = cfg("local", [iburi])
        index = build_index([iburi], c.window, c.stride, c.block, c.min_usable, seed=c.seed)
        test_ds, test_share = split_labels(iburi, index)
        names = {
            "local": "Iburi",
            "transfer": "synthetic only",
            "real-transfer": "synthetic + Chattogram",
            "self-trained": f"{'synthetic + Chattogram' if parent == 'real-transfer' else 'synthetic'}, "
            "then Iburi's own map (no Iburi label)",
            "combined": "synthetic + Iburi",
            "progressive": "synthetic, then + Iburi",
            "chattogram-local": "Chattogram (its training blocks)",
        }
        reports = {}
        t_base = time.perf_counter()
        base = train_pixel_baseline(
            index,
            iburi,
            bands=list(c.bands) if c.bands else None,
            seed=c.seed,
            **({"trees": 50, "max_pixels": 50_000} if args.small else {}),
        )
        base_pred = baseline_prediction(base, iburi)
        rep = evaluate_map(
            base_pred,
            test_ds,
            out / "maps" / "pixel-baseline",
            inventory=folder / event.inventory,
            name=f"{event.name} pixel baseline",
            attribution=event.attribution,
            attribution_latin=event.attribution_latin,
            beside=True,
        )
        t_base = time.perf_counter() - t_base
        rows.append(row("pixel baseline", "Iburi (its training blocks)", "Iburi test blocks", rep))
        print(
            f"[real-event] pixel baseline: Iburi test blocks MCC {fmt(rep['pixel']['mcc'])} "
            f"(AP {fmt(rep['pixel'].get(AP))}; {t_base:.0f} s)",
            flush=True,
        )
        for name, res in [(k, v) for k, v in results.items() if k != "chattogram-local"]:
            rep = map_event(
                folder,
                res["best"],
                out / "maps",
                client=client,
                name=name,
                cube=iburi,
                products=False,
                scored_on=test_ds,
                progress=False,
            )
            reports[name] = rep
            rows.append(row(name, names[name], "Iburi test blocks", rep))
            print(
                f"[real-event] {name}: Iburi test blocks MCC {fmt(rep['pixel']['mcc'])} "
                f"(AP {fmt(rep['pixel'].get(AP))})",
                flush=True,
            )
        if "local" in results:
            rep = local_and_baseline(
                out / "maps" / "local-probability.zarr",
                base_pred,
                iburi,
                index,
                out / "maps",
                test_ds,
                event,
                folder,
            )
            rows.append(row("local + pixel baseline", "Iburi: mean of the two maps", "Iburi test blocks", rep))
        if "transfer" in results:
            whole = evaluate_map(
                out / "maps" / "transfer-probability.zarr",
                iburi,
                out / "maps" / "transfer-whole",
                inventory=folder / event.inventory,
                name=f"{event.name} transfer (whole labelled area)",
                attribution=event.attribution,
                attribution_latin=event.attribution_latin,
                beside=True,
            )
            rows.append(row("transfer", names["transfer"], "Iburi, whole labelled area", whole))
        # the second real region, never seen by the models that trained on Iburi and synthetic regions
        chatto_maps = {}
        for name in [m for m in ("combined", "transfer", "chattogram-local") if m in results and chatto]:
            pred = predict(
                chatto,
                results[name]["best"],
                out / "maps" / f"{name}-chattogram.zarr",
                client=client,
                progress=False,
                overwrite=True,
            )
            rep = evaluate_map(
                pred,
                chatto,
                out / "maps" / f"{name}-chattogram",
                name=f"chattogram {name}",
                attribution=CHATTOGRAM_CREDIT,
                beside=True,
            )
            if name != "chattogram-local":  # its own samples: scored on its test blocks only, below
                rows.append(row(name, names[name], "Chattogram (unseen; sparse samples)", rep))
            chatto_maps[name] = pred
        if chatto:
            small = {"trees": 50, "max_pixels": 50_000} if args.small else {}
            rows += chattogram_test_rows(chatto, chatto_maps, c, out / "maps", names, small)
        for name in [m for m in ("transfer", "real-transfer", "combined", "progressive") if m in results]:
            conf = evaluate(results[name]["best"], unseen)
            rows.append(row(name, names[name], f"synthetic {Path(unseen).stem} (unseen)", conf=conf))
    t_all = time.perf_counter() - t0

    table = pd.DataFrame(rows)
    table.to_csv(out / "real_event.csv", index=False)
    cov = next(iter(reports.values()))["coverage"] if reports else {"mapped": 0}
    lines = [
        f"# {event.title}: {', '.join(results)} and the pixel baseline",
        "",
        markdown(table),
        "",
        f"Test blocks: {test_share:.1%} of the cube's pixels ({len(index[index['split'] == 'test'])} windows of "
        f"{index.attrs['window']} px), the same in every run. Threshold (column): by each map's default rule — "
        "the checkpoint's own, chosen on its validation blocks, for a model that trained on Iburi; the "
        "label-free scene rule (Otsu on the map's log-odds) for one that never saw it, on Iburi and on the "
        "unseen synthetic region alike; the pixel baseline's on the local model's validation blocks. "
        "AP: average precision "
        "(area under the precision-recall curve), ranking apart from the threshold. MCC at best t: the "
        "best MCC any threshold gives on the scored pixels, read with their labels (no rule can choose it; "
        "the gap to MCC is what the threshold rule lost). local + pixel baseline: the mean of the two "
        "maps, thresholded at its best level on the local model's validation blocks. "
        "Objects: polygons >= 400 m² against the inventory's polygons.",
        f"Pre-event gap: {cov.get('no_pre', 0) / max(cov['mapped'], 1):.1%} of the mapped pixels have no pre-event "
        f"image and were mapped from post-event imagery and terrain (pre-event dropout {c.pre_dropout}).",
        "",
        "Training curves (validation MCC per epoch, each run's own validation blocks):",
        "",
    ]
    lines += [
        f"- {name}: {curve_summary(res)} ({out / 'models' / name / 'curves.png'})" for name, res in results.items()
    ]
    lines += [
        "",
        f"Maps beside the post-event image: {out / 'maps'}/<model>/map.png",
        "",
        f"Seconds: cubes {t_cubes:.0f}, training {t_train:.0f}, mapping and scoring {t_all - t_cubes - t_train:.0f}; "
        f"{epochs} epochs x {steps} steps per training{' (small mode)' if args.small else ''}.",
        "",
        f"Data: {event.attribution}" + (f" {CHATTOGRAM_CREDIT}" if chatto else ""),
        "",
    ]
    (out / "real_event.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
