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
    predict:                      # optional: how each cell's probability map is inferred
      window: 768                 #   window in pixels, a positive multiple of 32 (default 768)
      overlap: 64                 #   overlap of neighbouring windows, a multiple of 32 < window (default 64)
      batch_size: null            #   windows per forward pass; null: the device's default
      device: null                #   cpu | cuda | cuda:N | mps; null: CUDA on workers that have it
    cluster: slurm                # cluster definition: a file or a shipped example (local, slurm, ...);
                                  #   null: decided on the command line
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

Country boundaries (:mod:`landslide_dask.jobs.area`): ``country`` alone is refused with instructions
(no package ships boundaries for offline use); with ``file`` it selects that country's feature(s).

The whole ``predict`` section belongs to the fingerprint: a job resumed with another window,
overlap, batch size or device is refused (its cells would not form one seamless map).

Two further steps are separate from loading, so that the examples load anywhere:
:meth:`JobSpec.check_paths` (``area.file``, ``model`` and ``cluster`` exist, ``output`` can be
written: a local folder by a probe file, a URL by a probe object written, read back and deleted, so
missing credentials, an unknown bucket, an unreachable endpoint or an uninstalled backend are found
before a job starts; a model URL is checked for reading) and :meth:`JobSpec.fingerprint` (hashes the area
geometry and the model file).

The models are pydantic (:mod:`landslide_dask.common.validation`); the sections live in
:mod:`landslide_dask.jobs.area` and :mod:`landslide_dask.jobs.sections`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from ..clusters.shipped import resolve_cluster
from ..common.files import file_sha256 as local_file_sha256
from ..common.files import sha256_hex
from ..common.validation import Strict, problems_of, read_yaml, show
from ..errors import JobSpecError
from ..predict.config import MIN_AREA_M2
from .area import Area
from .locations import base_dir, expand_env, is_local, local_path, redact, resolve_location, resolve_path, scheme
from .sections import Event, PredictSpec, StacSpec, WholeNumber

__all__ = [
    "FINGERPRINT_VERSION",
    "Area",
    "Event",
    "JobSpec",
    "JobSpecError",
    "PredictSpec",
    "StacSpec",
    "load_jobspec",
    "parse_jobspec",
]

#: 2: the ``predict`` section joined the fingerprint
FINGERPRINT_VERSION = 2
RESOLUTION_M = 10.0


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"got {show(v)}, not text")
    return v


