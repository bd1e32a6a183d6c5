"""Paths and URLs of a job spec: relative paths resolved against the spec's folder, fsspec URLs
checked by scheme, ``${VAR}`` expanded in storage options and secrets redacted for provenance."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationInfo

from ..common.validation import suggest

__all__ = [
    "WRITABLE_SCHEMES",
    "base_dir",
    "expand_env",
    "is_local",
    "local_path",
    "redact",
    "resolve_location",
    "resolve_path",
    "scheme",
]

# fsspec protocols an output may use (writable object stores and file systems). http(s) is
# read-only; zip/tar/reference/github and the caching wrappers are not places to write a job.
WRITABLE_SCHEMES = {
    "file",
    "s3",
    "s3a",
    "gs",
    "gcs",
    "az",
    "abfs",
    "abfss",
    "adl",
    "memory",
    "sftp",
    "ssh",
    "hdfs",
    "webhdfs",
    "oss",
    "oci",
    "smb",
}


def scheme(text: str) -> str:
    """The URL scheme of ``text`` in lower case; "" for a local path (``C:\\...`` included)."""
    s = urlparse(text.strip()).scheme.lower()
    return "" if len(s) == 1 else s


def is_local(text: str) -> bool:
    return scheme(text) in ("", "file")


def local_path(text: str) -> Path:
    """A local path or ``file://`` URL as a Path."""
    return Path(urlparse(text).path if text.startswith("file:") else text)


def base_dir(info: ValidationInfo) -> Path:
    """The folder relative paths start at: the spec file's, passed as validation context."""
    ctx = info.context or {}
    return Path(ctx.get("base") or ".").resolve()


def resolve_path(base: Path, text: str) -> Path:
    p = Path(os.path.expandvars(text.strip())).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def resolve_location(text: str, base: Path, what: str) -> str:
    """A local path (made absolute) or a checked fsspec URL; ValueError says what is wrong.
    ``what``: "output" (a writable scheme) or "model" (any fsspec scheme)."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    sch = scheme(text)
    if sch in ("", "file"):
        return str(resolve_path(base, urlparse(text).path if sch == "file" else text))
    if what == "output":
        if sch in ("http", "https"):
            raise ValueError(
                f"{text!r}: http(s) locations are read-only; write to object storage "
                "(s3://, gs://, az://) or a local folder"
            )
        if sch not in WRITABLE_SCHEMES:
            raise ValueError(
                f"unknown URL scheme {sch!r}://{suggest(sch, sorted(WRITABLE_SCHEMES))} "
                f"(writable schemes: {', '.join(sorted(WRITABLE_SCHEMES))})"
            )
    else:
        from fsspec.registry import known_implementations

        if sch not in known_implementations:
            raise ValueError(f"unknown URL scheme {sch!r}://{suggest(sch, sorted(known_implementations))}")
    if not urlparse(text).netloc and sch != "memory":
        raise ValueError(f"{text!r} has no bucket/host after {sch}://")
    return text


_SECRET_KEY = re.compile(r"(secret|token|password|passwd|key|credential|sas|signature|auth)", re.IGNORECASE)
_NOT_SECRET = {"key_prefix", "endpoint_url", "region_name"}


def redact(obj: Any) -> Any:
    """``obj`` with the values of secret-looking keys replaced (for provenance in the manifest)."""
    if isinstance(obj, dict):
        return {
            k: (
                "***"
                if isinstance(k, str) and k not in _NOT_SECRET and _SECRET_KEY.search(k) and not isinstance(val, dict)
                else redact(val)
            )
            for k, val in obj.items()
        }
    if isinstance(obj, list):
        return [redact(x) for x in obj]
    return obj


def expand_env(obj: Any) -> Any:
    """``${VAR}`` replaced by the environment variable in every text value of ``obj``."""
    if isinstance(obj, str):
        return os.path.expandvars(obj)
    if isinstance(obj, dict):
        return {k: expand_env(val) for k, val in obj.items()}
    if isinstance(obj, list):
        return [expand_env(x) for x in obj]
    return obj
