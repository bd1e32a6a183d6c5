"""The job's record of its cells: what is done, empty, failed or still to do, kept atomically.

One JSON file (e.g. ``OUTPUT/manifest.json``), rewritten whole on every change: written to a
temporary file in the same folder, flushed and fsync'ed, then ``os.replace``d over the old one
(and the folder fsync'ed). A process killed at any moment leaves either the old or the new
manifest, never a torn one. The driver process is the only writer (cells run on workers and
report back), so one file is simpler than one file per cell and just as safe; at ~0.3 KB per
cell a 400-cell country is ~120 KB, rewritten in about a millisecond. A second driver on the same
manifest is refused while the first holds its lock (``flock`` on ``manifest.json.lock``, released
by the OS when the process dies; on file systems without locks this check is skipped).

Per cell: ``status`` (pending | running | done | empty | failed), ``reason`` (empty: e.g. no
imagery / fully clouded; failed: the error message), ``attempts`` (finished attempts in this
run), ``total_attempts`` (over all runs), ``errors`` (last few messages), ``timings`` (seconds
per stage), ``outputs`` (name -> path), ``started_at``, ``finished_at`` (UTC ISO 8601).

Retries: a failed cell is retried while ``attempts <= retries`` (so up to ``1 + retries``
attempts per run), then reported. Opening the manifest again (a rerun) gives failed cells a new
budget and turns cells left ``running`` by a killed run back into ``pending`` (an interrupted
attempt is not counted). ``done`` and ``empty`` cells are never recomputed.

A manifest can be mirrored: ``before_read(path)`` and ``on_write(path)`` (see
:meth:`Manifest.create_or_open`) are called once before it is read and after every write of the manifest (and of a
``--force`` backup) with the local file just
written; a job whose output is an fsspec URL uploads it there, whole, in one PUT (an object store
replaces an object atomically). The local file and its lock then live in the job's scratch
folder; the remote copy is what a rerun resumes from. The lock guards only drivers on the same
machine (object stores have no ``flock``).

The manifest belongs to one job *fingerprint* (:meth:`JobSpec.fingerprint`): opening it for a
different one is refused, because mixing cells of two configurations would give a map that
belongs to neither.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..common.files import remove_stale, write_text
from ..errors import ManifestError

log = logging.getLogger(__name__)

__all__ = ["FINISHED", "STATUSES", "Manifest", "ManifestError", "ManifestSummary"]

FORMAT = "landslide-dask-manifest"
VERSION = 1
STATUSES = ("pending", "running", "done", "empty", "failed")
FINISHED = ("done", "empty")
_KEEP_ERRORS = 5


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_record() -> dict[str, Any]:
    return {
        "status": "pending",
        "reason": None,
        "attempts": 0,
        "total_attempts": 0,
        "errors": [],
        "timings": {},
        "outputs": {},
        "started_at": None,
        "finished_at": None,
    }


@dataclass
class ManifestSummary:
    total: int
    counts: dict[str, int]
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> reason
    empty: dict[str, str] = field(default_factory=dict)  # cell id -> reason

    @property
    def done(self) -> int:
        return self.counts.get("done", 0)

    @property
    def n_empty(self) -> int:
        return self.counts.get("empty", 0)

    @property
    def n_failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def unfinished(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("running", 0)

    @property
    def ok(self) -> bool:
        """Every cell done or empty: the job is complete and nothing failed."""
        return self.n_failed == 0 and self.unfinished == 0

    def __str__(self) -> str:
        line = f"{self.total} cells: {self.done} done, {self.n_empty} empty, {self.n_failed} failed" + (
            f", {self.unfinished} not run" if self.unfinished else ""
        )
        lines = [line]
        if self.empty:
            by_reason: dict[str, int] = {}
            for r in self.empty.values():
                by_reason[r] = by_reason.get(r, 0) + 1
            lines.append("empty: " + "; ".join(f"{n} x {r}" for r, n in sorted(by_reason.items())))
        for cid, reason in self.failed.items():
            lines.append(f"FAILED {cid}: {reason}")
        return "\n".join(lines)


class Manifest:
    """Open an existing manifest (see :meth:`create_or_open` to start or resume a job)."""

    def __init__(self, path: str | Path, *, lock: bool = False):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._on_write = None
        if lock:
            self._acquire_lock()
        try:
            self._data = self._read()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls,
        path: str | Path,
        fingerprint: str,
        cell_ids: Iterable[str],
        *,
        retries: int = 2,
        force: bool = False,
        meta: dict | None = None,
        lock: bool = True,
        before_read: Callable[[Path], None] | None = None,
        on_write: Callable[[Path], None] | None = None,
    ) -> Manifest:
        """Start a job's manifest, or resume it: same fingerprint and cells, or refuse.

        ``force`` discards a manifest of another fingerprint (kept as ``NAME.replaced-TIME``)
        and starts over. ``meta`` (e.g. the job spec as a dict) is stored for provenance.
        ``before_read(path)`` is called once the lock is held, before the manifest is read (e.g. to
        download the remote copy over the local file, or remove the local file if there is none).
        ``on_write(path)`` is called after every atomic write of the manifest (or of the backup)
        with the file written, e.g. to upload it; an error it raises propagates to the caller.
        """
        path = Path(path)
        ids = list(cell_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("cell ids must be unique")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        path.parent.mkdir(parents=True, exist_ok=True)
        self = cls.__new__(cls)
        self.path = path
        self._lock_fd = None
        self._on_write = on_write
        if lock:
            self._acquire_lock()
        try:
            if before_read is not None:
                before_read(path)
            self._open_for_job(fingerprint, ids, retries, force, meta)
        except BaseException:
            self.close()
            raise
        return self

    def _open_for_job(self, fingerprint: str, ids: list[str], retries: int, force: bool, meta: dict | None) -> None:
        self._clean_tmp()
        if self.path.exists():
            data = self._read()
            problem = None
            if data["fingerprint"] != fingerprint:
                problem = (
                    f"{self.path} belongs to another configuration of this job (fingerprint "
                    f"{data['fingerprint'][:12]}, this run {fingerprint[:12]}): the area, dates, "
                    "STAC settings, model, cell size, threshold, minimum area or inference settings "
                    "(predict: window, overlap, batch size, device) changed. Write to a "
                    "new output location, or pass --force to discard its cells and start over"
                )
            elif set(data["cells"]) != set(ids):
                problem = (
                    f"{self.path} lists {len(data['cells'])} cells, this run has {len(ids)} (same "
                    "fingerprint: was the cell layout of landslide-dask changed?). Write to a new "
                    "output location, or pass --force to start over"
                )
            if problem is None:
                self._data = data
                self._data["retries"] = int(retries)
                for rec in self._data["cells"].values():
                    if rec["status"] == "running":  # interrupted by a killed run: not an attempt
                        rec["status"] = "pending"
                        rec["started_at"] = None
                    if rec["status"] == "failed":  # a new run gives failed cells a new budget
                        rec["attempts"] = 0
                self._data["runs"] = int(self._data.get("runs", 1)) + 1
                if meta is not None:
                    self._data["meta"] = meta
                self._write()
                return
            if not force:
                raise ManifestError(problem)
            backup = self.path.with_name(f"{self.path.name}.replaced-{datetime.now().strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, backup)
            if self._on_write is not None:
                self._on_write(backup)
            log.warning("--force: %s kept as %s; starting over", self.path, backup)
        self._data = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fingerprint,
            "retries": int(retries),
            "created_at": _now(),
            "updated_at": _now(),
            "runs": 1,
            "meta": meta or {},
            "order": ids,
            "cells": {cid: _new_record() for cid in ids},
        }
        self._write()

    # -- locking ------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise ManifestError(
                f"{self.path} is in use by another run of this job (pid {holder}). Wait for it to end, "
                "or stop it; two drivers on one manifest would compute cells twice"
            ) from None
        except OSError as exc:  # e.g. ENOLCK on some network file systems
            log.warning("cannot lock %s (%s): not guarding against a concurrent run", lock_path, exc)
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (also released when the process ends)."""
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            finally:
                self._lock_fd = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- reading and writing -------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {self.path}: the job has not been started there") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{self.path} is not valid JSON ({exc}): it was edited or damaged outside "
                "landslide-dask. Restore it, or pass --force to start the job over"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{self.path} is not a landslide-dask manifest")
        if data.get("version") != VERSION:
            raise ManifestError(
                f"{self.path} has manifest version {data.get('version')}, this landslide-dask reads version {VERSION}"
            )
        return data

    def _write(self) -> None:
        self._data["updated_at"] = _now()
        text = json.dumps(self._data, indent=1, sort_keys=False)
        write_text(self.path, text, fsync=True)
        _fsync_dir(self.path.parent)
        if self._on_write is not None:
            self._on_write(self.path)

    def _clean_tmp(self) -> None:
        remove_stale(self.path)  # left by a writer that was killed mid-write

    def reload(self) -> None:
        self._data = self._read()

    # -- queries ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self._data["fingerprint"]

    @property
    def retries(self) -> int:
        return int(self._data["retries"])

    @property
    def meta(self) -> dict:
        return self._data.get("meta", {})

    @property
    def cell_ids(self) -> list[str]:
        return list(self._data["order"])

    def __len__(self) -> int:
        return len(self._data["order"])

    def record(self, cell_id: str) -> dict[str, Any]:
        """A copy of the cell's record."""
        return json.loads(json.dumps(self._rec(cell_id)))

    def status(self, cell_id: str) -> str:
        return self._rec(cell_id)["status"]

    def todo(self) -> list[str]:
        """Cells to run now, in job order: pending, interrupted, and failed with retries left."""
        out = []
        for cid in self._data["order"]:
            rec = self._data["cells"][cid]
            if rec["status"] in ("pending", "running") or rec["status"] == "failed" and rec["attempts"] <= self.retries:
                out.append(cid)
        return out

    def summary(self) -> ManifestSummary:
        counts = {s: 0 for s in STATUSES}
        failed, empty = {}, {}
        for cid in self._data["order"]:
            rec = self._data["cells"][cid]
            counts[rec["status"]] += 1
            if rec["status"] == "failed":
                failed[cid] = rec["reason"] or "unknown error"
            elif rec["status"] == "empty":
                empty[cid] = rec["reason"] or "no data"
        return ManifestSummary(total=len(self), counts=counts, failed=failed, empty=empty)

    def timings(self) -> dict[str, float]:
        """Seconds per stage summed over finished cells (for throughput reports)."""
        tot: dict[str, float] = {}
        for rec in self._data["cells"].values():
            if rec["status"] in FINISHED:
                for k, v in rec["timings"].items():
                    tot[k] = tot.get(k, 0.0) + float(v)
        return tot

    # -- updates (each one written atomically) -------------------------------------------------
    def mark_running(self, cell_id: str) -> None:
        rec = self._rec(cell_id)
        if rec["status"] in FINISHED:
            raise ManifestError(f"cell {cell_id} is already {rec['status']}: it is not run again")
        rec.update(status="running", started_at=_now())
        self._write()

    def mark_done(
        self, cell_id: str, outputs: dict[str, str] | None = None, timings: dict[str, float] | None = None
    ) -> None:
        self._finish(cell_id, "done", None, outputs, timings)

    def mark_empty(self, cell_id: str, reason: str, timings: dict[str, float] | None = None) -> None:
        """No imagery, or fully clouded: a result (nothing to map), not a failure."""
        self._finish(cell_id, "empty", str(reason), None, timings)

    def mark_failed(self, cell_id: str, error: str | BaseException, timings: dict[str, float] | None = None) -> bool:
        """Record a failed attempt; returns True if the cell will be retried (it is in todo())."""
        reason = _error_text(error)
        rec = self._rec(cell_id)
        rec["errors"] = (rec.get("errors", []) + [reason])[-_KEEP_ERRORS:]
        self._finish(cell_id, "failed", reason, None, timings)
        return rec["attempts"] <= self.retries

    @contextmanager
    def timed(self, timings: dict[str, float], stage: str):
        """``with manifest.timed(t, "search"): ...`` adds the stage's seconds to ``t``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0

    def _finish(self, cell_id: str, status: str, reason: str | None, outputs, timings) -> None:
        rec = self._rec(cell_id)
        rec["status"] = status
        rec["reason"] = reason
        rec["attempts"] += 1
        rec["total_attempts"] = rec.get("total_attempts", 0) + 1
        if outputs is not None:
            rec["outputs"] = {str(k): str(v) for k, v in outputs.items()}
        if timings is not None:
            rec["timings"] = {str(k): round(float(v), 4) for k, v in timings.items()}
        rec["finished_at"] = _now()
        self._write()

    def _rec(self, cell_id: str) -> dict[str, Any]:
        try:
            return self._data["cells"][cell_id]
        except KeyError:
            raise ManifestError(f"cell {cell_id!r} is not in {self.path}") from None


def _error_text(error: str | BaseException) -> str:
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= 2000 else text[:2000] + "..."


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
