"""Wall time and peak memory of one block of work, the same way for every method and caller.

Why here: `compare`, `styleprompt transfer` (through `styleprompt.evaluation.methods.stylize_measured`) and
the app report the same numbers, so they come from one function.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_mib: float | None = None
    kind: str = ""


def _trim_heap() -> None:
    """Hand freed memory back to the OS first, so the RSS baseline is not inflated by what an
    earlier method freed but glibc kept (then a later method would seem to need nothing)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def measure(device: str) -> Iterator[Measurement]:
    """Wall time and peak memory of the block.

    CUDA: torch's peak allocated bytes during the block minus those allocated before it (the
    tensors the method created; the caching allocator's slack is not counted).
    CPU: torch's CPU allocator is not tracked by torch or tracemalloc, so a thread samples the
    process's resident set every 5 ms and reports the peak rise over the start. It is the whole
    process: in the app, another request running at the same time is counted too, and a spike
    shorter than 5 ms can be missed.
    """
    import torch

    result = Measurement()
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result.kind = "cuda peak allocated"
        start = time.perf_counter()
        try:
            yield result
        finally:
            torch.cuda.synchronize()
            result.seconds = time.perf_counter() - start
            result.peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    import psutil

    process = psutil.Process()
    _trim_heap()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True, name="rss-sampler")
    sampler.start()
    result.kind = "cpu peak RSS rise (5 ms samples)"
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        result.peak_mib = max(0.0, (peak[0] - base) / 2**20)
