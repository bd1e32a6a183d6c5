"""Remote job locations: an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``az://...``) as a
country job's output, or as its model checkpoint.

The cube, prediction and COG writers of this package write local files, so a job whose output is
a URL computes each cell in a local *scratch* folder and uploads the finished cell's files
(:meth:`RemoteLocation.upload_dir`); small files (the manifest, the country outputs) are written
whole, each in a single PUT (:meth:`RemoteLocation.write_bytes`): an object store replaces an
object atomically, so a reader sees the old or the new object, never a torn one.

Storage options (credentials, endpoint, region...) come from the job spec's ``storage_options``
mapping and are passed to the fsspec filesystem as keyword arguments (for s3fs e.g. ``key``,
``secret``, ``anon``, ``client_kwargs: {endpoint_url: ..., region_name: ...}``); without them
each backend uses its own defaults (for S3: ``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/instance role).
When the output and the model use different protocols, key the mapping by protocol
(``storage_options: {s3: {...}, gs: {...}}``).

:func:`check_writable` probes a location before a job starts (writes and deletes a small object)
and turns the backend's error into a message that says what to check: the credentials, the
endpoint, the bucket. A missing backend (s3fs, gcsfs, adlfs...) is reported with the pip package
to install (:func:`backend_problem`).

GDAL reads object stores through its own virtual file systems: :meth:`RemoteLocation.gdal_path`
gives ``/vsis3/bucket/key`` (``/vsigs/``, ``/vsiaz/``, ``/vsiadls/``, ``/vsioss/``) for a URL. A
VRT on an object store cannot point at its sources with ``../`` relative paths (GDAL sends the
``..`` in the request path and the signed request fails), so remote VRTs use these absolute paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..common.files import atomic_path
from ..errors import StorageError

__all__ = [
    "BACKENDS",
    "GDAL_PREFIXES",
    "RemoteLocation",
    "StorageError",
    "backend_problem",
    "check_writable",
    "fetch_cached",
    "options_for",
    "protocol_of",
]

# protocol -> the pip package that provides its fsspec backend
BACKENDS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
    "sftp": "paramiko",
    "ssh": "paramiko",
    "hdfs": "pyarrow",
    "webhdfs": "requests",
    "oss": "ossfs",
    "oci": "ocifs",
    "smb": "smbprotocol",
}
# protocol -> GDAL virtual file system prefix (https://gdal.org/user/virtual_file_systems.html)
GDAL_PREFIXES = {
    "s3": "/vsis3/",
    "s3a": "/vsis3/",
    "gs": "/vsigs/",
    "gcs": "/vsigs/",
    "az": "/vsiaz/",
    "abfs": "/vsiaz/",
    "abfss": "/vsiaz/",
    "adl": "/vsiadls/",
    "oss": "/vsioss/",
}
# what to check, per kind of failure, for the common object stores
_CREDENTIALS_HINT = {
    "s3": "storage_options key/secret, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role",
    "gs": "storage_options token, else GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`",
    "az": "storage_options account_name with account_key/sas_token/connection_string, else AZURE_STORAGE_* variables",
}
_ENDPOINT_HINT = {
    "s3": "storage_options client_kwargs.endpoint_url",
    "gs": "storage_options endpoint_url",
    "az": "storage_options account_name / connection_string",
}
PROBE_TIMEOUT_S = 60.0
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "oci", "memory"}
# fields of fsspec's info() that change when an object is rewritten (S3, GCS, Azure, local, memory)
_VERSION_KEYS = (
    "ETag",
    "etag",
    "md5Hash",
    "generation",
    "VersionId",
    "version_id",
    "size",
    "LastModified",
    "last_modified",
    "updated",
    "mtime",
    "created",
)


def protocol_of(url: str) -> str:
    s = urlparse(str(url).strip()).scheme.lower()
    return "" if len(s) <= 1 else s  # "C:\\..." is a Windows path


def _family(protocol: str) -> str:
    return {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}.get(protocol, protocol)


def options_for(storage_options: dict | None, protocol: str) -> dict[str, Any]:
    """The fsspec keyword arguments for ``protocol``: the whole mapping, or its ``protocol`` entry
    when the mapping is keyed by protocol (every key a protocol name with a mapping as value)."""
    opts = dict(storage_options or {})
    if opts and all(isinstance(v, dict) and _is_protocol(k) for k, v in opts.items()):
        for key in (protocol, _family(protocol)):
            if key in opts:
                return dict(opts[key])
        return {}
    return opts


def _is_protocol(name: Any) -> bool:
    from fsspec.registry import known_implementations

    return isinstance(name, str) and (name in known_implementations or name in BACKENDS)


def backend_problem(url: str) -> str | None:
    """None if fsspec can open ``url``'s protocol here, else what to install (pip package)."""
    import fsspec

    proto = protocol_of(url)
    try:
        fsspec.get_filesystem_class(proto)
    except ImportError as exc:
        pkg = BACKENDS.get(proto)
        how = f"`pip install {pkg}`" if pkg else "the fsspec backend of this protocol"
        return f"{url}: reading and writing {proto}:// needs {how}, which is not installed here ({exc})"
    except ValueError as exc:
        return f"{url}: {exc}"
    return None


