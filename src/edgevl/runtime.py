"""Process-wide CPU settings for inference: whether the C allocator keeps the memory a forward pass frees.

By default glibc's malloc maps blocks above its mmap threshold afresh and unmaps them on free, and releases free
memory above its trim threshold at the top of the heap; the mmap threshold rises to the largest mapped block freed
so far (at most 32 MiB) and the trim threshold to twice that. A pass that frees more than that at the top of the
heap gives it back, and the next pass has the kernel fault in and zero those pages again. MobileCLIP-S0's image
tower at batch 1 (4 MiB stem output) takes about 2,000 page faults per call this way, 12-14 % of its latency
(`benchmarks/allocator.py`); ViT-B/16 takes none (measured in `docs/benchmarks.md`). `keep_freed_memory` raises
both thresholds so freed activations stay in the heap for the next call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from pathlib import Path

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_kept = False  # set once keep_freed_memory applied (glibc cannot report its thresholds back)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc, else None (macOS, Windows, musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def preloaded_allocator() -> str | None:
    """The name of a replacement allocator loaded into this process ("tcmalloc", "jemalloc", "mimalloc"), if any
    (for example through `LD_PRELOAD`); those keep freed memory by themselves."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    text = maps.read_text()
    return next((name for name in ("tcmalloc", "jemalloc", "mimalloc") if f"lib{name}" in text), None)


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep up to `limit_bytes` of freed memory for reuse instead of returning it to the OS,
    and serve every block smaller than `limit_bytes` from the heap instead of a fresh mapping.

    Call once, early, in a process that runs models repeatedly; it affects the whole process, and its resident
    memory then stays near its peak. Returns True when applied, False where the C library is not glibc or a
    replacement allocator is loaded (which needs no such setting)."""
    if limit_bytes <= 0:
        raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
    libc = _glibc()
    if libc is None or preloaded_allocator() is not None:
        return False
    global _kept
    limit = ctypes.c_int(min(limit_bytes, 2**31 - 1))  # mallopt takes an int
    _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))
    return _kept


def allocator_description() -> str:
    """One line naming the allocator in use and whether `keep_freed_memory` applied, for benchmark reports."""
    preloaded = preloaded_allocator()
    if preloaded:
        return preloaded
    if _glibc() is None:
        return "system"
    return f"glibc {platform.libc_ver()[1]}" + (", freed memory kept" if _kept else "")


def minor_page_faults() -> int:
    """Minor page faults of this process so far, from `/proc/self/stat` (Linux)."""
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])
