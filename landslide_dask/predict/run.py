"""Mapping a region: the windows of :mod:`.windows` through the model of :mod:`.engine`,
blended into output chunks and written to the store of :mod:`.store`.

* **Output chunks** follow the cube's chunks: each sums ``p * w`` and ``w`` of the windows that
  overlap it (in window order, so the float sum does not depend on the chunking), divides, sets
  0 where ``valid`` is False and writes ``round(p * 255)`` as uint8 — one aligned write per chunk.
* **Streaming, strip by strip** (:func:`_stream`): batches are submitted in row-major order for
  the output chunk rows up to a small lookahead past the first unfinished one (enough to keep
  twice as many batches in flight as there are threads); a chunk is written as soon as the
  batches it overlaps are done, and a window result is released when the last chunk needing it
  is written. The same driver runs on this process's threads or on a ``distributed.Client``
  (futures: window results move only from the worker that computed them to the one writing).
  Handing dask the whole graph instead let ``dask.order`` start windows all over the region, and
  the results held grew with it (a test counts them).
* **Memory** per process: the decoded-chunk cache (``reader.PROCESS_CACHE``), ``threads x batch_size``
  windows in the model, and the window results of a strip of chunk rows across the region: it
  does not grow with the region's height (nor with its area, for a given width).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from ..common.workers import total_threads
from ..errors import InputDataError, UsageError
from ..train.checkpoint import contract
from . import engine, store
from .engine import Plan
from .windows import blend_weights, chunk_bounds, chunk_grid, contributions

log = logging.getLogger(__name__)

__all__ = ["predict", "lazy_probability"]


def predict(
    cube: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    client=None,
    window: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    threshold_rule: str = "auto",
) -> Path:
    """Map landslide probability over a cube with blended overlapping windows; resumable.

    ``client``: a ``distributed.Client`` (else dask's local threaded scheduler with up to 4
    threads). ``window``, ``overlap``: pixels, multiples of the model's input multiple;
    defaults ``DEFAULT_WINDOW`` and ``DEFAULT_OVERLAP``. ``batch_size``: windows per forward pass
    (None: :func:`default_batch_size` of the device the workers use).
    ``device``: ``"cpu"``, ``"cuda"``...; None picks CUDA on workers that have it. An existing
    ``out`` made with the same arguments is resumed (finished chunks are skipped); with other
    arguments it is an error unless ``overwrite``. ``threshold_rule``: how the map's ``threshold``
    attribute is chosen (:mod:`.thresholds`: ``auto`` takes the label-free scene rule for a
    region the model never trained on, its validation threshold otherwise). Returns ``out``; open it with
    :func:`open_prediction`. Output: the prediction contract of ``docs/contracts.md``.
    """
    from .thresholds import RULES

    if threshold_rule not in RULES:
        raise UsageError(f"unknown threshold rule {threshold_rule!r}: use one of {', '.join(RULES)}")
    out = Path(out).resolve()
    threads = engine.local_threads(device)
    if batch_size is None and device is None and client is not None:
        batch_size = engine.default_batch_size("cuda" if any(client.run(engine.has_cuda).values()) else "cpu")
    plan, batches, run, extra = engine.prepare(
        cube, model, window=window, overlap=overlap, batch_size=batch_size, device=device, threads=threads
    )
    if client is not None:
        plan = dataclasses.replace(plan, worker_threads=engine.worker_threads(client))
    if overwrite or not out.exists():
        _check_any_valid(plan)  # before anything is created or replaced
    state = store.open_existing(out, run, overwrite)
    grid = chunk_grid(plan.shape, plan.chunks)
    if state == "complete":
        log.info("%s is already complete", out)
        _set_threshold(out, plan, extra, threshold_rule)
        return out
    if state == "new":
        store.create_output(out, plan, run, store.prediction_attrs(plan, extra, run))
    done = store.done_chunks(out)
    todo = [ij for ij in grid if ij not in done]
    if done:
        log.info("resuming %s: %d of %d chunks already done", out, len(done), len(grid))
    bar = None
    if progress:
        from ..common.logs import progress_bar

        bar = progress_bar(
            total=len(grid), initial=len(grid) - len(todo), desc="predict", unit="chunk", mininterval=1.0
        )
    try:
        if client is not None:
            _stream(plan, batches, todo, str(out), _DistributedPool(client), bar)
        else:
            with _ThreadPool(threads) as pool:
                _stream(plan, batches, todo, str(out), pool, bar)
    finally:
        if bar is not None:
            bar.close()
    missing = [ij for ij in grid if ij not in store.done_chunks(out)]
    if missing:  # pragma: no cover - every write task marks its chunk
        raise RuntimeError(f"{len(missing)} chunks of {out} were not written; rerun predict")
    store.finish(out, len(grid))
    _set_threshold(out, plan, extra, threshold_rule)
    return out


def _set_threshold(out: Path, plan, extra: dict, rule: str) -> None:
    """Record the map's threshold and the rule that chose it (one pass over the finished map)."""
    import zarr

    from .thresholds import choose_threshold

    t, how = choose_threshold(out, plan.cube, extra["ckpt"], rule)
    zarr.open_group(str(out), mode="r+").attrs.update(
        {"threshold": t, "threshold_rule": how, "validation_threshold": contract(extra["ckpt"]).threshold}
    )
    log.info("threshold %.3f: %s", t, how)


