"""Allocator settings for processes that allocate tensor-sized buffers over and over.

A dask nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536
(`distributed.nanny.pre-spawn-environ`), so that idle workers give memory back, and it also
writes that variable into the environment of the process running the nanny, which every process
started from there afterwards inherits (a decode worker's forkserver, say). Setting it switches
off glibc's adaptive mmap threshold: every allocation over 128 KiB (each activation of a conv
layer, each batch of frames) becomes a fresh mmap whose pages the kernel zeroes and faults in,
then unmaps. The model ran about 1.5x slower in a worker than in a plain process, most of it in
system time (bench/scale.py, BENCHMARKS.md). glibc reads the variable only at start, but its
thresholds can be set at run time, which fixes it however the process was started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h) and the values a tensor workload wants: big enough that
# a batch's activations and frames, freed, are reused from the heap instead of returned to the
# kernel and faulted in again.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD_BYTES = 256 << 20
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's own ceiling for its adaptive threshold (64-bit)


def keep_freed_memory() -> bool:
    """Let this process reuse freed buffers instead of mapping each afresh (glibc only).

    Returns whether the settings applied (False off Linux or without glibc's mallopt).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to undo
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


__all__ = ["keep_freed_memory"]
