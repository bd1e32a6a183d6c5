"""Every error the package raises on purpose, in one place: each says what went wrong, on which
file, item or argument, and what to do.

Two families, two exit codes of the ``landslide-dask`` command:

* :class:`UsageError` (exit 2, printed like argparse's own errors): the *arguments* are wrong —
  a malformed ``--bbox``, a window that is not a multiple of the model's input, options that
  exclude each other. Nothing was read or written.
* everything else (exit 1): the *data* or the *environment* is wrong — a corrupt or missing file
  (the message names it), an empty search, an unreachable server, a cluster that did not start,
  a distributed run that failed. Outputs already written stay resumable.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXIT_USAGE",
    "EXIT_DATA",
    "LandslideDaskError",
    "UsageError",
    "InputDataError",
    "EmptySearchError",
    "StacUnreachableError",
    "SpecError",
    "JobSpecError",
    "ClusterSpecError",
    "StorageError",
    "ManifestError",
    "CountryJobError",
    "ClusterStartError",
    "MissingDependencyError",
    "DistributedTrainingError",
]

EXIT_USAGE = 2
EXIT_DATA = 1


class LandslideDaskError(Exception):
    """Base class; the CLI prints these as one clear message and exits with ``exit_code``."""

    exit_code = EXIT_DATA


class UsageError(LandslideDaskError, ValueError):
    """An argument (CLI flag or function parameter) that cannot be used: exit 2."""

    exit_code = EXIT_USAGE


class InputDataError(LandslideDaskError):
    """An input file or STAC asset is missing, corrupt, or inconsistent (the message names it)."""


class EmptySearchError(InputDataError):
    """A STAC search matched nothing."""


class StacUnreachableError(LandslideDaskError):
    """The STAC API did not answer."""


class SpecError(InputDataError):
    """A YAML definition (job spec, cluster definition) that cannot be used: every problem at once.

    ``problems``: ``(dotted field path, message)`` pairs, the path empty for the whole file."""

    kind = "spec"

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        n = len(self.problems)
        lines = "\n".join(f"  - {path}: {msg}" if path else f"  - {msg}" for path, msg in self.problems)
        super().__init__(f"{self.kind} {source} has {n} problem{'s' if n > 1 else ''}:\n{lines}")

    def fields(self) -> list[str]:
        """The dotted paths of the problems, in order."""
        return [p for p, _ in self.problems]


class JobSpecError(SpecError):
    """A job spec that cannot be used."""

    kind = "job spec"


class ClusterSpecError(SpecError):
    """A cluster definition that cannot be used."""

    kind = "cluster definition"


class StorageError(LandslideDaskError):
    """A remote location that cannot be used: backend missing, bucket unknown, access denied..."""


class ManifestError(LandslideDaskError):
    """The manifest cannot be used for this job (other fingerprint, corrupt, locked...)."""


class CountryJobError(LandslideDaskError):
    """The job cannot run as asked (e.g. an output location this runner does not support)."""


class ClusterStartError(LandslideDaskError):
    """A cluster could not start, or its workers did not arrive: says what to check. It is closed."""


class MissingDependencyError(LandslideDaskError, ImportError):
    """The package a cluster kind needs is not installed: names the pip extra that brings it."""


class DistributedTrainingError(LandslideDaskError):
    """A distributed run failed: names the rank and worker at fault and the original error.

    ``failures``: one ``train.ddp.RankFailure`` per rank that failed, the cause first."""

    def __init__(self, message: str, failures: list[Any] | None = None):
        super().__init__(message)
        self.failures = list(failures or [])

    @property
    def primary(self) -> Any | None:
        """The failure judged to be the cause (the others are usually its consequences)."""
        return self.failures[0] if self.failures else None
