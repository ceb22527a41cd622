"""Spreading work over processes in chunks, results in input order (so parallel output
is byte-identical to serial). Used by batch conversion and the documentation build."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
# `work(chunk, shared)` returns one result per item; it must be a module-level function
# (it is pickled into the workers) and `shared` must pickle too.
ChunkWork = Callable[[list[T], Any], list[R]]


def ordered_map(work: ChunkWork[T, R], items: Sequence[T], shared: Any, workers: int) -> Iterator[R]:
    """`work` over `items`, one result per item in input order, streamed as chunks finish."""
    if workers <= 1 or len(items) < 2:
        for item in items:
            yield from work([item], shared)
        return
    # Chunks of a few dozen items keep pickling overhead low and progress visible.
    size = max(1, min(64, len(items) // (workers * 4) or 1))
    chunks = [list(items[i:i + size]) for i in range(0, len(items), size)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        for results in pool.map(_run_chunk, [(work, chunk, shared) for chunk in chunks]):
            yield from results


def _run_chunk(task: tuple[ChunkWork[Any, Any], list[Any], Any]) -> list[Any]:
    work, chunk, shared = task
    return work(chunk, shared)


def default_workers(item_count: int) -> int:
    """All cores for a real batch; a handful of items is faster in-process."""
    if item_count < 200:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
