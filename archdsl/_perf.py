"""Speed helpers for the front end."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Parse trees, spans and IR nodes hold no reference cycles that need collecting, but each full
    collection rescans the whole heap: with it running, a 10,000-layer spec cost 1.5 s instead
    of 1.0 s and the cost per layer grew with size (benchmarks/bench_frontend.py).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
