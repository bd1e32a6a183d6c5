"""The example cluster definitions shipped with the package (``examples/*.yaml``, one per kind, each
documenting itself): a bare name such as ``local`` or ``slurm`` stands for one wherever a
definition file is expected. Kept apart from the validation, so ``--help`` lists them cheaply."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EXAMPLES", "example_names", "resolve_cluster"]

#: The folder of the shipped examples.
EXAMPLES = Path(__file__).with_name("examples")


def example_names() -> list[str]:
    """The names of the example definitions shipped with the package (``local``, ``slurm``, ...)."""
    return sorted(p.stem for p in EXAMPLES.glob("*.yaml"))


def resolve_cluster(ref: str | os.PathLike) -> Path:
    """The file a cluster reference means: a bare example name (no folder, no suffix) is the shipped
    example of that name, anything else a path as given."""
    text = os.fspath(ref)
    if text in example_names() and not Path(text).suffix and os.sep not in text and "/" not in text:
        return EXAMPLES / f"{text}.yaml"
    return Path(text)
