"""How many CPU threads torch should use now: all cores when the machine is idle, one when busy.

Why: on a loaded machine torch's OpenMP threads spin-wait against other processes. Measured on the
2-core CPU: one micro UNet step took 13 s with two threads against 2.2 s with one, and two token
trainings started side by side with two threads each ran at 16.6 s a step instead of about 0.2 s.
The micro build's stages call `set_threads` every 50 steps, so they follow the load as it changes.
The token trainer chooses once per run, by the threads runnable at its start (`fixed_for_run`): changing the thread count mid-run
changes float rounding, and a resumed run must end bit-identical to a straight one
(tests/test_training.py), so the run folder records the count and a resume reuses it.
A user who sets OMP_NUM_THREADS keeps that choice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_THREADS_IN_USE = 0


def runnable_now() -> int:
    """Threads runnable this instant, machine-wide (/proc/loadavg's fourth field; 0 where absent).

    Why besides the load average: that is a one-minute average, so two jobs started together
    would both see an idle machine, take every core, and spin against each other for a minute.
    """
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0


def set_threads() -> int:
    """One thread while the machine is busy (OpenMP spin-waits collapse under oversubscription:
    measured 13 s vs 2.2 s per step), all cores when it is idle.

    The load average counts this process too: once it runs, the threads it set last time are
    subtracted, or a lone job would see its own load and drop to one thread (measured: the
    decoder stage ran at 2.1 s a step alone on the 2 cores, against 1.25 s with both).
    """
    global _THREADS_IN_USE
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    own = max(_THREADS_IN_USE, 1)  # this thread is running while it reads
    others = max(0.0, load - _THREADS_IN_USE, float(runnable_now() - own))
    threads = max(1, min(cores, round(cores - others)))
    torch.set_num_threads(threads)
    _THREADS_IN_USE = threads
    return threads


def threads_for_new_run(samples: int = 9, interval_s: float = 0.02) -> int:
    """All cores unless other threads are runnable now (the median of a few instant readings).

    Why not `set_threads`: its one-minute load average counts this process's own recent work,
    which it cannot tell from another job's when the process ran torch before without calling it
    (a test session, the app between requests). Measured: CI's test run took 947 s instead of
    about 750 s while every token training there chose one thread that way.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    readings = []
    for k in range(samples):
        if k:
            time.sleep(interval_s)
        readings.append(runnable_now())
    others = max(0, sorted(readings)[len(readings) // 2] - 1)  # this thread is one of them
    cores = os.cpu_count() or 1
    return max(1, min(cores, cores - others))


@contextmanager
def fixed_for_run(recorded: int | None = None) -> Iterator[int]:
    """One thread count for a whole run: `recorded` (a resumed run's own), else chosen by the load now.

    The process's previous count comes back afterwards, so an app that trained a token on a busy
    machine does not generate on one thread ever after.
    """
    global _THREADS_IN_USE
    previous = torch.get_num_threads()
    threads = recorded or threads_for_new_run()
    torch.set_num_threads(threads)
    _THREADS_IN_USE = threads
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
        _THREADS_IN_USE = 0