def _filesystem(url: str, storage_options: dict | None):
    import fsspec

    problem = backend_problem(url)
    if problem:
        raise StorageError(problem)
    proto = protocol_of(url)
    opts = options_for(storage_options, proto)
    try:
        fs, path = fsspec.core.url_to_fs(url, **opts)
    except TypeError as exc:  # an option the backend does not know
        raise StorageError(
            f"{url}: storage_options {sorted(opts)} were refused by the {proto}:// backend "
            f"({exc}); see its documentation for the accepted options"
        ) from None
    return fs, path.rstrip("/")


def explain(exc: BaseException, url: str, doing: str) -> str:
    """A message for a failed storage operation: what happened, then what to check."""
    proto = _family(protocol_of(url))
    creds = _CREDENTIALS_HINT.get(proto, "the credentials in storage_options")
    endpoint = _ENDPOINT_HINT.get(proto, "storage_options")
    bucket = urlparse(url).netloc
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:300] or name
    # s3fs may hand an unreachable endpoint over as a PermissionError: connection first
    unreachable = "Could not connect to the endpoint" in text or "Connect" in name or "Timeout" in name
    refused = isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text or "403" in text
    if refused and not unreachable:
        right = "read" if doing.startswith(("reading", "downloading")) else "write to"
        return (
            f"{doing} {url} was refused ({text}): check the credentials ({creds}) and that they may "
            f"{right} bucket {bucket!r} under this prefix"
        )
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return (
            f"{doing} {url} failed: {text}. Check the bucket name {bucket!r} (create it first: jobs do "
            f"not create buckets) and, for a self-hosted or non-AWS object store, the endpoint ({endpoint})"
        )
    if unreachable or isinstance(exc, (ConnectionError, TimeoutError)) or "connect" in text.lower():
        return (
            f"{doing} {url} failed: the storage endpoint cannot be reached ({name}: {text}). Check the "
            f"endpoint ({endpoint}), the network or proxy, and the region"
        )
    return (
        f"{doing} {url} failed ({name}: {text}): check the credentials ({creds}), the endpoint "
        f"({endpoint}) and the bucket {bucket!r}"
    )


def _with_timeout(fn, timeout: float, what: str):
    """Run ``fn`` in a thread; raise TimeoutError if it takes longer (the thread is abandoned)."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="storage-probe", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s while {what}")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class RemoteLocation:
    """A folder on an fsspec filesystem: ``url`` (``protocol://bucket/prefix``) + storage options."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = str(url).rstrip("/")
        self.protocol = protocol_of(self.url)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = _filesystem(self.url, self.storage_options)

    def __repr__(self) -> str:
        return f"RemoteLocation({self.url!r})"

    # -- names ------------------------------------------------------------------------------------
    def path_of(self, rel: str = "") -> str:
        """The filesystem path (no protocol) of ``rel`` under this location."""
        rel = str(rel).strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def url_of(self, rel: str = "") -> str:
        rel = str(rel).strip("/")
        return f"{self.url}/{rel}" if rel else self.url

    def gdal_path(self, rel: str = "") -> str | None:
        """GDAL's name of ``rel`` (``/vsis3/bucket/key``), or None if GDAL cannot read the protocol."""
        prefix = GDAL_PREFIXES.get(self.protocol)
        return prefix + self.path_of(rel) if prefix else None

    # -- reading and writing --------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        try:
            return self.fs.cat_file(self.path_of(rel))
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write a whole object in one request (one PUT on object stores: atomic for readers)."""
        path = self.path_of(rel)
        self.fs.pipe_file(path, data)
        return self.url_of(rel)

    def _parents(self, paths: list[str]) -> None:
        """File systems with real folders (sftp, smb, hdfs...) need them made; object stores do not."""
        if self.protocol not in OBJECT_STORES:
            for parent in sorted({p.rsplit("/", 1)[0] for p in paths}):
                self.fs.makedirs(parent, exist_ok=True)

    def upload_file(self, local: str | Path, rel: str) -> str:
        self._parents([self.path_of(rel)])
        self.fs.put_file(str(local), self.path_of(rel))
        return self.url_of(rel)

    def upload_dir(self, local: str | Path, rel: str) -> list[str]:
        """Upload every file under ``local`` to ``rel/`` (same relative layout; several requests in
        flight on async backends such as s3fs); returns the relative names uploaded."""
        local = Path(local)
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        rels = [f"{rel.strip('/')}/{p.relative_to(local).as_posix()}" for p in files]
        if files:
            remote = [self.path_of(r) for r in rels]
            self._parents(remote)
            self.fs.put([str(p) for p in files], remote)
        return rels

    def remove(self, rel: str) -> None:
        """Remove ``rel`` and everything under it; nothing if it does not exist."""
        path = self.path_of(rel)
        with contextlib.suppress(FileNotFoundError):
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache(path)

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) of the entries directly under ``rel``; [] if none."""
        path = self.path_of(rel)
        self.fs.invalidate_cache(path)
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.path_of(rel), mode)


