"""Big buffers out of the malloc heap, so that the memory of a large poll goes back to the system.

glibc raises its mmap threshold each time a large mapped block is freed (up to 32 MiB): from then on
a 5 MB batch message or a 50 MB sacct document lands in the heap, and after a 10 000-job poll the
heap stays at its high-water mark (scripts/bench-footprint: translator 111 MB, tree 195 MB steady).
A fixed threshold keeps every block over 256 KiB in a mapping of its own, unmapped when freed
(tree 91 MB steady). Set once in the supervisor; the forked actors inherit it.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  #: mallopt() parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 256 * 1024


def keep_big_blocks_out_of_the_heap() -> None:
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has its own ways
