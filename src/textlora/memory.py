"""Peak memory of this process, for the manifest and `compare` (no heavy imports here)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (Linux VmHWM, else ru_maxrss; None if unknown).

    VmHWM belongs to the current address space, so a process started with `spawn` does not inherit
    its parent's peak, as ru_maxrss does across fork + exec."""
    hwm = _proc_mb("/proc/self/status", "VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024  # bytes on macOS
    except ImportError:
        return None


def rss_mb() -> float | None:
    """Resident memory of this process now, in MiB (Linux VmRSS; None where there is no /proc)."""
    return _proc_mb("/proc/self/status", "VmRSS")


def release_free_memory(collect: bool = True) -> bool:
    """Return the heap memory this process has freed to the OS (glibc `malloc_trim`); False where there is none.

    glibc keeps freed blocks for reuse, so a large temporary (a checkpoint read and then quantized) or the
    fragments of many training steps would otherwise stay in the resident set, and in the peak. `collect`
    first frees Python's unreachable cycles (`gc.collect`)."""
    if collect:
        import gc

        gc.collect()
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def available_mb() -> float | None:
    """Memory the system can still give without swapping, in MiB (Linux MemAvailable; None if unknown)."""
    return _proc_mb("/proc/meminfo", "MemAvailable")


def _proc_mb(path: str, key: str) -> float | None:
    """The `key: N kB` line of a /proc file, in MiB; None where there is no such file or line."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
