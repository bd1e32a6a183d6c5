"""The model side of inference: one checkpoint loaded per process, the plan every task carries,
and the forward pass of a batch of windows.

Each window is predicted once, in batches of up to ``batch_size`` windows of one row and one
size (one task per batch), its input read straight from the zarr store through the window reader
(:mod:`landslide_dask.train.reader`, the same path as training: only paths and offsets travel in
the tasks). The checkpoint is read through :mod:`landslide_dask.train.checkpoint` (never the
training loop) and the cube is checked against it by
:func:`landslide_dask.cube.read.check_cube_for_model`, the check training uses. The model is
loaded once per worker process from the checkpoint path (cached by path,
modification time and device), never shipped in the graph; inference runs under
``torch.inference_mode`` with channels-last tensors, autocast (bf16/fp16) on CUDA and, on CPU,
``cores // dask threads on the host`` torch threads per task.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..common.files import file_sha256
from ..common.workers import cores, worker_table
from ..cube.read import check_cube_for_model, open_cube
from ..errors import UsageError
from ..train.checkpoint import checkpoint_reader, contract, load_checkpoint, rebuild_model
from ..train.reader import WindowReader
from ..train.reader import clear_caches as clear_reader_caches
from .config import DEFAULT_BATCH_SIZE
from .windows import Window, batches_of, resolve_window, windows_of

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PREDICTION_FORMAT",
    "Plan",
    "Prepared",
    "prepare",
    "default_batch_size",
    "local_threads",
    "torch_threads",
    "worker_threads",
    "load_model",
    "input_tensors",
    "forward",
    "window_inputs",
    "run_batch",
    "clear_caches",
    "has_cuda",
]

#: Version of the prediction store's layout (``docs/contracts.md``, "Prediction").
PREDICTION_FORMAT = 1
#: Most dask threads of the local scheduler: concurrent batches, the cores split among them.
MAX_LOCAL_THREADS = 4

_LOCK = threading.RLock()
_MODELS: dict[tuple[str, int, str], tuple[object, dict]] = {}
_MODEL_LOCKS: dict[tuple[str, int, str], threading.Lock] = {}


@dataclass(frozen=True)
class Plan:
    """What every inference task needs; small and picklable (no arrays, no model)."""

    cube: str
    reader: WindowReader
    shape: tuple[int, int]
    chunks: tuple[int, int]
    model: str
    model_mtime_ns: int
    device: str | None
    window: int
    overlap: int
    streams: tuple[str, ...]
    local_threads: int
    multiple: int
    worker_threads: tuple[tuple[str, int], ...] = ()


class Prepared(NamedTuple):
    """A checked inference run: its plan, the batches of windows, the fingerprint that a resumed
    run must match (``run``), and the opened checkpoint, cube and model config (``extra``)."""

    plan: Plan
    batches: list[tuple[Window, ...]]
    run: dict
    extra: dict


def clear_caches() -> None:
    """Forget cached arrays, chunks and models in this process (tests, or after rebuilding a cube)."""
    clear_reader_caches()
    with _LOCK:
        _MODELS.clear()


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _resolve_device(device: str | None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_batch_size(device: str | None = None) -> int:
    """Windows per forward pass: ``DEFAULT_BATCH_SIZE`` of the device type (None: CUDA if this
    process has it, else CPU)."""
    kind = _resolve_device(device).type
    return DEFAULT_BATCH_SIZE.get(kind, DEFAULT_BATCH_SIZE["cpu"])


def local_threads(device: str | None = None) -> int:
    """Dask threads of the local scheduler: up to ``MAX_LOCAL_THREADS`` concurrent batches."""
    return max(1, min(cores(), MAX_LOCAL_THREADS))


def torch_threads(plan: Plan) -> int:
    """Torch threads for one task: the host's cores shared by every dask thread on that host
    (measured on 2 shared cores: 2 dask threads x 1 torch thread mapped the demo cube in 2.0 s,
    1 x 2 in 6.9-11 s)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return max(1, cores() // max(1, plan.local_threads))
    given = dict(plan.worker_threads).get(worker.address)
    return given if given else max(1, cores() // max(1, worker.state.nthreads))


def worker_threads(client) -> tuple[tuple[str, int], ...]:
    """Torch threads per worker address: cores of its host // dask threads of all workers there."""
    workers = worker_table(client)
    try:
        host_cores = client.run(cores)
    except Exception:  # pragma: no cover - a worker that cannot run it just gets the fallback
        return ()
    per_host: dict[str, int] = {}
    for w in workers.values():
        per_host[w.get("host", "")] = per_host.get(w.get("host", ""), 0) + int(w.get("nthreads", 1))
    return tuple(
        sorted(
            (addr, max(1, int(host_cores.get(addr, 1)) // max(1, per_host.get(w.get("host", ""), 1))))
            for addr, w in workers.items()
        )
    )


def load_model(plan: Plan):
    """``(model, meta)`` of the plan's checkpoint on its device, loaded once per process (thread-safe)."""
    return _model(plan.model, plan.model_mtime_ns, plan.device)


def _model(ckpt_path: str, mtime_ns: int, device: str | None):
    dev = _resolve_device(device)
    key = (ckpt_path, mtime_ns, str(dev))
    with _LOCK:
        hit = _MODELS.get(key)
        if hit is not None:
            return hit
        lock = _MODEL_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _LOCK:
            hit = _MODELS.get(key)
        if hit is not None:
            return hit
        ckpt = load_checkpoint(ckpt_path)
        model = rebuild_model(ckpt, dev)
        c = contract(ckpt)
        meta = {"stats": c.stats, "streams": list(c.streams), "device": dev}
        with _LOCK:
            _MODELS[key] = (model, meta)
        return model, meta


def input_tensors(samples: list[dict[str, np.ndarray]], streams: tuple[str, ...], device) -> dict:
    """Same-sized window inputs stacked per stream as channels-last tensors on ``device``."""
    import torch

    return {
        name: torch.from_numpy(np.stack([x[name] for x in samples]))
        .to(device, non_blocking=True)
        .contiguous(memory_format=torch.channels_last)
        for name in streams
    }


def forward(model, inputs: dict, device):
    """Probabilities ``(N, H, W)`` (float32, on ``device``) of a batch: one forward pass under
    ``inference_mode``, autocast (bf16, else fp16) on CUDA."""
    import torch

    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        return torch.sigmoid(model(inputs)["logits"].float())[:, 0]


def window_inputs(plan: Plan, row: int, col: int, h: int, w: int) -> tuple[dict[str, np.ndarray], bool]:
    """The model inputs of one window (the window reader's, as in training) and whether any pixel
    of it is mapped."""
    x, _, _ = plan.reader.inputs(0, row, col, h, w, skip_empty=True)
    return x, bool(x)


def run_batch(plan: Plan, windows: tuple[Window, ...]) -> list[np.ndarray | None]:
    """Probabilities (float32, cropped to the cube) of a batch of same-sized windows; None for
    windows without a valid pixel. One forward pass for the batch."""
    import torch

    model, meta = load_model(plan)
    samples, keep = [], []
    for row, col, h, w in windows:
        x, any_valid = window_inputs(plan, row, col, h, w)
        keep.append(any_valid)
        if any_valid:
            samples.append(x)
    results: list[np.ndarray | None] = [None] * len(windows)
    if not samples:
        return results
    if meta["device"].type == "cpu":
        torch.set_num_threads(torch_threads(plan))
    dev = meta["device"]
    it = iter(forward(model, input_tensors(samples, plan.streams, dev), dev).cpu().numpy())
    ny, nx = plan.shape
    for k, ((row, col, _, _), ok) in enumerate(zip(windows, keep)):
        if ok:
            p = next(it)
            # a copy, never a view: a view would keep the whole batch array alive while the window
            # waits for its output chunks
            results[k] = np.array(p[max(0, -row) : ny - row, max(0, -col) : nx - col], dtype=np.float32, copy=True)
    return results


def prepare(
    cube: str | Path,
    model: str | Path,
    *,
    window: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> Prepared:
    """Open and check a cube and a checkpoint for inference (every mismatch at once); the plan,
    its batches of windows and the run's fingerprint. ``threads``: dask threads of the local
    scheduler (None: :func:`local_threads`)."""
    import zarr

    from ..train.model import ModelConfig

    cube, model = Path(cube).resolve(), Path(model).resolve()
    ckpt = load_checkpoint(model)
    c = contract(ckpt)
    ds = open_cube(cube)
    check_cube_for_model(ds, c.streams, c.bands, c.droppable, cube=cube, model=model)
    valid = zarr.open_group(str(cube), mode="r")["valid"]
    shape = tuple(int(v) for v in valid.shape)
    chunks = tuple(int(v) for v in valid.chunks)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    window, overlap = resolve_window(window, overlap, cfg.size_multiple)
    if batch_size is None:
        batch_size = default_batch_size(device)
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    plan = Plan(
        cube=str(cube),
        reader=checkpoint_reader(ckpt, [cube]),
        shape=shape,
        chunks=chunks,
        model=str(model),
        model_mtime_ns=model.stat().st_mtime_ns,
        device=device,
        window=window,
        overlap=overlap,
        streams=c.streams,
        local_threads=local_threads(device) if threads is None else int(threads),
        multiple=cfg.size_multiple,
    )
    batches = batches_of(windows_of(shape, window, overlap, cfg.size_multiple), batch_size)
    run = {
        "format": PREDICTION_FORMAT,
        "cube": str(cube),
        "shape": list(shape),
        "chunks": list(chunks),
        "model": str(model),
        "model_sha256": file_sha256(model),
        "window": window,
        "overlap": overlap,
        "batch_size": int(batch_size),
    }
    return Prepared(plan, batches, run, {"ckpt": ckpt, "ds": ds, "config": cfg})
