"""Job specs: valid ones load; every bad field is named, explained and given an example."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from datetime import date
from pathlib import Path

import pytest
import yaml

from landslide_dask.errors import InputDataError
from landslide_dask.jobs.spec import JobSpec, JobSpecError, load_jobspec, parse_jobspec

from ..helpers import CLUSTER

JOBS = CLUSTER / "jobs"

VALID = {
    "name": "test-job",
    "area": {"bbox": [84.0, 27.3, 86.8, 28.6]},
    "event": {"date": "2015-04-25", "pre_days": 30, "post_days": 60},
    "stac": {
        "url": "https://earth-search.aws.element84.com/v1",
        "collection": "sentinel-2-l2a",
        "bands": ["blue", "green", "red", "nir"],
        "scl_asset": "scl",
        "max_cloud": 80,
        "sign": None,
        "dem_collection": "cop-dem-glo-30",
        "dem_asset": "data",
    },
    "model": "model.pt",
    "cell_size_km": 20,
    "output": "out",
    "threshold": None,
    "min_area_m2": 400,
    "cluster": None,
    "retries": 2,
}


def _write(tmp_path: Path, data, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def _with(**changes) -> dict:
    """VALID with dotted-path changes; value ... deletes the key."""
    d = json.loads(json.dumps(VALID))
    for dotted, value in changes.items():
        keys = dotted.split("__")
        node = d
        for k in keys[:-1]:
            node = node[k]
        if value is ...:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return d


def _problems(tmp_path: Path, data) -> JobSpecError:
    with pytest.raises(JobSpecError) as ei:
        load_jobspec(_write(tmp_path, data))
    return ei.value


def test_valid_spec_loads_with_resolved_paths(tmp_path):
    spec = load_jobspec(_write(tmp_path, VALID))
    assert isinstance(spec, JobSpec)
    assert spec.name == "test-job"
    assert spec.area.bbox == (84.0, 27.3, 86.8, 28.6) and spec.area.file is None
    assert spec.event.date == date(2015, 4, 25)
    assert spec.event.pre_window == (date(2015, 3, 26), date(2015, 4, 24))
    assert spec.event.post_window == (date(2015, 4, 26), date(2015, 6, 24))
    assert spec.stac.bands == ("blue", "green", "red", "nir") and spec.stac.max_cloud == 80.0
    # relative paths start at the spec's folder, not the working directory
    assert spec.model == str(tmp_path.resolve() / "model.pt")
    assert spec.output == str(tmp_path.resolve() / "out") and spec.output_is_local
    assert spec.cell_size_km == 20.0 and spec.retries == 2 and spec.min_area_m2 == 400.0


def test_defaults_and_name_from_file(tmp_path):
    minimal = {
        "area": {"bbox": [10, 45, 11, 46]},
        "event": {"date": "2020-01-01"},
        "stac": {"url": "http://127.0.0.1:7822"},
        "model": "m.pt",
        "output": "out",
    }
    spec = load_jobspec(_write(tmp_path, minimal, "alps-2020.yaml"))
    assert spec.name == "alps-2020"
    assert spec.cell_size_km == 20.0 and spec.retries == 2 and spec.min_area_m2 == 400.0
    assert spec.threshold is None and spec.cluster is None and spec.stac.sign is None
    assert spec.event.pre_days == 90 and spec.event.post_days == 60 and not spec.event.post_only


def test_unquoted_yaml_date_and_bad_date(tmp_path):
    text = yaml.safe_dump(_with(event__date="DATE")).replace("DATE", "2015-04-25")
    assert load_jobspec(_write(tmp_path, text)).event.date == date(2015, 4, 25)
    # PyYAML would crash on an unquoted impossible date; we name the field instead
    text = yaml.safe_dump(_with(event__date="DATE")).replace("DATE", "2015-13-45")
    err = _problems(tmp_path, text)
    assert err.fields() == ["event.date"] and "2015-13-45" in str(err) and "YYYY-MM-DD" in str(err)
    err = _problems(tmp_path, _with(event__date="25/04/2015"))
    assert err.fields() == ["event.date"]
    err = _problems(tmp_path, _with(event__date=20150425))
    assert err.fields() == ["event.date"]


@pytest.mark.parametrize(
    "dotted, value, field, words",
    [
        ("area", ..., "area", "missing"),
        ("event__date", ..., "event.date", "missing"),
        ("stac__url", ..., "stac.url", "missing"),
        ("model", ..., "model", "missing"),
        ("output", ..., "output", "missing"),
        ("cell_size_km", "20", "cell_size_km", "not a number"),
        ("cell_size_km", True, "cell_size_km", "not a number"),
        ("cell_size_km", 0.005, "cell_size_km", "out of range"),
        ("cell_size_km", 20.0005, "cell_size_km", "10 m"),
        ("retries", -1, "retries", "out of range"),
        ("retries", 1.5, "retries", "whole number"),
        ("event__pre_days", "ninety", "event.pre_days", "whole number"),
        ("event__post_days", 0, "event.post_days", "out of range"),
        ("event__post_only", "yes please", "event.post_only", "true or false"),
        ("threshold", 1.0, "threshold", "out of range"),
        ("threshold", 0, "threshold", "out of range"),
        ("min_area_m2", -5, "min_area_m2", "out of range"),
        ("stac__max_cloud", 150, "stac.max_cloud", "out of range"),
        ("stac__bands", "blue,green", "stac.bands", "YAML list"),
        ("stac__bands", [], "stac.bands", "non-empty list"),
        ("stac__bands", ["blue", 3], "stac.bands[1]", "not an asset key"),
        ("stac__bands", ["blue", "blue"], "stac.bands", "more than once"),
        ("stac__collection", "sentinel 2", "stac.collection", "spaces"),
        ("stac__url", "ftp://example.org/stac", "stac.url", "http(s)"),
        ("stac__url", "catalog.json", "stac.url", "serve-stac"),
        ("stac__sign", "azure", "stac.sign", "unknown signing method"),
        ("name", "my job!", "name", "file names"),
        ("area", [84, 27, 86, 28], "area", "mapping"),
        ("event", "2015-04-25", "event", "mapping"),
        ("cluster", 3, "cluster", "not text"),
        ("cluster", "https://example.org/c.yaml", "cluster", "local YAML"),
    ],
)
def test_bad_field_is_named(tmp_path, dotted, value, field, words):
    err = _problems(tmp_path, _with(**{dotted: value}))
    assert field in err.fields(), str(err)
    text = str(err)
    assert words in text, text
    assert "e.g." in text, text  # says what is expected, with an example


def test_unknown_keys_with_suggestions(tmp_path):
    d = _with()
    d["stac"]["sgin"] = "planetary-computer"
    d["cellsize_km"] = 10
    d["area"]["bboxx"] = [1, 2, 3, 4]
    err = _problems(tmp_path, d)
    msgs = dict(err.problems)
    assert "did you mean 'sign'" in msgs["stac.sgin"]
    assert "did you mean 'cell_size_km'" in msgs["cellsize_km"]
    assert "did you mean 'bbox'" in msgs["area.bboxx"]
    assert str(err).count("\n  - ") == 3  # all problems at once, one per line


def test_duplicate_key_and_bad_yaml(tmp_path):
    text = yaml.safe_dump(VALID, sort_keys=False) + "retries: 3\n"
    err = _problems(tmp_path, text)
    assert "'retries' twice" in str(err)
    err = _problems(tmp_path, "name: [unclosed\n")
    assert "not valid YAML" in str(err)
    err = _problems(tmp_path, "")
    assert "empty file" in str(err)
    with pytest.raises(JobSpecError, match="does not exist"):
        load_jobspec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "bbox, field, words",
    [
        ([86.8, 27.3, 84.0, 28.6], "area.bbox", "antimeridian"),
        ([84.0, 28.6, 86.8, 27.3], "area.bbox", "south (28.6) must be less than north"),
        ([84.0, 27.3, 186.8, 28.6], "area.bbox[2]", "outside -180..180"),
        ([500000, 3000000, 600000, 3100000], "area.bbox[0]", "metres"),
        ([84.0, 27.3, 86.8], "area.bbox", "list of 4 numbers"),
        ([10.0, 80.0, 20.0, 85.0], "area.bbox", "outside the UTM zones"),
        ([84.0, "27.3", 86.8, 28.6], "area.bbox[1]", "not a number"),
    ],
)
def test_bad_bbox(tmp_path, bbox, field, words):
    err = _problems(tmp_path, _with(area={"bbox": bbox}))
    assert field in err.fields(), str(err)
    assert words in str(err)


def test_area_exactly_one_of_file_and_bbox(tmp_path):
    err = _problems(tmp_path, _with(area={"bbox": [1, 2, 3, 4], "file": "a.geojson"}))
    assert err.fields() == ["area"] and "not both" in str(err)
    err = _problems(tmp_path, _with(area={}))
    assert err.fields() == ["area"] and "no area" in str(err)


def test_country_code(tmp_path):
    err = _problems(tmp_path, _with(area={"country": "NPL"}))
    assert err.fields() == ["area.country"]
    text = str(err)
    assert "Natural Earth" in text and "geoBoundaries" in text and "file:" in text
    err = _problems(tmp_path, _with(area={"country": "Nepal", "file": "world.gpkg"}))
    assert err.fields() == ["area.country"] and "alpha-3" in str(err)
    err = _problems(tmp_path, _with(area={"country": "NPL", "bbox": [1, 2, 3, 4]}))
    assert err.fields() == ["area.country"]


def test_country_selects_from_boundary_file(tmp_path):
    import geopandas as gpd
    import shapely

    world = gpd.GeoDataFrame(
        {"ADM0_A3": ["NPL", "BTN"], "NAME": ["Nepal", "Bhutan"]},
        geometry=[shapely.box(80, 26, 88, 30), shapely.box(89, 26.5, 92, 28.3)],
        crs="EPSG:4326",
    )
    world.to_file(tmp_path / "world.gpkg")
    spec = load_jobspec(_write(tmp_path, _with(area={"file": "world.gpkg", "country": "btn"})))
    assert spec.area.country == "BTN" and spec.area.file == (tmp_path / "world.gpkg").resolve()
    assert spec.area.geometry().equals(shapely.box(89, 26.5, 92, 28.3))
    spec = load_jobspec(_write(tmp_path, _with(area={"file": "world.gpkg", "country": "IND"})))
    with pytest.raises(JobSpecError, match="no feature") as ei:
        spec.area.geometry()
    assert ei.value.fields() == ["area.country"]
    spec = load_jobspec(_write(tmp_path, _with(area={"file": "world.gpkg"})))
    assert spec.area.geometry().area == pytest.approx(32 + 3 * 1.8)


def test_output_schemes(tmp_path):
    for ok in ("s3://bucket/prefix", "gs://bucket/x", "az://container/x", "memory://x", "file:///tmp/x"):
        spec = load_jobspec(_write(tmp_path, _with(output=ok)))
        assert spec.output_is_local == ok.startswith("file:")
    for bad, words in (
        ("https://example.org/out", "read-only"),
        ("s4://bucket/x", "did you mean 's3'"),
        ("s3:///prefix", "no bucket"),
    ):
        err = _problems(tmp_path, _with(output=bad))
        assert err.fields() == ["output"] and words in str(err), str(err)


def test_planetary_computer_needs_signing(tmp_path):
    pc = "https://planetarycomputer.microsoft.com/api/stac/v1"
    err = _problems(tmp_path, _with(stac__url=pc, stac__sign=None))
    assert err.fields() == ["stac.sign"] and "planetary-computer" in str(err)
    spec = load_jobspec(_write(tmp_path, _with(stac__url=pc, stac__sign="Planetary_Computer")))
    assert spec.stac.sign == "planetary-computer"


def test_check_paths(tmp_path):
    spec = load_jobspec(_write(tmp_path, _with(area={"file": "nope.geojson"}, cluster="nope.yaml")))
    with pytest.raises(JobSpecError) as ei:
        spec.check_paths()
    assert set(ei.value.fields()) == {"area.file", "model", "cluster"}
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "a.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "c.yaml").write_text("type: local\n")
    spec = load_jobspec(_write(tmp_path, _with(area={"file": "a.geojson"}, cluster="c.yaml", output="deep/new/out")))
    spec.check_paths()  # nothing created by the check
    assert not (tmp_path / "deep").exists()
    assert not list(tmp_path.glob(".landslide-dask-write-test-*"))


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"w")
    (tmp_path / "afile").write_text("x")
    spec = load_jobspec(_write(tmp_path, _with(output="afile/out")))
    with pytest.raises(JobSpecError) as ei:
        spec.check_paths()
    assert ei.value.fields() == ["output"] and "is a file" in str(ei.value)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes through mode bits; see the /sys and monkeypatched tests",
)
def test_unwritable_output_chmod(tmp_path):  # pragma: no cover - runs only as a normal user
    (tmp_path / "model.pt").write_bytes(b"w")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        spec = load_jobspec(_write(tmp_path, _with(output="ro/out")))
        with pytest.raises(JobSpecError) as ei:
            spec.check_paths()
        assert ei.value.fields() == ["output"] and "cannot write" in str(ei.value)
    finally:
        ro.chmod(0o700)


def test_unwritable_output_even_as_root(tmp_path):
    """/sys refuses new files even to root on Linux; skip where it does not."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:  # pragma: no cover
        os.close(fd)
        os.unlink(name)
        pytest.skip("/sys is writable here")
    (tmp_path / "model.pt").write_bytes(b"w")
    spec = load_jobspec(_write(tmp_path, _with(output="/sys/landslide-dask-out")))
    with pytest.raises(JobSpecError) as ei:
        spec.check_paths()
    assert ei.value.fields() == ["output"]
    assert "cannot write to /sys/landslide-dask-out" in str(ei.value) and "permissions" in str(ei.value)


