"""glibc's allocator, set for a worker that decodes images for as long as the pod lives.

Two costs pull apart. Memory a worker keeps after a large decode stays resident for good
(glibc's defaults left a worker hundreds of MiB higher after a few large decodes on different
threads). Memory a worker hands back must be faulted in again, page by page, by the next
request, and on virtual machines a page fault is dear: when every freed block went back, that
was a tenth of a 12 MP upload's time. So large blocks (Pillow's decoded images) go back at once,
and the pieces every request needs again (the body, its copies, the decoder's buffers) stay.
docs/performance.md ("The HTTP path" and "Memory") has the figures for each setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from function.budget import MIB

MMAP_THRESHOLD = 4 * MIB
"""Blocks at least this large are mmap'd and returned to the system when freed. Above the
1 MiB pieces a request body is received in (each piece and each copy would otherwise be a
fresh mapping), below Pillow's 16 MiB image blocks. Fixing it also turns off glibc's
adaptation, which raised the threshold after the first large free and kept later blocks."""

TRIM_THRESHOLD = 16 * MIB
"""Free memory at the top of a heap that is kept for the next request rather than handed back.
glibc's 128 KiB default gave back the pages of every body and decode buffer as each request
ended; 16 MiB covers one large upload's working set in blocks below ``MMAP_THRESHOLD``."""

ARENAS = 2
"""Heaps the worker's threads share. Each arena keeps up to ``TRIM_THRESHOLD`` free, and glibc
would make up to 8 per core for the worker's dozens of threads; two bound what is kept, and
the lock they share is held for microseconds per allocation."""

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def configure_allocator() -> bool:
    """Apply the settings above (before the worker starts its threads). Returns False where
    the C library is not glibc, or refused one of them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    settings = (
        (_M_ARENA_MAX, ARENAS),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    )
    return all(mallopt(option, value) == 1 for option, value in settings)
