"""Clusters that let no one in: a cluster the package starts speaks TLS with the run's own
certificate. Another process without it -- another user of the machine who found the port -- is
refused in the handshake, whatever it tries; the same process given the run's credential files
connects. The credential files are private; a ``tls://`` scheduler needs them to be joined."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from landslide_dask.clusters.security import credentials_from_files, run_security, write_credentials
from landslide_dask.clusters.start import start_cluster
from landslide_dask.common.workers import n_workers
from landslide_dask.errors import ClusterStartError, UsageError

LOCAL = {"workers": 1, "options": {"dashboard_address": "127.0.0.1:0", "memory_limit": "2GB"}}

# Tries every way in and records, per attempt, whether it got a client that ran code (it writes a
# marker file if it ever does). argv: address, marker, then the CA, certificate and key files (or
# nothing, for an outsider).
_VISITOR = textwrap.dedent("""
    import json, sys, time
    from distributed import Client
    from distributed.security import Security

    address, marker, files = sys.argv[1], sys.argv[2], sys.argv[3:]

    def attempt(name, addr, security):
        t0 = time.monotonic()
        try:
            with Client(addr, timeout=3, security=security) as c:
                c.submit(lambda: open(marker + "." + name, "w").write("ran"), pure=False).result(timeout=30)
            return {"case": name, "connected": True, "seconds": time.monotonic() - t0}
        except Exception as e:
            return {"case": name, "connected": False, "error": f"{type(e).__name__}: {e}"[:300],
                    "seconds": time.monotonic() - t0}

    if files:
        ca, cert, key = files
        cases = [("owner", address, Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                                            require_encryption=True))]
    else:
        own = Security.temporary()
        server_ca = open(sys.argv[0] + ".ca").read()   # what anyone may learn: the cluster's public certificate
        cases = [
            ("own-certificate", address, own),
            ("trusts-the-cluster-ca", address, Security(tls_ca_file=server_ca, tls_client_cert=own.tls_client_cert,
                                                        tls_client_key=own.tls_client_key, require_encryption=True)),
            ("plain-tcp", address.replace("tls://", "tcp://"), None),
        ]
    print(json.dumps([attempt(*c) for c in cases]))
""")


def _visit(tmp_path: Path, address: str, files: list[str], ca_text: str) -> list[dict]:
    script = tmp_path / "visitor.py"
    script.write_text(_VISITOR)
    (tmp_path / "visitor.py.ca").write_text(ca_text)
    out = subprocess.run(
        [sys.executable, str(script), address, str(tmp_path / "ran"), *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_client_without_the_runs_certificate_cannot_connect(tmp_path):
    with start_cluster("local", overrides=LOCAL, echo=None) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        security = client.cluster.security
        outsider = _visit(tmp_path, address, [], security.tls_ca_file)
        creds = write_credentials(security, tmp_path / "creds")
        owner = _visit(tmp_path, address, [str(creds.ca), str(creds.cert), str(creds.key)], security.tls_ca_file)
        assert n_workers(client) == 1  # the cluster is unharmed and still works for its owner
        assert client.submit(sum, [1, 2]).result() == 3
    assert [a["case"] for a in outsider] == ["own-certificate", "trusts-the-cluster-ca", "plain-tcp"]
    for a in outsider:
        assert not a["connected"], a
        assert a["seconds"] < 10, a  # refused in the handshake, not left to time out
        assert not (tmp_path / f"ran.{a['case']}").exists()
    assert owner == [{"case": "owner", "connected": True, "seconds": owner[0]["seconds"]}]
    assert (tmp_path / "ran.owner").read_text() == "ran"  # the same script, with the files, runs code


def test_credential_files_are_private_and_removed(tmp_path):
    creds = write_credentials(run_security(), tmp_path / "shared")
    assert creds.folder.parent == tmp_path / "shared"
    assert stat.S_IMODE(creds.folder.stat().st_mode) == 0o700
    for f in (creds.ca, creds.cert, creds.key):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert f.read_text().startswith("-----BEGIN")
    assert "PRIVATE KEY" in creds.key.read_text() and "CERTIFICATE" in creds.cert.read_text()
    sec = creds.security()
    assert sec.require_encryption and sec.get_tls_config_for_role("worker")["key"] == str(creds.key)
    again = write_credentials(sec, tmp_path / "shared")  # from files too, into a folder of its own
    assert again.folder != creds.folder and again.key.read_text() == creds.key.read_text()
    creds.remove()
    assert not creds.folder.exists() and again.folder.exists()
    with pytest.raises(UsageError, match="--tls-cert .*cert.pem: no such file"):
        credentials_from_files(again.ca, creds.cert, again.key)


def test_joining_a_tls_scheduler_needs_its_credentials(tmp_path):
    from landslide_dask.clusters.start import local_cluster

    with local_cluster(1) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        t0 = time.monotonic()
        with (
            pytest.raises(ClusterStartError, match=r"speaks TLS .*--tls-ca-file, --tls-cert, --tls-key"),
            start_cluster(scheduler=address, timeout=5, echo=None),
        ):
            pass
        with (
            pytest.raises(ClusterStartError, match="cannot connect .* certificate files are the cluster's"),
            start_cluster(scheduler=address, security=run_security(), timeout=5, echo=None),
        ):
            pass
        assert time.monotonic() - t0 < 20
        creds = write_credentials(cluster.security, tmp_path)
        with start_cluster(scheduler=address, security=creds.security(), echo=None) as client:
            assert client.submit(sum, [2, 3]).result() == 5
        assert cluster.status.name == "running" and len(cluster.workers) == 1  # joined, never torn down


def test_cli_takes_the_credentials_of_a_running_cluster(tmp_path):
    from landslide_dask.cli import build_parser
    from landslide_dask.cli.options import scheduler_security

    creds = write_credentials(run_security(), tmp_path)
    common = ["predict", "--model", "m.pt", "--cube", "c.zarr", "--out", "o.zarr"]
    parse = build_parser().parse_args
    sec = scheduler_security(
        parse(
            [
                *common,
                "--scheduler",
                "tls://127.0.0.1:1",
                "--tls-ca-file",
                str(creds.ca),
                "--tls-cert",
                str(creds.cert),
                "--tls-key",
                str(creds.key),
            ]
        )
    )
    assert sec.get_tls_config_for_role("client") == {
        "ca_file": str(creds.ca),
        "ciphers": None,
        "cert": str(creds.cert),
        "key": str(creds.key),
    }
    assert scheduler_security(parse([*common, "--scheduler", "tls://127.0.0.1:1"])) is None  # Dask's config
    for bad, says in (
        (["--tls-cert", str(creds.cert)], "credentials of a running cluster"),
        (["--scheduler", "tls://h:1", "--tls-cert", str(creds.cert)], "give --tls-ca-file"),
        (["--scheduler", "tls://h:1", "--insecure"], "the address says"),
    ):
        with pytest.raises(UsageError, match=says):
            scheduler_security(parse([*common, *bad]))