def test_unwritable_output_permission_error(tmp_path, monkeypatch):
    import landslide_dask.jobs.spec as js

    (tmp_path / "model.pt").write_bytes(b"w")
    spec = load_jobspec(_write(tmp_path, _with(output="out")))

    def refuse(folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(js, "_probe_write", refuse)
    with pytest.raises(JobSpecError) as ei:
        spec.check_paths()
    assert ei.value.fields() == ["output"] and "Permission denied" in str(ei.value)


def test_fingerprint_tracks_results_not_logistics(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights-1")
    base = load_jobspec(_write(tmp_path, VALID))
    fp = base.fingerprint()
    assert len(fp) == 64 and fp == load_jobspec(_write(tmp_path, VALID)).fingerprint()
    # logistics do not change results
    for change in ({"name": "other"}, {"output": "elsewhere"}, {"retries": 5}, {"cluster": "c.yaml"}):
        assert load_jobspec(_write(tmp_path, _with(**change))).fingerprint() == fp, change
    # anything that changes the map does
    for change in (
        {"cell_size_km": 10},
        {"threshold": 0.4},
        {"min_area_m2": 100},
        {"event__post_days": 30},
        {"stac__max_cloud": 50},
        {"stac__bands": ["red", "nir"]},
        {"area": {"bbox": [84.0, 27.3, 86.8, 28.7]}},
    ):
        assert load_jobspec(_write(tmp_path, _with(**change))).fingerprint() != fp, change
    # the model's content counts, not its path
    (tmp_path / "copy.pt").write_bytes(b"weights-1")
    assert load_jobspec(_write(tmp_path, _with(model="copy.pt"))).fingerprint() == fp
    (tmp_path / "model.pt").write_bytes(b"weights-2")
    assert load_jobspec(_write(tmp_path, VALID)).fingerprint() != fp


def test_cube_kwargs_fit_cubespec(tmp_path):
    from landslide_dask.cube.build import CubeSpec

    spec = load_jobspec(_write(tmp_path, VALID))
    kw = spec.cube_kwargs()
    assert set(kw) <= {f.name for f in fields(CubeSpec)}
    cs = CubeSpec(aoi=tmp_path / "aoi.geojson", out=tmp_path / "c.zarr", epsg=32645, **kw)
    assert cs.pre_window == spec.event.pre_window and cs.post_window == spec.event.post_window
    json.dumps(spec.to_dict())  # provenance is JSON-serialisable


def test_errors_are_input_errors(tmp_path):
    err = _problems(tmp_path, _with(retries="two"))
    assert isinstance(err, InputDataError)


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_load(path):
    spec = load_jobspec(path)
    assert spec.name and spec.stac.url.startswith("http")
    assert spec.source == path.resolve()


def test_examples_exist():
    names = {p.name for p in JOBS.glob("*.yaml")}
    assert {"demo-country.yaml", "nepal-2015.yaml", "planetary-computer.yaml"} <= names
    nepal = load_jobspec(JOBS / "nepal-2015.yaml")
    assert nepal.event.date == date(2015, 4, 25) and nepal.event.post_only
    pc = load_jobspec(JOBS / "planetary-computer.yaml")
    assert pc.stac.sign == "planetary-computer"


def test_a_cluster_named_by_a_shipped_example_is_that_example(tmp_path):
    from landslide_dask.clusters.shipped import EXAMPLES

    for job, name in (("demo-country", "local"), ("nepal-2015", "slurm"), ("planetary-computer", "kubernetes")):
        assert load_jobspec(JOBS / f"{job}.yaml").cluster == EXAMPLES / f"{name}.yaml"
    mine = load_jobspec(_write(tmp_path, _with(cluster="slurm.yaml")))  # a file name is a file, beside the spec
    assert mine.cluster == tmp_path / "slurm.yaml"


def test_parse_jobspec_in_memory():
    spec = parse_jobspec(VALID, base_dir="/data/jobs")
    assert spec.model == "/data/jobs/model.pt" and spec.source is None
    with pytest.raises(JobSpecError, match="YAML mapping"):
        parse_jobspec([1, 2])


# --------------------------------------------------------------------------- URL outputs and models


def test_storage_options_and_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("LS_TEST_SECRET", "s3cr3t-value")
    opts = {
        "key": "AKIAEXAMPLE",
        "secret": "${LS_TEST_SECRET}",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "us-east-1"},
    }
    spec = load_jobspec(_write(tmp_path, _with(output="s3://bucket/job", storage_options=opts, scratch="work")))
    assert spec.storage_options["secret"] == "s3cr3t-value"  # ${VAR} from the environment
    assert spec.fsspec_options(spec.output) == {**opts, "secret": "s3cr3t-value"}
    assert spec.scratch == tmp_path.resolve() / "work" == spec.scratch_dir()
    assert spec.scratch_dir(tmp_path / "cli") == (tmp_path / "cli").resolve()  # --scratch wins
    d = spec.to_dict()  # provenance: no secrets
    assert d["storage_options"]["secret"] == "***" and d["storage_options"]["key"] == "***"
    assert d["storage_options"]["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9000"
    assert "s3cr3t" not in json.dumps(d) and "AKIAEXAMPLE" not in json.dumps(d)
    # logistics: the fingerprint does not change
    (tmp_path / "model.pt").write_bytes(b"weights")
    assert spec.fingerprint() == load_jobspec(_write(tmp_path, VALID)).fingerprint()
    # keyed by protocol when output and model use different stores
    spec = load_jobspec(
        _write(
            tmp_path,
            _with(
                output="s3://bucket/job",
                model="gs://models/m.pt",
                storage_options={"s3": {"anon": False}, "gs": {"token": "anon"}},
            ),
        )
    )
    assert spec.fsspec_options(spec.output) == {"anon": False}
    assert spec.fsspec_options(spec.model) == {"token": "anon"}


def test_default_scratch_is_per_job_and_overridable_by_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LANDSLIDE_DASK_SCRATCH", raising=False)
    a = load_jobspec(_write(tmp_path, _with(output="s3://bucket/a"))).scratch_dir()
    b = load_jobspec(_write(tmp_path, _with(output="s3://bucket/b"))).scratch_dir()
    assert a != b and a.name.startswith("test-job-") and a.parent.name == "landslide-dask"
    monkeypatch.setenv("LANDSLIDE_DASK_SCRATCH", str(tmp_path / "env"))
    c = load_jobspec(_write(tmp_path, _with(output="s3://bucket/a"))).scratch_dir()
    assert c.parent == (tmp_path / "env").resolve() and c.name == a.name


def test_bad_storage_options_and_scratch_are_named(tmp_path):
    err = _problems(tmp_path, _with(output="s3://bucket/x", storage_options="key=abc"))
    assert err.fields() == ["storage_options"] and "mapping" in str(err)
    err = _problems(tmp_path, _with(storage_options={"anon": True}))  # local output and model
    assert err.fields() == ["storage_options"] and "neither" in str(err)
    err = _problems(tmp_path, _with(output="s3://bucket/x", scratch="s3://bucket/tmp"))
    assert err.fields() == ["scratch"] and "local" in str(err)
    err = _problems(tmp_path, _with(output="s3://bucket/x", storage_options={"anon": True}, scratc="/tmp"))
    assert err.fields() == ["scratc"] and "did you mean 'scratch'" in str(err)


def test_url_locations_are_checked_for_real(tmp_path):
    """memory:// is a real fsspec filesystem (in this process): the output is probed by writing,
    the model URL by reading; the S3 cases run against a real server in test_country.py."""
    import fsspec

    (tmp_path / "model.pt").write_bytes(b"w")
    mem = fsspec.filesystem("memory")
    spec = load_jobspec(_write(tmp_path, _with(output="memory://jobs/out")))
    spec.check_paths()
    assert not mem.exists("/jobs/out") or not mem.ls("/jobs/out")  # the probe object was removed
    spec = load_jobspec(_write(tmp_path, _with(model="memory://models/missing.pt")))
    with pytest.raises(JobSpecError) as ei:
        spec.check_paths()
    assert ei.value.fields() == ["model"] and "does not exist" in str(ei.value)
    mem.pipe_file("/models/m.pt", b"weights")
    spec = load_jobspec(_write(tmp_path, _with(model="memory://models/m.pt")))
    spec.check_paths()
    (tmp_path / "copy.pt").write_bytes(b"weights")
    assert spec.fingerprint() == load_jobspec(_write(tmp_path, _with(model="copy.pt"))).fingerprint()


@pytest.mark.parametrize("url, package", [("gs://bucket/job", "gcsfs"), ("az://container/job", "adlfs")])
def test_a_missing_backend_names_the_package_to_install(tmp_path, url, package):
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    (tmp_path / "model.pt").write_bytes(b"w")
    spec = load_jobspec(_write(tmp_path, _with(output=url)))
    with pytest.raises(JobSpecError) as ei:
        spec.check_paths()
    assert ei.value.fields() == ["output"] and f"pip install {package}" in str(ei.value)


def test_a_checkpoint_url_is_fetched_once_and_refetched_when_it_changes(tmp_path):
    import fsspec

    from landslide_dask.jobs.storage import fetch_cached

    mem = fsspec.filesystem("memory")
    mem.pipe_file("/ckpt/model.pt", b"weights-1")
    a = fetch_cached("memory://ckpt/model.pt", tmp_path / "models")
    assert a.read_bytes() == b"weights-1" and a.name == "model.pt"
    t = a.stat().st_mtime_ns
    assert fetch_cached("memory://ckpt/model.pt", tmp_path / "models") == a and a.stat().st_mtime_ns == t
    mem.pipe_file("/ckpt/model.pt", b"weights-2")  # retrained: same size, new object
    b = fetch_cached("memory://ckpt/model.pt", tmp_path / "models")
    assert b != a and b.read_bytes() == b"weights-2"


# --------------------------------------------------------------------------- the predict section


def test_predict_section_defaults_and_values(tmp_path):
    from landslide_dask.predict.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW

    spec = load_jobspec(_write(tmp_path, VALID))
    assert (spec.predict.window, spec.predict.overlap) == (DEFAULT_WINDOW, DEFAULT_OVERLAP)
    assert spec.predict.batch_size is None and spec.predict.device is None
    spec = load_jobspec(
        _write(tmp_path, _with(predict={"window": 256, "overlap": 32, "batch_size": 2, "device": "CUDA:1"}))
    )
    assert spec.predict.kwargs() == {"window": 256, "overlap": 32, "batch_size": 2, "device": "cuda:1"}
    assert spec.to_dict()["predict"] == spec.predict.kwargs()
    assert load_jobspec(_write(tmp_path, _with(predict=None))).predict == load_jobspec(_write(tmp_path, VALID)).predict


@pytest.mark.parametrize(
    "predict, field, words",
    [
        ({"window": 100}, "predict.window", "multiple of the model's input multiple 32"),
        ({"window": 0}, "predict.window", "positive multiple"),
        ({"window": "768"}, "predict.window", "not a whole number"),
        ({"window": 256, "overlap": 256}, "predict.overlap", "[0, window=256)"),
        ({"overlap": 40}, "predict.overlap", "multiple of 32"),
        ({"batch_size": 0}, "predict.batch_size", "out of range"),
        ({"device": "gpu"}, "predict.device", "unknown device"),
        ({"windw": 512}, "predict.windw", "did you mean 'window'"),
        ([768, 64], "predict", "not a mapping"),
    ],
)
def test_bad_predict_section_is_named(tmp_path, predict, field, words):
    err = _problems(tmp_path, _with(predict=predict))
    assert err.fields() == [field], str(err)
    assert words in str(err), str(err)
    if "did you mean" not in words:
        assert "e.g." in str(err), str(err)


def test_bad_predict_window_in_yaml_is_reported_with_its_path(tmp_path):
    text = yaml.safe_dump(VALID, sort_keys=False) + "predict:\n  window: 700\n  overlap: 64\n"
    err = _problems(tmp_path, text)
    assert err.problems == [("predict.window", err.problems[0][1])]
    assert str(err).startswith(f"job spec {tmp_path / 'job.yaml'} has 1 problem:\n  - predict.window: window 700 ")
    assert "e.g. `window: 768`" in str(err)


def test_fingerprint_covers_the_predict_section(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    fp = load_jobspec(_write(tmp_path, VALID)).fingerprint()
    assert load_jobspec(_write(tmp_path, _with(predict={"window": 768, "overlap": 64}))).fingerprint() == fp
    for change in ({"window": 512}, {"overlap": 32}, {"batch_size": 2}, {"device": "cpu"}):
        assert load_jobspec(_write(tmp_path, _with(predict=change))).fingerprint() != fp, change


def test_a_job_resumed_with_another_predict_window_is_refused(tmp_path, monkeypatch):
    """The manifest belongs to the fingerprint, which covers ``predict``: resuming the job with another
    window would mix window settings across its cells."""
    import landslide_dask.jobs.country as country
    from landslide_dask.errors import ManifestError

    seen = []

    def cell_without_imagery(spec, cell, out, client, *, chunk=1024):
        seen.append(spec.predict.window)  # the cells get the spec's inference settings
        return {"status": "empty", "reason": "no imagery (test)", "timings": {}}

    monkeypatch.setattr(country, "run_cell", cell_without_imagery)
    (tmp_path / "model.pt").write_bytes(b"weights")
    job = _with(area={"bbox": [84.0, 27.3, 84.3, 27.5]}, predict={"window": 256, "overlap": 32})
    spec = load_jobspec(_write(tmp_path, job))
    res = country.run_job(spec, None, progress=False, echo=None)
    assert res.summary.total > 0 and seen == [256] * res.summary.total
    assert country.run_job(spec, None, progress=False, echo=None).computed == []  # same settings: resumes
    manifest = (spec.output_path / "manifest.json").read_bytes()

    other = load_jobspec(_write(tmp_path, _with(area=job["area"], predict={"window": 512, "overlap": 32})))
    assert other.fingerprint() != spec.fingerprint()
    with pytest.raises(ManifestError, match="belongs to another configuration of this job.*--force"):
        country.run_job(other, None, progress=False, echo=None)
    assert len(seen) == res.summary.total  # no cell ran with window 512
    assert (spec.output_path / "manifest.json").read_bytes() == manifest  # and the manifest is untouched
