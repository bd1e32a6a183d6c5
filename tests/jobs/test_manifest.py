"""The manifest: atomic updates, resume, retries then a report, one fingerprint per manifest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import landslide_dask.jobs.manifest as mf
from landslide_dask.jobs.manifest import Manifest, ManifestError

IDS = [f"32645_{c:04d}_{r:04d}" for c in range(3) for r in range(2)]  # 6 cells
FP = "a" * 64


def _open(path, fp=FP, ids=IDS, **kw) -> Manifest:
    return Manifest.create_or_open(path, fp, ids, **kw)


def test_create_and_record(tmp_path):
    path = tmp_path / "out" / "manifest.json"
    with _open(path, retries=2, meta={"name": "job"}) as m:
        assert m.todo() == IDS and m.fingerprint == FP and m.retries == 2 and len(m) == 6
        m.mark_running(IDS[0])
        assert m.status(IDS[0]) == "running"
        timings: dict[str, float] = {}
        with m.timed(timings, "search"):
            pass
        m.mark_done(IDS[0], outputs={"probability": "cells/x/prob.zarr"}, timings=timings | {"cube": 2.5})
        m.mark_empty(IDS[1], "no imagery in the post-event window")
    data = json.loads(path.read_text())  # plain JSON, readable by anyone
    rec = data["cells"][IDS[0]]
    assert rec["status"] == "done" and rec["attempts"] == 1 and rec["finished_at"]
    assert rec["outputs"] == {"probability": "cells/x/prob.zarr"} and set(rec["timings"]) == {"search", "cube"}
    assert data["cells"][IDS[1]]["reason"] == "no imagery in the post-event window"
    assert data["meta"] == {"name": "job"}
    m2 = Manifest(path)  # read-only view
    assert m2.todo() == IDS[2:]
    assert m2.timings()["cube"] == 2.5
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind


def test_resume_returns_only_unfinished(tmp_path):
    path = tmp_path / "manifest.json"
    with _open(path) as m:
        m.mark_done(IDS[0])
        m.mark_empty(IDS[1], "fully clouded")
        m.mark_running(IDS[2])  # the process dies here
    with _open(path) as m:  # rerun of the same job
        assert m.todo() == IDS[2:]  # interrupted cell is redone, finished are not
        assert m.status(IDS[2]) == "pending" and m.record(IDS[2])["attempts"] == 0
        with pytest.raises(ManifestError, match="already done"):
            m.mark_running(IDS[0])
        assert m._data["runs"] == 2


def test_failed_cells_retried_then_reported(tmp_path):
    path = tmp_path / "manifest.json"
    with _open(path, retries=2) as m:
        bad = IDS[3]
        for attempt in range(1, 4):  # 1 try + 2 retries
            assert bad in m.todo()
            m.mark_running(bad)
            again = m.mark_failed(bad, TimeoutError(f"STAC search timed out (attempt {attempt})"))
            assert again == (attempt < 3)
        assert bad not in m.todo()
        for cid in m.todo():
            m.mark_done(cid)
        s = m.summary()
        assert (s.done, s.n_empty, s.n_failed, s.unfinished) == (5, 0, 1, 0) and not s.ok
        assert s.failed == {bad: "TimeoutError: STAC search timed out (attempt 3)"}
        assert "FAILED " + bad in str(s) and "1 failed" in str(s)
        rec = m.record(bad)
        assert rec["attempts"] == 3 and len(rec["errors"]) == 3
    with _open(path, retries=2) as m:  # a rerun gives the failed cell a new budget
        assert m.todo() == [IDS[3]]
        m.mark_done(IDS[3])
        assert m.summary().ok and m.record(IDS[3])["total_attempts"] == 4


def test_retries_zero(tmp_path):
    with _open(tmp_path / "m.json", retries=0) as m:
        assert m.mark_failed(IDS[0], "boom") is False
        assert IDS[0] not in m.todo()


def test_empty_is_not_failure(tmp_path):
    with _open(tmp_path / "m.json") as m:
        for cid in IDS:
            m.mark_empty(cid, "no imagery")
        s = m.summary()
        assert s.ok and s.n_empty == 6 and m.todo() == []
        assert "6 x no imagery" in str(s)


def test_fingerprint_mismatch_refused_then_forced(tmp_path):
    path = tmp_path / "manifest.json"
    with _open(path) as m:
        m.mark_done(IDS[0])
    with pytest.raises(ManifestError) as ei:
        _open(path, fp="b" * 64)
    text = str(ei.value)
    assert "another configuration" in text and "new output location" in text and "--force" in text
    assert Manifest(path).fingerprint == FP  # untouched
    with pytest.raises(ManifestError, match="cells"):
        _open(path, ids=IDS[:3])
    with _open(path, fp="b" * 64, force=True) as m:
        assert m.fingerprint == "b" * 64 and m.todo() == IDS
    assert len(list(tmp_path.glob("manifest.json.replaced-*"))) == 1


def test_crash_between_tmp_write_and_replace_keeps_old_manifest(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    m = _open(path)
    m.mark_done(IDS[0])
    before = path.read_bytes()

    def killed(src, dst):  # the process dies before the rename
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(mf.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        m.mark_done(IDS[1])
    monkeypatch.undo()
    m.close()
    assert path.read_bytes() == before  # the old manifest is intact and readable
    assert Manifest(path).todo() == IDS[1:]
    # a temp file left by a real crash (no cleanup ran) is ignored and removed on the next open
    stale = tmp_path / ".manifest.tmp-99999-1.json"  # a writer that died (common.files.temp_sibling)
    stale.write_text('{"trunc')
    with _open(path) as m2:
        assert m2.todo() == IDS[1:]
    assert not stale.exists()


_CHILD = """
import os, sys
import landslide_dask.jobs.manifest as mf
m = mf.Manifest.create_or_open(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
m.mark_done(sys.argv[3].split(",")[0])
def die(src, dst):
    os._exit(9)          # like SIGKILL between the temp write and the rename: no cleanup at all
mf.os.replace = die
m.mark_done(sys.argv[3].split(",")[1])
"""


def test_killed_process_leaves_readable_manifest(tmp_path):
    path = tmp_path / "manifest.json"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), FP, ",".join(IDS)], timeout=60, capture_output=True, text=True
    )
    assert proc.returncode == 9, proc.stderr
    assert list(tmp_path.glob(".manifest.tmp-*.json"))  # it died with the new version unrenamed
    with _open(path) as m:  # the lock died with the process
        assert m.status(IDS[0]) == "done" and m.todo() == IDS[1:]


def test_second_driver_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    with _open(path), pytest.raises(ManifestError, match="in use by another run"):
        _open(path)
    with _open(path):  # released on close
        pass


def test_corrupt_and_foreign_files(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        _open(path)
    path.write_text('{"hello": 1}')
    with pytest.raises(ManifestError, match="not a landslide-dask manifest"):
        Manifest(path)
    with pytest.raises(ManifestError, match="no manifest"):
        Manifest(tmp_path / "missing.json")
    with _open(tmp_path / "ok.json") as m:
        with pytest.raises(ManifestError, match="not in"):
            m.mark_done("32645_9999_9999")


def test_mirror_hooks_see_every_write_and_can_supply_the_manifest(tmp_path):
    """What a job with an object-storage output relies on: before_read may put the remote copy in
    place before the manifest is read, and on_write sees every state the file goes through."""
    mirror: dict[str, str] = {}  # a stand-in for the remote: name -> JSON text
    seen: list[tuple[str, str]] = []

    def push(path):
        text = path.read_text()
        json.loads(text)  # always a whole, valid manifest
        mirror[path.name] = text
        seen.append((path.name, json.loads(text)["cells"][IDS[0]]["status"]))

    def pull(path):
        if "manifest.json" in mirror:
            path.write_text(mirror["manifest.json"])
        else:
            path.unlink(missing_ok=True)

    local = tmp_path / "scratch" / "manifest.json"
    with _open(local, before_read=pull, on_write=push) as m:
        m.mark_running(IDS[0])
        m.mark_done(IDS[0], outputs={"cog": "s3://b/job/cells/x/probability.tif"})
    assert [s for _, s in seen] == ["pending", "running", "done"]
    assert mirror["manifest.json"] == local.read_text()

    # another machine (an empty scratch folder) resumes from the mirror alone
    other = tmp_path / "elsewhere" / "manifest.json"
    with _open(other, before_read=pull, on_write=push) as m:
        assert m.status(IDS[0]) == "done" and m.todo() == IDS[1:] and m._data["runs"] == 2
    # a stale local manifest is replaced by the mirror's (the mirror is the truth)
    local.write_text(local.read_text().replace('"done"', '"pending"'))
    with _open(local, before_read=pull) as m:
        assert m.status(IDS[0]) == "done"

    # --force: the backup is mirrored too
    seen.clear()
    with _open(other, fp="b" * 64, force=True, before_read=pull, on_write=push) as m:
        assert m.todo() == IDS
    names = [n for n, _ in seen]
    assert names[0].startswith("manifest.json.replaced-") and names[-1] == "manifest.json"
    assert (
        json.loads(mirror[names[0]])["fingerprint"] == FP
        and json.loads(mirror["manifest.json"])["fingerprint"] == "b" * 64
    )


def test_a_failing_mirror_stops_the_job_with_its_error(tmp_path):
    calls = []

    def broken(path):
        calls.append(path.name)
        if len(calls) > 1:
            raise OSError("the object store is down")

    path = tmp_path / "manifest.json"
    with _open(path, on_write=broken) as m, pytest.raises(OSError, match="store is down"):
        m.mark_done(IDS[0])  # the first write (on opening) was mirrored
    assert json.loads(path.read_text())["cells"][IDS[0]]["status"] == "done"  # the local file is written first
    with pytest.raises(OSError, match="store is down"):
        _open(path, on_write=broken)  # opening writes, so it fails too ...
    with _open(path) as m:  # ... and releases the lock
        assert m.status(IDS[0]) == "done"