class JobSpec(Strict):
    """A validated job spec; relative paths are absolute already (see the module's docstring)."""

    name: str = Field(description="letters, digits, '.', '_' or '-'", examples=["nepal-2015"])
    area: Area = Field(description="a mapping with `file` or `bbox`", examples=["{bbox: [84.0, 27.3, 86.8, 28.6]}"])
    event: Event = Field(description="a mapping with at least `date`", examples=["{date: 2015-04-25}"])
    stac: StacSpec = Field(
        description="a mapping with at least `url`", examples=["{url: https://earth-search.aws.element84.com/v1}"]
    )
    model: str = Field(
        description="the path of a model checkpoint (or an fsspec URL)", examples=["../../models/landslide.pt"]
    )
    cell_size_km: float = Field(
        20.0, ge=1.0, le=200.0, examples=[20], description="a number of km, 1-200, a multiple of 0.01 (10 m)"
    )
    output: str = Field(
        description="a local folder or a URL (s3://, gs://, az://, ...)", examples=["s3://my-bucket/nepal-2015"]
    )
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        examples=[0.5],
        description="a probability strictly between 0 and 1, or null (the checkpoint's)",
    )
    min_area_m2: float = Field(MIN_AREA_M2, ge=0.0, description="a non-negative number of m²", examples=[400])
    predict: PredictSpec = Field(
        default_factory=PredictSpec,
        examples=["{window: 768, overlap: 64}"],
        description="a mapping of inference settings (window, overlap, batch_size, device)",
    )
    cluster: Path | None = Field(
        None,
        description="the path of a cluster definition, the name of a shipped "
        "example (local, gpu-node, slurm, kubernetes), or null",
        examples=["slurm"],
    )
    retries: WholeNumber = Field(2, ge=0, le=20, description="a whole number 0-20", examples=[2])
    # fsspec options of URL locations (credentials, endpoint); they do not change the results
    storage_options: dict = Field(
        default_factory=dict,
        description="a mapping of fsspec options for the URL output/model",
        examples=["{client_kwargs: {endpoint_url: 'http://127.0.0.1:9000'}}"],
    )
    scratch: Path | None = Field(
        None, description="a local folder (the working folder of a URL output)", examples=["/scratch/me/landslides"]
    )
    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("name") is None:
            source = (info.context or {}).get("source")
            data = {**data, "name": Path(source).stem if source is not None else "job"}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"{v!r} cannot be used in file names")
        return v

    @field_validator("model", "output")
    @classmethod
    def _location(cls, v: str, info: ValidationInfo) -> str:
        return resolve_location(v, base_dir(info), what=info.field_name)

    @field_validator("cell_size_km")
    @classmethod
    def _whole_pixels(cls, v: float) -> float:
        pixels = v * 1000.0 / RESOLUTION_M
        if abs(pixels - round(pixels)) > 1e-6:
            raise ValueError(f"{v:g} km is not a whole number of 10 m pixels")
        return v

    @field_validator("predict", mode="before")
    @classmethod
    def _predict_defaults(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("cluster", mode="before")
    @classmethod
    def _cluster(cls, v: Any, info: ValidationInfo) -> Path | None:
        if v is None or isinstance(v, Path):
            return v
        if not is_local(_text(v)):
            raise ValueError(f"{v!r} is a URL; a cluster definition is a local YAML file")
        shipped = resolve_cluster(v)
        return shipped if shipped != Path(v) else resolve_path(base_dir(info), v)

    @field_validator("storage_options", mode="before")
    @classmethod
    def _storage_options(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or (isinstance(v, dict) and not v):
            return {}
        if not isinstance(v, dict):
            return v  # the type's own error: not a mapping
        bad = [k for k in v if not isinstance(k, str) or not k.strip()]
        if bad:
            raise ValueError(f"keys must be option names (text), got {show(bad[0])}")
        located = [info.data[k] for k in ("output", "model") if k in info.data]
        if len(located) == 2 and all(is_local(x) for x in located):
            raise ValueError(
                "given, but neither `output` nor `model` is a URL: they are only used for fsspec "
                "URLs (s3://, gs://, ...). Remove them, or write to a URL"
            )
        return expand_env(v)

    @field_validator("scratch", mode="before")
    @classmethod
    def _scratch(cls, v: Any, info: ValidationInfo) -> Path | None:
        if v is None or isinstance(v, Path):
            return v
        if not _text(v).strip():
            raise ValueError("empty path")
        if not is_local(v):
            raise ValueError(
                f"{v!r} is a URL; the scratch folder is local (cells are computed there, then uploaded to the output)"
            )
        return resolve_path(base_dir(info), str(local_path(v)))

    @property
    def source(self) -> Path | None:
        """The spec file this was loaded from (None when parsed from memory)."""
        return self._source

    @property
    def output_is_local(self) -> bool:
        return is_local(self.output)

    @property
    def output_path(self) -> Path:
        """The local output folder (only for a local output)."""
        if not self.output_is_local:
            raise ValueError(f"output {self.output} is not a local path")
        return local_path(self.output)

    @property
    def model_is_local(self) -> bool:
        return is_local(self.model)

    def fsspec_options(self, url: str) -> dict[str, Any]:
        """The fsspec keyword arguments for ``url`` (its protocol's entry of ``storage_options``)."""
        from .storage import options_for

        return options_for(self.storage_options, scheme(url))

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
                problems.append(
                    (
                        "area.file",
                        f"{self.area.file} does not exist. Give the path of a "
                        "GeoJSON/GeoPackage/Shapefile (relative paths start at the spec's folder)",
                    )
                )
            elif self.area.file.is_dir():
                problems.append(("area.file", f"{self.area.file} is a folder; give the vector file itself"))
        if self.model_is_local:
            p = Path(self.model)
            if not p.is_file():
                problems.append(
                    (
                        "model",
                        f"checkpoint {p} does not exist. Train one "
                        "(landslide-dask train) or fix the path (relative paths start at the spec's folder)",
                    )
                )
        else:
            msg = _model_url_problem(self.model, self.fsspec_options(self.model))
            if msg:
                problems.append(("model", msg))
        if self.cluster is not None and not self.cluster.is_file():
            problems.append(
                (
                    "cluster",
                    f"cluster definition {self.cluster} does not exist (relative paths "
                    "start at the spec's folder; or name a shipped example: local, slurm, ...)",
                )
            )
        msg = _output_problem(self.output, self.fsspec_options(self.output))
        if msg:
            problems.append(("output", msg))
        if problems:
            raise JobSpecError(str(self.source or self.name), problems)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready provenance (secrets in ``storage_options`` redacted)."""
        d = self.model_dump(mode="json")
        d["area"] = {k: v for k, v in d["area"].items() if v is not None}
        d["source"] = str(self.source) if self.source else None
        d["storage_options"] = redact(self.storage_options)
        return d

    def fingerprint(self, area_geometry=None, model_file: str | Path | None = None) -> str:
        """A stable hash of everything that changes the results (not name, output, cluster, retries).

        Covers the area *geometry* (so re-saving the same boundary does not matter), the event
        windows, the STAC settings, the model checkpoint's *content* (so moving it does not
        matter, retraining does), the cell size, threshold, minimum area and the ``predict``
        section (window, overlap, batch size, device). Pass the already loaded ``area_geometry``
        (EPSG:4326) to avoid reading the area file again, and ``model_file``, a local copy of a
        checkpoint given as a URL (same bytes, same hash), to avoid reading it over the network again.
        """
        import shapely

        geom = self.area.geometry() if area_geometry is None else area_geometry
        payload = {
            "v": FINGERPRINT_VERSION,
            "area_wkb_sha256": hashlib.sha256(shapely.to_wkb(shapely.normalize(geom))).hexdigest(),
            "event": self.event.model_dump(mode="json"),
            "stac": self.stac.model_dump(mode="json"),
            "model_sha256": file_sha256(
                model_file if model_file is not None else self.model, self.fsspec_options(self.model)
            ),
            "cell_size_km": float(self.cell_size_km),
            "resolution_m": RESOLUTION_M,
            "threshold": self.threshold,
            "min_area_m2": float(self.min_area_m2),
            "predict": self.predict.model_dump(mode="json"),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def cube_kwargs(self) -> dict[str, Any]:
        """The CubeSpec fields this job fixes (add ``aoi``, ``out`` and ``epsg`` per cell)."""
        return {
            "stac_url": self.stac.url,
            "event_date": self.event.date,
            "pre_days": self.event.pre_days,
            "post_days": self.event.post_days,
            "post_only": self.event.post_only,
            "bands": tuple(self.stac.bands),
            "collection": self.stac.collection,
            "scl_asset": self.stac.scl_asset,
            "dem_collection": self.stac.dem_collection,
            "dem_asset": self.stac.dem_asset,
            "max_cloud": self.stac.max_cloud,
            "sign": self.stac.sign,
            "resolution": RESOLUTION_M,
        }


def file_sha256(path_or_url: str | Path, storage_options: dict | None = None) -> str:
    """sha256 of a file's bytes: a local path (cached by path, size and mtime) or an fsspec URL."""
    s = str(path_or_url)
    if is_local(s):
        p = local_path(s)
        try:
            return local_file_sha256(p)
        except FileNotFoundError:
            raise JobSpecError(
                s,
                [
                    (
                        "model",
                        f"checkpoint {p} does not exist: the job's fingerprint "
                        "hashes it. Fix the path or train a model first",
                    )
                ],
            ) from None
    import fsspec

    with fsspec.open(s, "rb", **(storage_options or {})) as f:
        return sha256_hex(f)


def load_jobspec(path: str | Path) -> JobSpec:
    """Read and validate a job spec; raises JobSpecError listing every problem."""
    path = Path(path).expanduser()
    data = read_yaml(
        path, JobSpecError, f"{path} does not exist (or is not a file). See cluster/jobs/*.yaml for examples"
    )
    return parse_jobspec(data, base_dir=path.resolve().parent, source=path)


def parse_jobspec(data: Any, base_dir: str | Path = ".", source: str | Path | None = None) -> JobSpec:
    """Validate a spec already parsed from YAML/JSON; relative paths start at ``base_dir``."""
    src = str(source) if source is not None else "(in memory)"
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise JobSpecError(
            src,
            [("", f"a job spec is a YAML mapping (key: value lines), got {got}. See cluster/jobs/*.yaml for examples")],
        )
    try:
        spec = JobSpec.model_validate(data, context={"base": Path(base_dir).resolve(), "source": source})
    except ValidationError as exc:
        raise JobSpecError(src, problems_of(exc, JobSpec)) from None
    spec._source = Path(source).resolve() if source is not None else None
    return spec


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
    if not is_local(output):
        from .storage import StorageError, check_writable

        try:
            check_writable(output, storage_options)
        except StorageError as exc:
            return str(exc)
        return None
    target = local_path(output)
    probe_dir = target
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        return f"cannot create {target}: {probe_dir} is a file, not a folder. Choose another output folder"
    try:
        _probe_write(probe_dir)
    except OSError as exc:
        where = "" if probe_dir == target else f" (it does not exist yet and would be created in {probe_dir})"
        return (
            f"cannot write to {target}{where}: {exc.strerror or exc}. Choose a folder you can write "
            "to, or fix its permissions (e.g. chmod u+w), before the job starts"
        )
    return None


def _probe_write(folder: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".landslide-dask-write-test-", dir=folder)
    os.close(fd)
    os.unlink(name)
