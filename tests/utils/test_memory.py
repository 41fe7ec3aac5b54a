"""release_free_heap finds glibc's malloc_trim (else the sliding-window loop's RSS grows with every tile)."""
import platform

import numpy as np
import pytest

from seg_d2.utils.memory import release_free_heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_releases_freed_heap_pages_on_glibc():
    kept = []
    for size in range(1, 60):  # blocks of many sizes between kept small ones: free pages inside the heap
        block = np.ones(size * 50_000, np.uint8)
        kept.append(np.ones(1000, np.uint8))
        del block
    assert release_free_heap() is True
