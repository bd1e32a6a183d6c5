"""Job specs: one YAML file that says what to map, from which imagery, with which model, to where.

A job spec is validated as a whole when it is loaded: every problem is reported at once, each
with the dotted path of the bad field (``area.bbox``, ``stac.bands[2]``), what is expected and
an example. Unknown keys are errors with a "did you mean" suggestion, so a typo never passes
silently. Relative paths (``area.file``, ``model``, ``cluster``, a local ``output``) are resolved
against the folder of the spec file, so a job resolves to the same files (and the same manifest)
from any working directory.

Fields (``cluster/jobs/*.yaml`` are worked examples)::

    name: nepal-2015              # optional; letters, digits, . _ -  (default: the file's stem)
    area:                         # exactly one of file / bbox (country: see below)
      file: nepal.gpkg            #   GeoJSON / GeoPackage / Shapefile with a CRS
      bbox: [84.0, 27.3, 86.8, 28.6]   # [west, south, east, north] in degrees (EPSG:4326)
      country: NPL                #   ISO 3166-1 alpha-3 code; only together with `file`:
                                  #   picks that country's feature(s) from a world boundary file
    event:
      date: 2015-04-25            # YYYY-MM-DD, required
      pre_days: 90                # days before the event searched for the pre-event composite
      post_days: 60               # days after the event searched for the post-event composite
      post_only: false            # true: no pre-event composite (e.g. no Sentinel-2 before mid-2015)
    stac:
      url: https://earth-search.aws.element84.com/v1   # STAC API (http/https), required
      collection: sentinel-2-l2a
      bands: [blue, green, red, nir]   # asset keys, in the order the model expects
      scl_asset: scl              # scene classification asset for the cloud mask; null: none
      max_cloud: 80               # percent (0-100) per item; null: no filter
      sign: null                  # null | planetary-computer
      dem_collection: cop-dem-glo-30   # null: no DEM (slope/hillshade)
      dem_asset: data
    model: ../../models/landslide.pt   # checkpoint path (or an fsspec URL), required
    cell_size_km: 20              # processing cell size; a multiple of 10 m, 1-200 km
    output: s3://bucket/nepal-2015     # local folder or fsspec URL (s3, gs, gcs, az, abfs, ...)
    storage_options:              # optional: fsspec options of a URL output/model (see below)
      client_kwargs: {endpoint_url: https://minio.example.org:9000, region_name: eu-west-1}
    scratch: /scratch/$USER/ls    # optional: local working folder of a URL output (see below)
    threshold: null               # probability threshold for polygons; null: the checkpoint's
    min_area_m2: 400              # smallest landslide polygon kept
    cluster: ../local.yaml        # cluster definition; null: decided on the command line
    retries: 2                    # extra attempts of a failing cell before it is recorded failed

Outputs (and checkpoints) on object storage: ``output`` (and ``model``) may be an fsspec URL,
e.g. ``s3://bucket/prefix``; its backend must be installed (``pip install s3fs``, ``gcsfs``,
``adlfs``; a missing one is reported with the package to install). ``storage_options`` is passed to
the fsspec filesystem as keyword arguments: for s3fs e.g. ``key``, ``secret`` (better: leave
credentials to the environment, ``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/an instance role), ``anon``,
``client_kwargs: {endpoint_url: ..., region_name: ...}`` for MinIO, Ceph or another S3-compatible
store, ``config_kwargs: {retries: {max_attempts: 3}, connect_timeout: 10}``. ``${VAR}`` in its
text values is replaced by the environment variable when the spec is loaded, and values of keys
that look like secrets (key, secret, token, password, ...) are never written to the manifest.
When the output and the model use different protocols, key the mapping by protocol:
``storage_options: {s3: {...}, gs: {...}}``. None of this changes the job's fingerprint.

A job with a URL output computes each cell in a local ``scratch`` folder and uploads the
finished cell (:mod:`landslide_dask.jobs.country`); the scratch folder must be readable and writable
by the driver and every Dask worker (on a multi-node cluster: a shared file system; on one
machine any local folder). Default: ``$LANDSLIDE_DASK_SCRATCH/<name>-<hash of output>``, else the
same under ``<temp dir>/landslide-dask``; ``landslide-dask submit --scratch DIR`` overrides both.
A checkpoint given as a URL is downloaded into ``<scratch>/models/`` once (reused while its
ETag/size is unchanged).

Country boundaries: no well-kept pip package ships them for offline use (``geodatasets`` and
cartopy download Natural Earth on first use, ``pycountry`` has no geometries, the Natural Earth
sample left geopandas in 1.0), and the pipeline never downloads at run time. So ``country``
alone is refused with instructions; with ``file`` (a world or regional admin-0 file, e.g. Natural
Earth "Admin 0 - Countries" or geoBoundaries ADM0) it selects the feature(s) whose ISO column
(``ISO_A3``, ``ADM0_A3``, ``shapeGroup``, ``GID_0``, ...) holds the code.

Two further steps are separate from loading, so that the examples load anywhere:
:meth:`JobSpec.check_paths` (``area.file``, ``model`` and ``cluster`` exist, ``output`` can be
written: a local folder by a probe file, a URL by a probe object written, read back and deleted, so
missing credentials, an unknown bucket, an unreachable endpoint or an uninstalled backend are found
before a job starts; a model URL is checked for reading) and :meth:`JobSpec.fingerprint` (hashes the area
geometry and the model file).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from ..cube.build import event_windows
from ..errors import JobSpecError

__all__ = [
    "FINGERPRINT_VERSION",
    "Area",
    "Event",
    "JobSpec",
    "JobSpecError",
    "StacSpec",
    "load_jobspec",
    "parse_jobspec",
]

FINGERPRINT_VERSION = 1
RESOLUTION_M = 10.0

# fsspec protocols an output may use (writable object stores and file systems). http(s) is
# read-only; zip/tar/reference/github and the caching wrappers are not places to write a job.
WRITABLE_SCHEMES = {"file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory",
                    "sftp", "ssh", "hdfs", "webhdfs", "oss", "oci", "smb"}
SIGNERS = ("planetary-computer",)
COUNTRY_COLUMNS = ("ISO_A3", "ADM0_A3", "ISO_A3_EH", "SOV_A3", "GU_A3", "ISO3", "ISO",
                   "shapeGroup", "shapeISO", "GID_0", "iso_a3", "adm0_a3", "iso3")


# --------------------------------------------------------------------------------------------
# The spec, as frozen dataclasses


@dataclass(frozen=True)
class Area:
    """The area to map: a vector file (optionally one country of it) or a bbox, in degrees."""

    file: Path | None = None
    bbox: tuple[float, float, float, float] | None = None
    country: str | None = None

    def describe(self) -> str:
        if self.bbox is not None:
            return "bbox [" + ", ".join(f"{v:g}" for v in self.bbox) + "]"
        return f"{self.file}" + (f" (country {self.country})" if self.country else "")

    def geometry(self):
        """The area as one shapely (Multi)Polygon in EPSG:4326."""
        import shapely

        if self.bbox is not None:
            return shapely.box(*self.bbox)
        if self.file is None:  # only reachable when built by hand
            raise JobSpecError("(in memory)", [("area", _COUNTRY_ONLY_MSG.format(code=self.country))])
        from ..cube.inventory import read_polygons

        gdf, _ = read_polygons(self.file, what="area")
        if self.country:
            gdf = _select_country(gdf, self.country, self.file)
        gdf = gdf.to_crs("EPSG:4326")
        geom = shapely.union_all(gdf.geometry.values)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        return geom


@dataclass(frozen=True)
class Event:
    date: date
    pre_days: int = 90
    post_days: int = 60
    post_only: bool = False

    @property
    def pre_window(self) -> tuple[date, date]:
        return event_windows(self.date, self.pre_days, self.post_days)[0]

    @property
    def post_window(self) -> tuple[date, date]:
        return event_windows(self.date, self.pre_days, self.post_days)[1]


@dataclass(frozen=True)
class StacSpec:
    url: str
    collection: str = "sentinel-2-l2a"
    bands: tuple[str, ...] = ("blue", "green", "red", "nir")
    scl_asset: str | None = "scl"
    max_cloud: float | None = None
    sign: str | None = None
    dem_collection: str | None = "cop-dem-glo-30"
    dem_asset: str = "data"


@dataclass(frozen=True)
class JobSpec:
    name: str
    area: Area
    event: Event
    stac: StacSpec
    model: str                      # absolute local path, or an fsspec URL
    output: str                     # absolute local path, or an fsspec URL
    cell_size_km: float = 20.0
    threshold: float | None = None
    min_area_m2: float = 400.0
    cluster: Path | None = None
    retries: int = 2
    source: Path | None = field(default=None, compare=False)
    # fsspec options of URL locations (credentials, endpoint); do not change the results
    storage_options: dict = field(default_factory=dict, compare=False)
    scratch: Path | None = field(default=None, compare=False)   # local working folder of a URL output

    # -- paths --------------------------------------------------------------------------------
    @property
    def output_is_local(self) -> bool:
        return _scheme(self.output) in ("", "file")

    @property
    def output_path(self) -> Path:
        """The local output folder (only for a local output)."""
        if not self.output_is_local:
            raise ValueError(f"output {self.output} is not a local path")
        return Path(urlparse(self.output).path if self.output.startswith("file:") else self.output)

    @property
    def model_is_local(self) -> bool:
        return _scheme(self.model) in ("", "file")

    def fsspec_options(self, url: str) -> dict[str, Any]:
        """The fsspec keyword arguments for ``url`` (its protocol's entry of ``storage_options``)."""
        from .storage import options_for

        return options_for(self.storage_options, _scheme(url))

    def scratch_dir(self, override: str | Path | None = None) -> Path:
        """The local working folder of this job: ``override``, else ``scratch``, else
        ``$LANDSLIDE_DASK_SCRATCH/<name>-<hash>``, else ``<temp dir>/landslide-dask/<name>-<hash>``
        (the hash is of the output location, so two jobs never share one)."""
        if override is not None:
            return Path(override).expanduser().resolve()
        if self.scratch is not None:
            return self.scratch
        base = os.environ.get("LANDSLIDE_DASK_SCRATCH")
        root = Path(base).expanduser() if base else Path(tempfile.gettempdir()) / "landslide-dask"
        return (root / f"{self.name}-{hashlib.sha256(self.output.encode()).hexdigest()[:10]}").resolve()

    def check_paths(self) -> None:
        """Files the job reads exist and the output can be written; raises JobSpecError."""
        problems: list[tuple[str, str]] = []
        if self.area.file is not None:
            if not self.area.file.exists():
                problems.append(("area.file", f"{self.area.file} does not exist. Give the path of a "
                                 "GeoJSON/GeoPackage/Shapefile (relative paths start at the spec's folder)"))
            elif self.area.file.is_dir():
                problems.append(("area.file", f"{self.area.file} is a folder; give the vector file itself"))
        if self.model_is_local:
            p = Path(self.model)
            if not p.is_file():
                problems.append(("model", f"checkpoint {p} does not exist. Train one "
                                 "(landslide-dask train) or fix the path (relative paths start at the spec's folder)"))
        else:
            msg = _model_url_problem(self.model, self.fsspec_options(self.model))
            if msg:
                problems.append(("model", msg))
        if self.cluster is not None and not self.cluster.is_file():
            problems.append(("cluster", f"cluster definition {self.cluster} does not exist "
                             "(see cluster/*.yaml; relative paths start at the spec's folder)"))
        msg = _output_problem(self.output, self.fsspec_options(self.output))
        if msg:
            problems.append(("output", msg))
        if problems:
            raise JobSpecError(str(self.source or self.name), problems)

    # -- provenance -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["area"] = {k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v))
                     for k, v in d["area"].items() if v is not None}
        d["event"]["date"] = self.event.date.isoformat()
        d["stac"]["bands"] = list(self.stac.bands)
        d["cluster"] = str(self.cluster) if self.cluster else None
        d["source"] = str(self.source) if self.source else None
        d["storage_options"] = _redact(self.storage_options)
        d["scratch"] = str(self.scratch) if self.scratch else None
        return d

    def fingerprint(self, area_geometry=None, model_file: str | Path | None = None) -> str:
        """A stable hash of everything that changes the results (not name, output, cluster, retries).

        Covers the area *geometry* (so re-saving the same boundary does not matter), the event
        windows, the STAC settings, the model checkpoint's *content* (so moving it does not
        matter, retraining does), the cell size, threshold and minimum area. Pass the already
        loaded ``area_geometry`` (EPSG:4326) to avoid reading the area file again, and
        ``model_file``, a local copy of a checkpoint given as a URL (same bytes, same hash), to avoid
        reading it over the network again.
        """
        import shapely

        geom = self.area.geometry() if area_geometry is None else area_geometry
        payload = {
            "v": FINGERPRINT_VERSION,
            "area_wkb_sha256": hashlib.sha256(shapely.to_wkb(shapely.normalize(geom))).hexdigest(),
            "event": {"date": self.event.date.isoformat(), "pre_days": self.event.pre_days,
                      "post_days": self.event.post_days, "post_only": self.event.post_only},
            "stac": {**asdict(self.stac), "bands": list(self.stac.bands)},
            "model_sha256": file_sha256(model_file if model_file is not None else self.model,
                                        self.fsspec_options(self.model)),
            "cell_size_km": float(self.cell_size_km),
            "resolution_m": RESOLUTION_M,
            "threshold": self.threshold,
            "min_area_m2": float(self.min_area_m2),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def cube_kwargs(self) -> dict[str, Any]:
        """The CubeSpec fields this job fixes (add ``aoi``, ``out`` and ``epsg`` per cell)."""
        return {
            "stac_url": self.stac.url, "event_date": self.event.date,
            "pre_days": self.event.pre_days, "post_days": self.event.post_days,
            "post_only": self.event.post_only, "bands": tuple(self.stac.bands),
            "collection": self.stac.collection, "scl_asset": self.stac.scl_asset,
            "dem_collection": self.stac.dem_collection, "dem_asset": self.stac.dem_asset,
            "max_cloud": self.stac.max_cloud, "sign": self.stac.sign, "resolution": RESOLUTION_M,
        }


def file_sha256(path_or_url: str | Path, storage_options: dict | None = None) -> str:
    """sha256 of a file's bytes (local path or fsspec URL); cached by (path, size, mtime)."""
    s = str(path_or_url)
    if _scheme(s) in ("", "file"):
        p = Path(urlparse(s).path if s.startswith("file:") else s)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise JobSpecError(s, [("model", f"checkpoint {p} does not exist: the job's fingerprint "
                                    "hashes it. Fix the path or train a model first")]) from None
        return _sha256_local(str(p), st.st_size, st.st_mtime_ns)
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(s, "rb", **(storage_options or {})) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def _sha256_local(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Loading and validation

_TOP = ("name", "area", "event", "stac", "model", "cell_size_km", "output", "threshold",
        "min_area_m2", "cluster", "retries", "storage_options", "scratch")
_AREA = ("file", "bbox", "country")
_EVENT = ("date", "pre_days", "post_days", "post_only")
_STAC = ("url", "collection", "bands", "scl_asset", "max_cloud", "sign", "dem_collection", "dem_asset")

# What each field expects, and an example (shown in every message about it).
_EXPECT: dict[str, tuple[str, str]] = {
    "name": ("letters, digits, '.', '_' or '-'", "nepal-2015"),
    "area": ("a mapping with `file` or `bbox`", "{bbox: [84.0, 27.3, 86.8, 28.6]}"),
    "area.file": ("the path of a GeoJSON/GeoPackage/Shapefile", "nepal.gpkg"),
    "area.bbox": ("[west, south, east, north] in degrees, west < east, south < north",
                  "[84.0, 27.3, 86.8, 28.6]"),
    "area.country": ("an ISO 3166-1 alpha-3 code, together with `file`", "NPL"),
    "event": ("a mapping with at least `date`", "{date: 2015-04-25}"),
    "event.date": ("a date YYYY-MM-DD", "2015-04-25"),
    "event.pre_days": ("a whole number of days, 1-3650", "90"),
    "event.post_days": ("a whole number of days, 1-3650", "60"),
    "event.post_only": ("true or false", "false"),
    "stac": ("a mapping with at least `url`", "{url: https://earth-search.aws.element84.com/v1}"),
    "stac.url": ("the http(s) URL of a STAC API", "https://earth-search.aws.element84.com/v1"),
    "stac.collection": ("a STAC collection id", "sentinel-2-l2a"),
    "stac.bands": ("a list of asset keys, in the order the model expects", "[blue, green, red, nir]"),
    "stac.scl_asset": ("the scene classification asset key, or null", "scl"),
    "stac.max_cloud": ("a percentage 0-100, or null", "80"),
    "stac.sign": ("null or planetary-computer", "planetary-computer"),
    "stac.dem_collection": ("a STAC collection id, or null", "cop-dem-glo-30"),
    "stac.dem_asset": ("an asset key", "data"),
    "model": ("the path of a model checkpoint (or an fsspec URL)", "../../models/landslide.pt"),
    "cell_size_km": ("a number of km, 1-200, a multiple of 0.01 (10 m)", "20"),
    "output": ("a local folder or a URL (s3://, gs://, az://, ...)", "s3://my-bucket/nepal-2015"),
    "threshold": ("a probability strictly between 0 and 1, or null (the checkpoint's)", "0.5"),
    "min_area_m2": ("a non-negative number of m²", "400"),
    "cluster": ("the path of a cluster definition, or null", "../local.yaml"),
    "retries": ("a whole number 0-20", "2"),
    "storage_options": ("a mapping of fsspec options for the URL output/model",
                        "{client_kwargs: {endpoint_url: 'http://127.0.0.1:9000'}}"),
    "scratch": ("a local folder (the working folder of a URL output)", "/scratch/me/landslides"),
}

_MISSING = object()


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as text (validated by us) and refuses duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping_no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"found the key {key!r} twice",
                key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)


def load_jobspec(path: str | Path) -> JobSpec:
    """Read and validate a job spec; raises JobSpecError listing every problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise JobSpecError(str(path), [("", f"{path} does not exist (or is not a file). "
                                         "See cluster/jobs/*.yaml for examples")])
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise JobSpecError(str(path), [("", f"not valid YAML: {exc}")]) from None
    except UnicodeDecodeError:
        raise JobSpecError(str(path), [("", "not a text (UTF-8) file: is it really a YAML job spec?")]) from None
    return parse_jobspec(data, base_dir=path.resolve().parent, source=path)


def parse_jobspec(data: Any, base_dir: str | Path = ".", source: str | Path | None = None) -> JobSpec:
    """Validate a spec already parsed from YAML/JSON; relative paths start at ``base_dir``."""
    base = Path(base_dir).resolve()
    src = str(source) if source is not None else "(in memory)"
    v = _Validator()
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise JobSpecError(src, [("", f"a job spec is a YAML mapping (key: value lines), got {got}. "
                                  "See cluster/jobs/*.yaml for examples")])
    v.keys(data, _TOP, "")

    name = v.get(data, "name", "name", str, default=None)
    if name is None and data.get("name", None) is None:
        name = Path(source).stem if source is not None else "job"
    if isinstance(name, str) and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        v.bad("name", f"{name!r} cannot be used in file names")

    area = _parse_area(v, data, base)
    event = _parse_event(v, data)
    stac = _parse_stac(v, data)

    model = v.get(data, "model", "model", str)
    if isinstance(model, str):
        model = _resolve_location(v, "model", model, base, what="model")
    cell = v.number(data, "cell_size_km", "cell_size_km", default=20.0, lo=1.0, hi=200.0)
    if isinstance(cell, float):
        metres = cell * 1000.0
        if abs(metres / RESOLUTION_M - round(metres / RESOLUTION_M)) > 1e-6:
            v.bad("cell_size_km", f"{cell:g} km is not a whole number of 10 m pixels")
    output = v.get(data, "output", "output", str)
    if isinstance(output, str):
        output = _resolve_location(v, "output", output, base, what="output")
    threshold = v.number(data, "threshold", "threshold", default=None, nullable=True, lo=0.0, hi=1.0,
                         open_interval=True)
    min_area = v.number(data, "min_area_m2", "min_area_m2", default=400.0, lo=0.0)
    cluster = v.get(data, "cluster", "cluster", str, default=None, nullable=True)
    if isinstance(cluster, str):
        if _scheme(cluster) not in ("", "file"):
            v.bad("cluster", f"{cluster!r} is a URL; a cluster definition is a local YAML file")
            cluster = None
        else:
            cluster = _resolve(base, cluster)
    retries = v.integer(data, "retries", "retries", default=2, lo=0, hi=20)
    storage_options = _parse_storage_options(v, data, output, model)
    scratch = v.get(data, "scratch", "scratch", str, default=None, nullable=True)
    if isinstance(scratch, str):
        if not scratch.strip():
            v.bad("scratch", "empty path")
            scratch = None
        elif _scheme(scratch) not in ("", "file"):
            v.bad("scratch", f"{scratch!r} is a URL; the scratch folder is local (cells are computed there, "
                  "then uploaded to the output)")
            scratch = None
        else:
            scratch = _resolve(base, urlparse(scratch).path if _scheme(scratch) == "file" else scratch)

    if v.problems:
        raise JobSpecError(src, v.problems)
    return JobSpec(name=name, area=area, event=event, stac=stac, model=model, output=output,
                   cell_size_km=cell, threshold=threshold, min_area_m2=min_area, cluster=cluster,
                   retries=retries, source=Path(source).resolve() if source is not None else None,
                   storage_options=storage_options or {}, scratch=scratch)


_COUNTRY_ONLY_MSG = (
    "`country: {code}` needs a boundary file: no installed package ships country boundaries for "
    "offline use, and jobs never download at run time. Download the boundary once, e.g. Natural "
    "Earth \"Admin 0 - Countries\" (naturalearthdata.com) or geoBoundaries ADM0 for {code} "
    "(geoboundaries.org), and give it as `file: <path>` (keep `country: {code}` to pick that "
    "country from a world file)")


def _parse_area(v: _Validator, data: dict, base: Path) -> Area | None:
    raw = v.get(data, "area", "area", dict)
    if not isinstance(raw, dict):
        return None
    v.keys(raw, _AREA, "area")
    file = v.get(raw, "file", "area.file", str, default=None)
    bbox_raw = raw.get("bbox", _MISSING)
    country = v.get(raw, "country", "area.country", str, default=None)
    if isinstance(country, str):
        code = country.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            v.bad("area.country", f"{country!r} is not an ISO 3166-1 alpha-3 code")
            country = None
        else:
            country = code
    if file is not None and bbox_raw is not _MISSING:
        v.bad("area", "give exactly one of `file` and `bbox`, not both")
        return None
    if file is None and bbox_raw is _MISSING:
        if "file" in raw or "bbox" in raw:
            return None  # already reported (wrong type)
        if country:
            v.bad("area.country", _COUNTRY_ONLY_MSG.format(code=country))
        else:
            v.bad("area", "no area given: add `file` or `bbox`")
        return None
    if bbox_raw is not _MISSING:
        if country:
            v.bad("area.country", "`country` selects a feature of `file`; it cannot be used with `bbox`")
        bbox = _parse_bbox(v, bbox_raw)
        return Area(bbox=bbox) if bbox else None
    if not isinstance(file, str) or not file.strip():
        if file is not None:
            v.bad("area.file", "empty path")
        return None
    if _scheme(file) not in ("", "file"):
        v.bad("area.file", f"{file!r} is a URL: download the boundary once and give its local path")
        return None
    return Area(file=_resolve(base, file), country=country)


def _parse_bbox(v: _Validator, raw: Any) -> tuple[float, float, float, float] | None:
    path = "area.bbox"
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        v.bad(path, f"got {_show(raw)}; a bbox is a list of 4 numbers")
        return None
    vals = []
    for i, x in enumerate(raw):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            v.bad(f"{path}[{i}]", f"got {_show(x)}, not a number")
            return None
        vals.append(float(x))
    w, s, e, n = vals
    ok = True
    for i, (val, lo, hi, what) in enumerate([(w, -180, 180, "west"), (s, -90, 90, "south"),
                                             (e, -180, 180, "east"), (n, -90, 90, "north")]):
        if not (lo <= val <= hi):
            v.bad(f"{path}[{i}]", f"{what} = {val:g} is outside {lo}..{hi} degrees "
                  "(is the bbox in metres? it must be longitude/latitude, EPSG:4326)")
            ok = False
    if not ok:
        return None
    if w >= e:
        hint = (" If the area crosses the antimeridian (180°), split it into two jobs or give a file with "
                "two polygons, one each side of 180°" if w > e else "")
        v.bad(path, f"west ({w:g}) must be less than east ({e:g}).{hint}")
        return None
    if s >= n:
        v.bad(path, f"south ({s:g}) must be less than north ({n:g}); the order is [west, south, east, north]")
        return None
    if n > 84.0 or s < -80.0:
        v.bad(path, f"reaches latitude {n if n > 84.0 else s:g}°, outside the UTM zones (80°S to 84°N) that "
              "processing cells use: clip it to that range")
        return None
    return (w, s, e, n)


def _parse_event(v: _Validator, data: dict) -> Event | None:
    raw = v.get(data, "event", "event", dict)
    if not isinstance(raw, dict):
        return None
    v.keys(raw, _EVENT, "event")
    d_raw = raw.get("date", _MISSING)
    d = None
    if d_raw is _MISSING:
        v.bad("event.date", "missing")
    elif isinstance(d_raw, date):
        d = d_raw
    elif isinstance(d_raw, str):
        try:
            d = date.fromisoformat(d_raw.strip())
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", d_raw.strip()):
                raise ValueError
        except ValueError:
            v.bad("event.date", f"{d_raw!r} is not a valid date")
        else:
            if not (1972 <= d.year <= 2100):
                v.bad("event.date", f"{d} is out of range (optical satellite era)")
                d = None
    else:
        v.bad("event.date", f"got {_show(d_raw)}, not a date")
    pre = v.integer(raw, "pre_days", "event.pre_days", default=90, lo=1, hi=3650)
    post = v.integer(raw, "post_days", "event.post_days", default=60, lo=1, hi=3650)
    post_only = v.get(raw, "post_only", "event.post_only", bool, default=False)
    if d is None or not isinstance(pre, int) or not isinstance(post, int) or not isinstance(post_only, bool):
        return None
    return Event(date=d, pre_days=pre, post_days=post, post_only=post_only)


def _parse_stac(v: _Validator, data: dict) -> StacSpec | None:
    raw = v.get(data, "stac", "stac", dict)
    if not isinstance(raw, dict):
        return None
    v.keys(raw, _STAC, "stac")
    url = v.get(raw, "url", "stac.url", str)
    if isinstance(url, str):
        p = urlparse(url.strip())
        if p.scheme not in ("http", "https") or not p.netloc:
            v.bad("stac.url", f"{url!r} is not an http(s) URL of a STAC API (a static catalog file "
                  "cannot be searched: serve it with `landslide-dask serve-stac`)")
            url = None
        else:
            url = url.strip()
    collection = v.identifier(raw, "collection", "stac.collection", default="sentinel-2-l2a")
    bands = _parse_bands(v, raw.get("bands", _MISSING))
    scl = v.identifier(raw, "scl_asset", "stac.scl_asset", default="scl", nullable=True)
    max_cloud = v.number(raw, "max_cloud", "stac.max_cloud", default=None, nullable=True, lo=0.0, hi=100.0)
    sign = v.get(raw, "sign", "stac.sign", str, default=None, nullable=True)
    if isinstance(sign, str):
        key = sign.strip().lower().replace("_", "-")
        if key not in SIGNERS:
            v.bad("stac.sign", f"unknown signing method {sign!r}{_suggest(key, SIGNERS)}")
            sign = None
        else:
            sign = key
    if isinstance(url, str) and "planetarycomputer" in url and "sign" in raw and raw["sign"] is None:
        v.bad("stac.sign", "the Planetary Computer's asset URLs must be signed to be read: "
              "set `sign: planetary-computer`")
    elif isinstance(url, str) and "planetarycomputer" in url and "sign" not in raw \
            and set(raw) <= set(_STAC):   # a misspelt `sign` is reported as such already
        v.bad("stac.sign", "missing: the Planetary Computer's asset URLs must be signed to be read: "
              "add `sign: planetary-computer`")
    dem_collection = v.identifier(raw, "dem_collection", "stac.dem_collection", default="cop-dem-glo-30",
                                  nullable=True)
    dem_asset = v.identifier(raw, "dem_asset", "stac.dem_asset", default="data")
    if any(x is None for x in (url, collection, bands, dem_asset)) or v.failed("stac."):
        return None
    return StacSpec(url=url, collection=collection, bands=bands, scl_asset=scl, max_cloud=max_cloud,
                    sign=sign, dem_collection=dem_collection, dem_asset=dem_asset)


def _parse_bands(v: _Validator, raw: Any) -> tuple[str, ...] | None:
    if raw is _MISSING:
        return StacSpec.__dataclass_fields__["bands"].default
    if isinstance(raw, str):
        v.bad("stac.bands", f"got the text {raw!r}; write a YAML list, e.g. [blue, green, red, nir]")
        return None
    if not isinstance(raw, list) or not raw:
        v.bad("stac.bands", f"got {_show(raw)}, not a non-empty list")
        return None
    out = []
    for i, b in enumerate(raw):
        if not isinstance(b, str) or not b.strip():
            v.bad(f"stac.bands[{i}]", f"got {_show(b)}, not an asset key")
            return None
        out.append(b.strip())
    dup = sorted({b for b in out if out.count(b) > 1})
    if dup:
        v.bad("stac.bands", f"{', '.join(dup)} listed more than once")
        return None
    return tuple(out)


def _resolve(base: Path, text: str) -> Path:
    p = Path(os.path.expandvars(text.strip())).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _scheme(text: str) -> str:
    s = urlparse(text.strip()).scheme.lower()
    return "" if len(s) == 1 else s  # "C:\\..." is a Windows path, not a URL


def _resolve_location(v: _Validator, path: str, text: str, base: Path, what: str) -> str | None:
    text = text.strip()
    if not text:
        v.bad(path, "empty")
        return None
    scheme = _scheme(text)
    if scheme in ("", "file"):
        local = urlparse(text).path if scheme == "file" else text
        return str(_resolve(base, local))
    if what == "output":
        if scheme in ("http", "https"):
            v.bad(path, f"{text!r}: http(s) locations are read-only; write to object storage "
                  "(s3://, gs://, az://) or a local folder")
            return None
        if scheme not in WRITABLE_SCHEMES:
            v.bad(path, f"unknown URL scheme {scheme!r}://{_suggest(scheme, sorted(WRITABLE_SCHEMES))} "
                  f"(writable schemes: {', '.join(sorted(WRITABLE_SCHEMES))})")
            return None
    else:
        from fsspec.registry import known_implementations

        if scheme not in known_implementations:
            v.bad(path, f"unknown URL scheme {scheme!r}://{_suggest(scheme, sorted(known_implementations))}")
            return None
    if not urlparse(text).netloc and scheme != "memory":
        v.bad(path, f"{text!r} has no bucket/host after {scheme}://")
        return None
    return text


_SECRET_KEY = re.compile(r"(secret|token|password|passwd|key|credential|sas|signature|auth)", re.IGNORECASE)
_NOT_SECRET = {"key_prefix", "endpoint_url", "region_name"}


def _redact(obj: Any) -> Any:
    """``obj`` with the values of secret-looking keys replaced (for provenance in the manifest)."""
    if isinstance(obj, dict):
        return {k: ("***" if isinstance(k, str) and k not in _NOT_SECRET and _SECRET_KEY.search(k)
                    and not isinstance(val, dict) else _redact(val)) for k, val in obj.items()}
    if isinstance(obj, list):
        return [_redact(x) for x in obj]
    return obj


def _expand_env(obj: Any) -> Any:
    if isinstance(obj, str):
        return os.path.expandvars(obj)
    if isinstance(obj, dict):
        return {k: _expand_env(val) for k, val in obj.items()}
    if isinstance(obj, list):
        return [_expand_env(x) for x in obj]
    return obj


def _parse_storage_options(v: _Validator, data: dict, output: Any, model: Any) -> dict | None:
    raw = v.get(data, "storage_options", "storage_options", dict, default=None, nullable=True)
    if not isinstance(raw, dict) or not raw:
        return None
    bad = [k for k in raw if not isinstance(k, str) or not k.strip()]
    if bad:
        v.bad("storage_options", f"keys must be option names (text), got {_show(bad[0])}")
        return None
    urls = [x for x in (output, model) if isinstance(x, str) and _scheme(x) not in ("", "file")]
    if not urls and isinstance(output, str) and isinstance(model, str):
        v.bad("storage_options", "given, but neither `output` nor `model` is a URL: they are only used for "
              "fsspec URLs (s3://, gs://, ...). Remove them, or write to a URL")
        return None
    return _expand_env(raw)


def _model_url_problem(url: str, storage_options: dict) -> str | None:
    """None if the checkpoint at ``url`` can be read, else why not (backend, credentials, missing)."""
    from .storage import StorageError, check_readable

    try:
        check_readable(url, storage_options)
    except StorageError as exc:
        return str(exc)
    return None


def _output_problem(output: str, storage_options: dict | None = None) -> str | None:
    """None if the output location is writable, else why not (checked by writing a probe file or
    object: a URL output is probed for real, so bad credentials, an unknown bucket or an unreachable
    endpoint are found before the job starts)."""
    scheme = _scheme(output)
    if scheme not in ("", "file"):
        from .storage import StorageError, check_writable

        try:
            check_writable(output, storage_options)
        except StorageError as exc:
            return str(exc)
        return None
    target = Path(urlparse(output).path if scheme == "file" else output)
    probe_dir = target
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        return (f"cannot create {target}: {probe_dir} is a file, not a folder. "
                "Choose another output folder")
    try:
        _probe_write(probe_dir)
    except OSError as exc:
        where = "" if probe_dir == target else f" (it does not exist yet and would be created in {probe_dir})"
        return (f"cannot write to {target}{where}: {exc.strerror or exc}. Choose a folder you can write "
                "to, or fix its permissions (e.g. chmod u+w), before the job starts")
    return None


def _probe_write(folder: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".landslide-dask-write-test-", dir=folder)
    os.close(fd)
    os.unlink(name)


def _select_country(gdf, code: str, path: Path):
    cols = [c for c in COUNTRY_COLUMNS if c in gdf.columns]
    if not cols:
        raise JobSpecError(str(path), [("area.country", (
            f"{path} has no ISO country column (looked for {', '.join(COUNTRY_COLUMNS[:8])}, ...); "
            f"its columns are {', '.join(map(str, gdf.columns[:15]))}. Remove `country` if the file is "
            "already the area, or use an admin-0 file such as Natural Earth's or geoBoundaries'"))])
    mask = None
    for c in cols:
        m = gdf[c].astype(str).str.upper() == code
        mask = m if mask is None else (mask | m)
    sel = gdf[mask]
    if not len(sel):
        raise JobSpecError(str(path), [("area.country", (
            f"no feature of {path} has {code} in {', '.join(cols)}: check the ISO 3166-1 alpha-3 code"))])
    return sel


def _show(x: Any) -> str:
    if x is None:
        return "null"
    text = repr(x)
    return (text[:60] + "...") if len(text) > 63 else text + f" ({type(x).__name__})"


def _suggest(word: str, choices) -> str:
    cutoff = 0.5 if len(str(word)) <= 3 else 0.6   # "s4" -> "s3"
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


_TYPE_NAMES = {str: "text", dict: "a mapping", bool: "true or false", list: "a list"}


class _Validator:
    """Collects (path, message) problems; each message ends with what is expected and an example."""

    def __init__(self):
        self.problems: list[tuple[str, str]] = []

    def bad(self, path: str, msg: str) -> None:
        key = re.sub(r"\[\d+\]", "", path)
        exp = _EXPECT.get(key)
        if exp:
            leaf = key.rsplit(".", 1)[-1]
            msg = f"{msg}. Expected {exp[0]}, e.g. `{leaf}: {exp[1]}`"
        self.problems.append((path, msg))

    def failed(self, prefix: str) -> bool:
        return any(p.startswith(prefix) for p, _ in self.problems)

    def keys(self, mapping: dict, known: tuple[str, ...], path: str) -> None:
        for k in mapping:
            if k not in known:
                where = f"{path}.{k}" if path else str(k)
                self.problems.append((where, f"unknown key {k!r}{_suggest(str(k), known)} "
                                      f"(known keys{' of ' + path if path else ''}: {', '.join(known)})"))

    def get(self, mapping: dict, key: str, path: str, typ: type, default: Any = _MISSING,
            nullable: bool = False) -> Any:
        if key not in mapping:
            if default is _MISSING:
                self.bad(path, "missing")
                return None
            return default
        val = mapping[key]
        if val is None:
            if nullable:
                return None
            if default is not _MISSING and default is None:
                return None
            self.bad(path, "is empty (null)")
            return None
        if not isinstance(val, typ) or (typ is not bool and isinstance(val, bool)):
            self.bad(path, f"got {_show(val)}, not {_TYPE_NAMES.get(typ, typ.__name__)}")
            return None
        return val

    def identifier(self, mapping: dict, key: str, path: str, default: Any = _MISSING,
                   nullable: bool = False) -> str | None:
        val = self.get(mapping, key, path, str, default=default, nullable=nullable)
        if isinstance(val, str):
            if not val.strip() or any(ch.isspace() for ch in val.strip()):
                self.bad(path, f"{val!r} is not an id (empty or with spaces)")
                return None
            return val.strip()
        return val

    def number(self, mapping: dict, key: str, path: str, default: Any = _MISSING, nullable: bool = False,
               lo: float | None = None, hi: float | None = None, open_interval: bool = False) -> Any:
        if key not in mapping:
            if default is _MISSING:
                self.bad(path, "missing")
            return None if default is _MISSING else default
        val = mapping[key]
        if val is None:
            if nullable:
                return None
            self.bad(path, "is empty (null)")
            return None
        if isinstance(val, bool) or not isinstance(val, (int, float)) or math.isnan(val):
            self.bad(path, f"got {_show(val)}, not a number")
            return None
        val = float(val)
        if lo is not None and (val < lo or (open_interval and val <= lo)) or \
                hi is not None and (val > hi or (open_interval and val >= hi)):
            self.bad(path, f"{val:g} is out of range")
            return None
        return val

    def integer(self, mapping: dict, key: str, path: str, default: Any = _MISSING,
                lo: int | None = None, hi: int | None = None) -> Any:
        if key not in mapping:
            if default is _MISSING:
                self.bad(path, "missing")
            return None if default is _MISSING else default
        val = mapping[key]
        if isinstance(val, bool) or not isinstance(val, int):
            if isinstance(val, float) and val.is_integer():
                val = int(val)
            else:
                self.bad(path, f"got {_show(val)}, not a whole number")
                return None
        if (lo is not None and val < lo) or (hi is not None and val > hi):
            self.bad(path, f"{val} is out of range")
            return None
        return val