def lazy_probability(
    cube: str | Path,
    model: str | Path,
    *,
    window: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
):
    """The blended probability (uint8, 0 where invalid) as a lazy dask array on the cube's chunks —
    the same computation as :func:`predict`, without writing (benchmarks, in-memory checks)."""
    import dask.array as da

    plan, batches, _, _ = engine.prepare(
        cube, model, window=window, overlap=overlap, batch_size=batch_size, device=device
    )
    grid = chunk_grid(plan.shape, plan.chunks)
    tasks = dict(zip(grid, graph(plan, batches, grid)))
    ny, nx = grid[-1][0] + 1, grid[-1][1] + 1
    rows = []
    for i in range(ny):
        row = []
        for j in range(nx):
            y0, y1, x0, x1 = chunk_bounds(plan.shape, plan.chunks, i, j)
            row.append(da.from_delayed(tasks[(i, j)], shape=(y1 - y0, x1 - x0), dtype=np.uint8))
        rows.append(row)
    return da.block(rows)


def graph(plan: Plan, batches: list, todo: list[tuple[int, int]]) -> list:
    """Delayed probability blocks, one per chunk in ``todo``, for :func:`lazy_probability`: each
    batch is one task (each window computed once), each block sums the batches it overlaps."""
    from dask import delayed
    from dask.base import tokenize

    tok = tokenize(plan, batches)
    batch_tasks: dict[int, object] = {}

    def batch_task(b: int):
        if b not in batch_tasks:
            batch_tasks[b] = delayed(engine.run_batch, pure=True)(
                plan, batches[b], dask_key_name=f"predict-batch-{tok}-{b}"
            )
        return batch_tasks[b]

    return [
        delayed(_probability_block, pure=True)(
            plan,
            i,
            j,
            [(r, c, h, w, batch_task(b), k) for r, c, h, w, b, k in contrib],
            dask_key_name=f"predict-block-{tok}-{i}-{j}",
        )
        for (i, j), contrib in contributions(plan.shape, plan.chunks, batches, todo).items()
    ]


def assemble(plan: Plan, i: int, j: int, contributions: list) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """uint8 probability, mapped pixels and (where the model uses a pre-event stream) pixels
    without a pre-event image, of output chunk (i, j) from the windows overlapping it."""
    y0, y1, x0, x1 = chunk_bounds(plan.shape, plan.chunks, i, j)
    acc = np.zeros((y1 - y0, x1 - x0), np.float32)
    wsum = np.zeros_like(acc)
    for row, col, h, w, results, k in contributions:  # in window order: the float sum does not depend on chunking
        p = results[k]
        if p is None:
            continue
        # p covers rows [max(row, 0), min(row + h, H)) and the matching columns of the cube
        py0, px0 = max(row, 0), max(col, 0)
        r0, r1 = max(y0, row), min(y1, row + h)
        c0, c1 = max(x0, col), min(x1, col + w)
        if r0 >= r1 or c0 >= c1:
            continue
        wt = blend_weights(h, w, plan.overlap)[r0 - row : r1 - row, c0 - col : c1 - col]
        acc[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] += wt * p[r0 - py0 : r1 - py0, c0 - px0 : c1 - px0]
        wsum[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] += wt
    prob = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
    valid, _, no_pre = plan.reader.masks(0, y0, x0, y1 - y0, x1 - x0)
    out = np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    out[~valid] = 0
    return out, valid, no_pre


