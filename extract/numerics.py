"""What a stream key promises about its numbers, and the settings that keep that promise.

A stream key promises bit-equal values for every clip, whatever the scheduler (plain run or
dask), the number of cores, the task boundaries (`--clips-per-part`, a resume's leftovers) and
the other clips a clip was batched with. Two things decide a model's bits besides its inputs:

- intra-op threads: a reduction split over more threads sums in another order (wav2vec2's
  group norm and convolutions differ in the last float16 step between 1 and 2 threads). Every
  CPU forward runs with a fixed count (`--threads`, default 1), recorded in the key;
- the shape of each forward: matrix kernels pick their blocking by the batch's row count, so
  a clip batched in a short tail batch gets other bits than in a full one. Every video forward
  gets exactly `batch_size` frames (a short batch is padded by repeating its last frame and
  the padding's outputs dropped), and the batch size is recorded in the key. Audio is encoded
  per clip in fixed chunks and text one utterance per forward, so neither depends on batching.

On CUDA the thread count does not reach the model (not recorded); the device kind and
precision are in the key (plan.compute_identity).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

DEFAULT_THREADS = 1


def numerics_identity(modality: str, device: str, batch_size: int, threads: int
                      ) -> dict[str, Any]:
    """The numerics settings that go into a stream key (only those that reach the values)."""
    identity: dict[str, Any] = {}
    if device.split(":", 1)[0] == "cpu":
        identity["threads"] = int(threads)
    if modality == "video":
        identity["forward_batch"] = int(batch_size)
    elif modality == "text":
        identity["forward_batch"] = 1
    return identity


# torch's thread count is per process, and a dask worker runs several tasks in threads: the
# count is set by the first task that enters and restored by the last one that leaves, so no
# task's exit changes it under another task's forwards.
_THREADS_LOCK = threading.Lock()
_threads_state: dict[str, int] = {"users": 0, "before": 0, "threads": 0}


@contextlib.contextmanager
def fixed_threads(device: str, threads: int) -> Iterator[None]:
    """Run the block's CPU forwards with exactly `threads` intra-op threads, then restore."""
    import torch

    if device.split(":", 1)[0] != "cpu":
        yield
        return
    with _THREADS_LOCK:
        if _threads_state["users"] == 0:
            _threads_state["before"] = torch.get_num_threads()
        elif _threads_state["threads"] != threads:
            raise RuntimeError(f"tasks of one process asked for {_threads_state['threads']} "
                               f"and {threads} intra-op threads at once")
        _threads_state["users"] += 1
        _threads_state["threads"] = threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_state["users"] -= 1
            if _threads_state["users"] == 0 and torch.get_num_threads() != _threads_state[
                    "before"]:
                torch.set_num_threads(_threads_state["before"])


def padded_to(batch, size: int):
    """`batch` with its last row repeated up to `size` rows (a forward of a fixed shape)."""
    import torch

    missing = size - len(batch)
    if missing <= 0:
        return batch
    return torch.cat([batch, batch[-1:].expand(missing, *batch.shape[1:])])


def _module_version(module: str) -> str | None:
    import importlib

    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except ImportError:
        return None


def numerics_record(library: str | None, device: str, batch_size: int, threads: int,
                    modality: str) -> dict[str, Any]:
    """What computed a part's rows, for its manifest: the key's numerics settings plus what
    the key leaves out (library versions), so `affect store verify --numerics` can tell parts
    that may differ in their last bits (the promise holds for one library stack)."""
    import torch

    record: dict[str, Any] = {"device": device.split(":", 1)[0], "torch": torch.__version__,
                              **numerics_identity(modality, device, batch_size, threads)}
    module = (library or "").split(" ", 1)[0]  # "timm (hsemotion weights)" -> timm
    if module and module != "torch":
        record[module] = _module_version(module)
    return record


def set_default_threads(threads: int) -> None:
    """The process's thread count outside forwards (a dask worker's share of the cores): taken
    now if no forward block is open, else when the last one closes."""
    import torch

    with _THREADS_LOCK:
        if _threads_state["users"]:
            _threads_state["before"] = threads
        elif torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
