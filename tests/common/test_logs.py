"""Logs a person can read: no redrawn bars in a file, distributed's unactionable warnings rewritten."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

from landslide_dask.common.logs import install_filters, interactive, progress_bar, quiet_distributed


def test_progress_is_silent_when_stderr_is_a_file_and_draws_on_a_terminal(capsys):
    assert not interactive(io.StringIO())
    for _ in progress_bar(range(50), desc="epoch 1/2", mininterval=0):
        pass
    assert "\r" not in capsys.readouterr().err  # pytest's capture is a file, not a terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    assert interactive(tty)
    for _ in progress_bar(range(5), desc="epoch", file=tty, mininterval=0):
        pass
    assert "epoch" in tty.getvalue() and "\r" in tty.getvalue()


def test_the_demo_log_in_a_file_has_no_carriage_returns(tmp_path):
    # a worker-side training bar: stderr is the file the user redirected to
    code = (
        "from landslide_dask.common.logs import progress_bar\n"
        "for _ in progress_bar(range(200), desc='epoch 1/10', mininterval=0): pass\n"
        "print('[train] epoch 1/10 done')\n"
    )
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, check=True)
    assert log.read_text() == "[train] epoch 1/10 done\n"


def _records(name: str, message: str) -> list[str]:
    install_filters()
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    log = logging.getLogger(name)
    h = Keep()
    log.addHandler(h)
    try:
        log.warning(message)
    finally:
        log.removeHandler(h)
    return got


def test_unactionable_warnings_are_rewritten_and_the_rest_pass_unchanged():
    assert (
        _records(
            "distributed.worker.state_machine",
            "Async instruction for <Task cancelled name=\"execute('ddp-rank-1')\"> ended with CancelledError",
        )
        == []
    )
    nanny = _records("distributed.nanny", "Worker process still alive after 4.0 seconds, killing")
    assert len(nanny) == 1 and "did not stop in time" in nanny[0] and "it was ended" in nanny[0]
    other = "Worker is at 85% memory usage. Pausing worker."
    assert _records("distributed.worker", other) == [other]  # warnings that matter still reach the user


def test_the_rewrites_reach_every_worker_including_replacements(client):
    quiet_distributed(client)

    def has_filter() -> bool:
        from landslide_dask.common.logs import _Rewrite

        return any(isinstance(f, _Rewrite) for f in logging.getLogger("distributed.worker.state_machine").filters)

    assert all(client.run(has_filter).values())
    client.restart_workers(sorted(client.run(has_filter)))  # fresh processes get the plugin too
    client.wait_for_workers(2, timeout=60)
    assert all(client.run(has_filter).values())


class _SlowToClose:
    """A worker plugin whose teardown takes 6 s: a worker that needs longer than distributed's 4 s."""

    name = "slow-to-close"

    def setup(self, worker) -> None:
        pass

    def teardown(self, worker) -> None:
        import time

        time.sleep(6)


def test_a_local_cluster_gives_its_workers_time_to_stop_instead_of_killing_them(caplog):
    from distributed import Client
    from distributed.diagnostics.plugin import WorkerPlugin

    from landslide_dask.clusters.start import local_cluster

    plugin = type("SlowToClose", (_SlowToClose, WorkerPlugin), {})()
    with caplog.at_level(logging.WARNING, logger="distributed.nanny"):
        with local_cluster(1) as cluster, Client(cluster) as c:
            c.register_plugin(plugin)
            nanny = next(iter(cluster.workers.values()))
            proc = nanny.process.process
    killed = [
        r.getMessage() for r in caplog.records if "still alive" in r.getMessage() or "did not stop" in r.getMessage()
    ]
    assert not killed, killed
    assert proc.exitcode == 0  # it stopped by itself