def _probability_block(plan: Plan, i: int, j: int, contributions: list) -> np.ndarray:
    return assemble(plan, i, j, contributions)[0]


def _write_chunk(plan: Plan, out: str, i: int, j: int, contributions: list) -> tuple[int, int, int]:
    """Assemble, write (chunk-aligned) and mark output chunk (i, j) done; returns (i, j, valid px)."""
    prob, valid, no_pre = assemble(plan, i, j, contributions)
    y0, y1, x0, x1 = chunk_bounds(plan.shape, plan.chunks, i, j)
    store.write_block(out, "probability", y0, y1, x0, x1, prob)
    store.write_block(out, "valid", y0, y1, x0, x1, valid)
    if no_pre is not None:
        store.write_block(out, "no_pre", y0, y1, x0, x1, no_pre)
    store.mark_done(out, i, j)  # last: the chunk above is complete
    return i, j, int(valid.sum())


class _ThreadPool:
    """This process's threads (the default without a client)."""

    def __init__(self, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="predict")

    def submit(self, key: str, fn, *args):
        return self._pool.submit(fn, *args)

    @staticmethod
    def value(fut):
        return fut.result()  # batches are done before a write is submitted: no waiting

    @staticmethod
    def check(fut) -> None:
        fut.result()  # raises the task's error

    @staticmethod
    def wait_any(futures) -> set:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(futures, return_when=FIRST_COMPLETED).done

    def cancel(self, futures) -> None:
        for f in futures:
            f.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        self._pool.shutdown(wait=True, cancel_futures=True)
        return False


class _DistributedPool:
    """A ``distributed.Client``: results stay on the workers; writes receive the batch futures, so
    window results move only from the worker that computed them to the one writing the chunk."""

    def __init__(self, client) -> None:
        self.client = client
        self.threads = max(1, total_threads(client))

    def submit(self, key: str, fn, *args):
        return self.client.submit(fn, *args, key=key, pure=False)

    @staticmethod
    def value(fut):
        return fut

    @staticmethod
    def check(fut) -> None:
        if fut.status != "finished":  # never .result() a finished batch: it would ship its windows here
            fut.result()  # raises the task's error

    @staticmethod
    def wait_any(futures) -> set:
        from distributed import wait

        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def cancel(self, futures) -> None:
        if futures:
            self.client.cancel(list(futures))


