"""Who may use a cluster this package starts: mutual TLS with a key and certificate made for one run.

A Dask scheduler on plain TCP runs whatever any client that reaches its port sends it, as the user
who started it; on a shared login node or laptop that is every local user. So every cluster the
package starts (local, gpu-node, SLURM) listens on ``tls://`` with a fresh self-signed certificate
(distributed's ``Security.temporary()``): the scheduler, its workers and the run's client present
it and accept nothing else, and a client without it is refused in the TLS handshake. Plain TCP only
when asked: ``tls: false`` in a cluster definition, ``--insecure`` on the command line.

On one machine the credentials stay in memory (each worker process gets them from its nanny).
SLURM workers start on other nodes and read them from files: :func:`write_credentials` puts them in
a new folder only the owner can open (0700, the files 0600), on a file system the nodes share, and
the cluster removes it when it closes. :func:`credentials_from_files` is the other side: Security
for a process that joins a ``tls://`` cluster it did not start, from the owner's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MissingDependencyError, UsageError

if TYPE_CHECKING:
    from distributed.security import Security

__all__ = ["TLS", "CredentialFiles", "credentials_from_files", "needs_credentials", "run_security", "write_credentials"]

#: The address scheme of a cluster with TLS.
TLS = "tls://"


def run_security() -> Security:
    """A key and self-signed certificate made for this run, held in memory: every role presents it
    and trusts nothing else, so only this process (and the workers it starts) can join."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as e:
        raise MissingDependencyError(
            "a cluster with TLS needs the cryptography package to make its certificate: pip install cryptography "
            "(or ask for plain TCP: tls: false in the cluster definition, --insecure on the command line)"
        ) from e


@dataclass(frozen=True)
class CredentialFiles:
    """The run's CA, certificate and key as PEM files in their own private folder."""

    folder: Path
    ca: Path
    cert: Path
    key: Path

    def security(self) -> Security:
        """Security reading these files, for every role (scheduler, worker, client)."""
        return credentials_from_files(self.ca, self.cert, self.key)

    def remove(self) -> None:
        """Delete the folder and the files: the cluster they let in is gone."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _pem(value: str | None, what: str) -> str:
    """PEM text of a Security field, which holds either the text itself or a file name."""
    if not value:
        raise UsageError(f"the cluster's security has no {what} to write")
    return value if "\n" in value else Path(value).read_text()


def write_credentials(security: Security, parent: str | os.PathLike) -> CredentialFiles:
    """Write the worker role's CA, certificate and key of ``security`` into a new folder under
    ``parent`` that only this user can open (0700; each file 0600, created, never overwritten)."""
    base = Path(os.path.expandvars(os.fspath(parent))).expanduser()
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".landslide-dask-tls-", dir=base))  # mode 0700
    tls = security.get_tls_config_for_role("worker")
    paths = {}
    try:
        for name, value, what in (
            ("ca.pem", tls["ca_file"], "CA"),
            ("cert.pem", tls["cert"], "certificate"),
            ("key.pem", tls["key"] or tls["cert"], "key"),
        ):
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(_pem(value, what))
            paths[name] = path
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return CredentialFiles(folder, paths["ca.pem"], paths["cert.pem"], paths["key.pem"])


def credentials_from_files(
    ca: str | os.PathLike, cert: str | os.PathLike, key: str | os.PathLike | None = None
) -> Security:
    """Security from PEM files (the CA, this side's certificate and its key; the key may be in the
    certificate file), for every role; names a file that cannot be read."""
    from distributed.security import Security

    given = {"--tls-ca-file": ca, "--tls-cert": cert, "--tls-key": key}
    for flag, path in given.items():
        if path is not None and not os.access(path, os.R_OK):
            raise UsageError(f"{flag} {path}: no such file, or not readable by this user")
    files = {
        role: {f"tls_{role}_cert": os.fspath(cert), f"tls_{role}_key": os.fspath(key) if key else None}
        for role in ("client", "scheduler", "worker")
    }
    return Security(
        tls_ca_file=os.fspath(ca), require_encryption=True, **{k: v for role in files.values() for k, v in role.items()}
    )


def needs_credentials(address: str, security: Security | None) -> str | None:
    """Why a client cannot connect to ``address`` with ``security`` (None: from distributed's
    configuration), or None when it has what TLS asks for (or the address is not TLS)."""
    if not address.startswith(TLS):
        return None
    if security is None:
        from distributed.security import Security

        security = Security()
    tls = security.get_tls_config_for_role("client")
    if tls.get("ca_file") and tls.get("cert"):
        return None
    return (
        f"the scheduler at {address} speaks TLS and lets in only clients with its cluster's certificate: give "
        "the files its owner wrote (--tls-ca-file, --tls-cert, --tls-key; or distributed.comm.tls.ca-file, "
        "distributed.comm.tls.client.cert and .key in the Dask configuration)"
    )