def check_writable(url: str, storage_options: dict | None = None, timeout: float = PROBE_TIMEOUT_S) -> RemoteLocation:
    """Open ``url`` and prove it can be written (a small probe object written, read back and
    deleted), within ``timeout`` seconds; raises :class:`StorageError` saying what to check."""
    loc = RemoteLocation(url, storage_options)
    name = f".landslide-dask-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def probe():
        loc.write_bytes(name, b"ok")
        try:
            if loc.read_bytes(name) != b"ok":
                raise OSError("the probe object written could not be read back")
        finally:
            with contextlib.suppress(FileNotFoundError):
                loc.fs.rm_file(loc.path_of(name))

    try:
        _with_timeout(probe, timeout, f"writing a probe object to {url}")
    except Exception as exc:  # noqa: BLE001 - every backend error becomes one clear message
        raise StorageError(explain(exc, url, "writing to")) from None
    return loc


def check_readable(url: str, storage_options: dict | None = None, timeout: float = PROBE_TIMEOUT_S) -> dict:
    """The ``info()`` of the object at ``url`` (size, ETag...); raises :class:`StorageError`."""
    fs, path = _filesystem(url, storage_options)
    try:
        info = _with_timeout(lambda: fs.info(path), timeout, f"reading {url}")
    except FileNotFoundError:
        endpoint = _ENDPOINT_HINT.get(_family(protocol_of(url)), "storage_options")
        raise StorageError(
            f"{url} does not exist: check the URL (bucket and key) and, for a self-hosted "
            f"or non-AWS object store, the endpoint ({endpoint})"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise StorageError(explain(exc, url, "reading")) from None
    if info.get("type") == "directory":
        raise StorageError(f"{url} is a folder (prefix), not a checkpoint file")
    return info


def fetch_cached(url: str, cache_dir: str | Path, storage_options: dict | None = None) -> Path:
    """Download the file at ``url`` into ``cache_dir`` once; later calls reuse it while the remote
    object is unchanged (the cache key is the URL + its ETag/size/modification time)."""
    info = check_readable(url, storage_options)
    version = "|".join(str(info.get(k, "")) for k in _VERSION_KEYS)
    key = hashlib.sha256(f"{url}|{version}".encode()).hexdigest()[:16]
    name = Path(urlparse(url).path).name or "file"
    dest = Path(cache_dir) / key / name
    if dest.is_file() and (info.get("size") is None or dest.stat().st_size == int(info["size"])):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs, path = _filesystem(url, storage_options)
    t0 = time.perf_counter()
    with atomic_path(dest) as tmp:  # the cached name only for a whole, checked download
        try:
            fs.get_file(path, str(tmp))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(explain(exc, url, "downloading")) from None
        if info.get("size") is not None and tmp.stat().st_size != int(info["size"]):
            raise StorageError(f"{url}: downloaded {tmp.stat().st_size} bytes, expected {info['size']}")
    import logging

    logging.getLogger(__name__).info("fetched %s to %s in %.1fs", url, dest, time.perf_counter() - t0)
    return dest