class _Stream:
    """One streamed run's bookkeeping (see :func:`_stream`): which batches each output chunk needs,
    the batches submitted and still needed, the chunks waiting for batches, the tasks running, and
    how far the chunk rows are submitted and written."""

    def __init__(self, plan: Plan, batches: list, todo: list[tuple[int, int]], out: str, pool, bar) -> None:
        self.plan, self.batches, self.out, self.pool, self.bar = plan, batches, out, pool, bar
        self.contrib = contributions(plan.shape, plan.chunks, batches, todo)
        self.need = {ij: {b for *_, b, _ in c} for ij, c in self.contrib.items()}
        self.chunks_of: dict[int, list[tuple[int, int]]] = {}
        for ij, bs in self.need.items():
            for b in bs:
                self.chunks_of.setdefault(b, []).append(ij)
        self.by_row: dict[int, list[tuple[int, int]]] = {}
        for ij in todo:
            self.by_row.setdefault(ij[0], []).append(ij)
        self.rows = sorted(self.by_row)
        per_row = max(1, len(self.chunks_of) // max(1, len(self.rows)))
        self.lookahead = max(1, math.ceil(2 * pool.threads / per_row))
        self.tok = hashlib.sha1(repr((plan, out)).encode()).hexdigest()[:12]
        self.users = {b: len(ijs) for b, ijs in self.chunks_of.items()}  # chunks whose write is not submitted yet
        self.batch_futs: dict[int, object] = {}  # submitted and still needed
        self.done: set[int] = set()
        self.waiting: dict[tuple[int, int], set[int]] = {}  # submitted chunks: batches not done
        self.running: dict[object, tuple[str, object]] = {}
        self.left = {r: len(self.by_row[r]) for r in self.rows}  # chunks of a row not written yet
        self.submitted = 0  # chunk rows submitted
        self.first = 0  # chunk rows fully written

    def submit_write(self, ij: tuple[int, int]) -> None:
        """Write chunk ``ij`` from its batches' results; release each batch no other chunk still needs."""
        i, j = ij
        args = [(r, c, h, w, self.pool.value(self.batch_futs[b]), k) for r, c, h, w, b, k in self.contrib[ij]]
        fut = self.pool.submit(f"predict-write-{self.tok}-{i}-{j}", _write_chunk, self.plan, self.out, i, j, args)
        self.running[fut] = ("write", ij)
        del self.waiting[ij]
        for b in self.need[ij]:
            self.users[b] -= 1
            if not self.users[b]:
                del self.batch_futs[b]  # the write holds the result now

    def submit_rows(self) -> None:
        """Submit the batches of the chunk rows up to ``lookahead`` past the first unfinished one."""
        while self.submitted < len(self.rows) and self.submitted <= self.first + self.lookahead:
            for ij in self.by_row[self.rows[self.submitted]]:
                for b in sorted(self.need[ij] - self.done - self.batch_futs.keys()):
                    self.batch_futs[b] = self.pool.submit(
                        f"predict-batch-{self.tok}-{b}", engine.run_batch, self.plan, self.batches[b]
                    )
                    self.running[self.batch_futs[b]] = ("batch", b)
                self.waiting[ij] = self.need[ij] - self.done
                if not self.waiting[ij]:
                    self.submit_write(ij)
            self.submitted += 1

    def batch_done(self, b: int) -> None:
        """Batch ``b`` finished: write every submitted chunk that waited only for it."""
        self.done.add(b)
        for ij in self.chunks_of[b]:
            if ij in self.waiting:
                self.waiting[ij].discard(b)
                if not self.waiting[ij]:
                    self.submit_write(ij)

    def chunk_written(self, ij: tuple[int, int]) -> None:
        """Chunk ``ij`` is written: count it, and move past the chunk rows now complete."""
        self.left[ij[0]] -= 1
        if self.bar is not None:
            self.bar.update(1)
        while self.first < len(self.rows) and not self.left[self.rows[self.first]]:
            self.first += 1

    def run(self) -> None:
        try:
            self.submit_rows()
            while self.running:
                for f in self.pool.wait_any(list(self.running)):
                    kind, what = self.running.pop(f)
                    self.pool.check(f)  # a task's error (e.g. a corrupt chunk) is raised here
                    if kind == "batch":
                        self.batch_done(what)
                    else:
                        self.chunk_written(what)
                self.submit_rows()
        except BaseException:
            self.pool.cancel(list(self.running))
            raise


def _stream(plan: Plan, batches: list, todo: list[tuple[int, int]], out: str, pool, bar) -> None:
    """Compute and write the chunks of ``todo`` strip by strip.

    Batches are submitted in row-major order for the chunk rows up to ``lookahead`` rows ahead of
    the first unfinished one; a chunk's write is submitted as soon as every batch it overlaps is
    done, and a batch's result is released when the last chunk needing it has been submitted. So
    the window results held at once are those of a few chunk rows (a strip across the region, not
    its height), and the workers are never idle for want of submitted work (``lookahead`` keeps at
    least twice as many batches in flight as there are threads). Errors cancel what is pending and
    propagate (chunks already written stay marked: a rerun resumes)."""
    _Stream(plan, batches, todo, out, pool, bar).run()


def _check_any_valid(plan: Plan) -> None:
    """Refuse a cube with nothing to map before any output is created or replaced."""
    import dask.array as da
    import zarr

    g = zarr.open_group(plan.cube, mode="r")
    valid = da.from_zarr(g["valid"])
    needs_pre = plan.reader.require_pre and "pre" in plan.streams and "pre_valid" in g
    if needs_pre:
        valid = valid & da.from_zarr(g["pre_valid"])
    try:
        any_valid = bool(valid.any().compute(scheduler="threads"))
    except Exception as exc:
        raise InputDataError(
            f"Reading the 'valid' mask of {plan.cube} failed ({type(exc).__name__}: {exc}). "
            "The cube is corrupt: rebuild it with `landslide-dask cube`."
        ) from exc
    if not any_valid and needs_pre:
        raise InputDataError(
            f"{plan.cube} has no pixel with a pre-event image, and {plan.model} was trained "
            "without pre-event dropout, so it cannot map any: use a model trained with "
            "--pre-dropout, or rebuild the cube with a wider --pre-days window."
        )
    if not any_valid:
        raise InputDataError(
            f"{plan.cube} has no valid pixel (its 'valid' mask is all False): nothing to map. "
            "Check the AOI and the pre/post windows (clouds?) and rebuild the cube."
        )
