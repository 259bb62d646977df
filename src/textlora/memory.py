"""Peak memory of this process, for the manifest and `compare` (no heavy imports here)."""

from __future__ import annotations

import sys
from pathlib import Path


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (Linux VmHWM, else ru_maxrss; None if unknown).

    VmHWM belongs to the current address space, so a process started with `spawn` does not inherit
    its parent's peak, as ru_maxrss does across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024  # bytes on macOS
    except ImportError:
        return None



def available_mb() -> float | None:
    """Memory the system can still give without swapping, in MiB (Linux MemAvailable; None if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
