"""What a person reads: progress bars only on a terminal, and distributed's own warnings that
nobody can act on replaced by one line that says what happened and what the program does.

Why a filter rather than raising distributed's log levels: the same loggers also carry warnings
that matter (a worker out of memory, a lost scheduler), which must still reach the user.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import NannyPlugin, WorkerPlugin

__all__ = ["interactive", "progress_bar", "quiet_distributed"]


def interactive(stream=None) -> bool:
    """True when ``stream`` (default stderr, where bars draw) is a terminal, not a file or a pipe."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable: Iterable | None = None, **kw: Any):
    """A tqdm bar when its stream (``file``, default stderr) is a terminal; on a file or a pipe the
    same object, silent (callers print one line per epoch or stage instead of ``\\r`` redraws)."""
    from tqdm import tqdm

    kw.setdefault("disable", not interactive(kw.get("file")))
    return tqdm(iterable, **kw)


# logger -> (substring of the message, what to say instead, or None to drop it)
_REWRITES: dict[str, tuple[tuple[str, str | None], ...]] = {
    # a task this program cancelled on purpose (a stopped rank, a dropped probe): said by our own line
    "distributed.worker.state_machine": (("ended with CancelledError", None),),
    "distributed.worker": (("ended with CancelledError", None),),
    "distributed.nanny": (
        (
            "still alive after",
            "a worker process did not stop in time (something was still running in it): "
            "it was ended (a running cluster's nanny starts a fresh one)",
        ),
    ),
}


class _Rewrite(logging.Filter):
    """Drops or rewrites the records of one logger whose message holds a known phrase."""

    def __init__(self, rules: tuple[tuple[str, str | None], ...]):
        super().__init__()
        self.rules = rules

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for phrase, instead in self.rules:
            if phrase in text:
                if instead is None:
                    return False
                record.msg, record.args = instead, ()
                return True
        return True


def install_filters() -> None:
    """Install the rewrites in this process (once per logger)."""
    for name, rules in _REWRITES.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _Rewrite) for f in log.filters):
            log.addFilter(_Rewrite(rules))


class _WorkerFilters(WorkerPlugin):
    """The same rewrites in every worker process, including those a nanny starts later (the
    scheduler hands registered plugins to new workers)."""

    name = "landslide-dask-log-filters"

    def setup(self, worker: Any) -> None:
        install_filters()


class _NannyFilters(NannyPlugin):
    """And in every nanny process (the nanny is what says it is killing a worker)."""

    name = "landslide-dask-log-filters-nanny"

    def setup(self, nanny: Any) -> None:
        install_filters()


def quiet_distributed(client=None) -> None:
    """Rewrite distributed's unactionable warnings here and, with ``client``, on its workers and nannies."""
    install_filters()
    if client is None:
        return
    try:
        client.register_plugin(_WorkerFilters())
        client.register_plugin(_NannyFilters())
    except Exception as exc:  # noqa: BLE001 - log hygiene must never stop a run
        logging.getLogger(__name__).debug("log filters not installed on the workers: %s", exc)
