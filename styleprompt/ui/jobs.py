"""Long jobs in the app: run in a worker thread, report progress, stop on request.

Why not Gradio's own `cancels=`: it cancels the asyncio task that waits for a handler, but a
synchronous handler keeps running in its thread, holding the CPU/GPU and the model, after the
page says "cancelled". Here every heavy handler runs its work in a thread it watches, and a
Stop sets a flag the work itself checks:
- training checks it every step (`TrainCallbacks.should_stop`) and stops cleanly, keeping a
  resumable checkpoint and the embedding so far;
- everything else is stopped at its next progress tick. The library's long loops show tqdm bars
  (a house rule), diffusers' sampling loop included, so one hook on tqdm's `update` and
  `__iter__`, active only inside a job's thread, both reads progress and raises `JobCancelled`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

_CURRENT: contextvars.ContextVar["Job | None"] = contextvars.ContextVar("styleprompt_job", default=None)
_HOOKS_INSTALLED = False
_HOOK_LOCK = threading.Lock()


class JobCancelled(Exception):
    """Raised inside a job's thread at its next progress tick after Stop was pressed."""


@dataclass
class Progress:
    done: float = 0
    total: float | None = None
    what: str = ""
    first: float = 0  # the count when the clock started: the rate is measured from there
    started: float = field(default_factory=time.perf_counter)

    def eta_seconds(self) -> float | None:
        if not self.total or self.done <= self.first:
            return None
        rate = (self.done - self.first) / (time.perf_counter() - self.started)
        return max(self.total - self.done, 0) / rate


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Job:
    """One run of one heavy action for one browser session."""

    def __init__(self, kind: str, *, tqdm_ticks: bool = True):
        self.kind = kind
        # True: progress and Stop come from the tqdm bars inside the work. False (training):
        # the work reports its own progress and checks `stop_requested` itself, cleanly.
        self.tqdm_ticks = tqdm_ticks
        self._stop = threading.Event()
        self.started = time.perf_counter()
        self.progress = Progress()
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def tick(self, done: float, total: float | None, what: str = "") -> None:
        """Record progress; raise JobCancelled when Stop was pressed (for jobs stopped at ticks)."""
        if what != self.progress.what or total != self.progress.total or done < self.progress.done:
            self.progress = Progress(total=total, what=what, first=done)  # a new bar: restart the clock
        self.progress.done = done
        if self.tqdm_ticks and self._stop.is_set():
            raise JobCancelled(f"{self.kind} stopped")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    # -- running ---------------------------------------------------------------------------------

    def run(self, fn: Callable[..., Any], *args: Any, poll: float = 0.4, **kwargs: Any) -> Iterator[None]:
        """Run fn in a thread; yield every `poll` seconds while it runs (the caller streams
        progress to the page). Afterwards `result` holds its return value; its exception is
        re-raised here. If the consumer goes away (page closed, event cancelled) the job is
        told to stop, so no orphaned work keeps the machine busy.
        """
        install_tqdm_hooks()

        def target() -> None:
            _CURRENT.set(self)
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting handler
                self.error = exc

        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(target,), daemon=True, name=f"job-{self.kind}"
        )
        self.thread.start()
        try:
            while self.thread.is_alive():
                self.thread.join(poll)
                if self.thread.is_alive():
                    yield
        finally:
            if self.thread.is_alive():
                self.stop()
        if self.error is not None:
            raise self.error


class JobBoard:
    """The running job of each (session, kind): what the Stop buttons act on."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], Job] = {}
        self._lock = threading.Lock()

    def start(self, session: str | None, kind: str, **options: Any) -> Job:
        job = Job(kind, **options)
        with self._lock:
            self._jobs[(session or "", kind)] = job
        return job

    def get(self, session: str | None, kind: str) -> Job | None:
        with self._lock:
            return self._jobs.get((session or "", kind))

    def stop(self, session: str | None, kind: str) -> bool:
        """Ask the session's running job of this kind to stop; False when none is running."""
        job = self.get(session, kind)
        if job is None or job.thread is None or not job.thread.is_alive():
            return False
        job.stop()
        return True

    def finish(self, session: str | None, kind: str, job: Job) -> None:
        with self._lock:
            if self._jobs.get((session or "", kind)) is job:
                del self._jobs[(session or "", kind)]


def current_job() -> Job | None:
    return _CURRENT.get()


def install_tqdm_hooks() -> None:
    """Make every tqdm bar in a job's thread report to the job and honour Stop. Idempotent.

    Outside a job's thread the hooks cost one context-variable read and change nothing. A
    disabled bar (diffusers' pipelines here) still calls `update`, so it is counted here even
    though tqdm itself does not count it.
    """
    global _HOOKS_INSTALLED
    with _HOOK_LOCK:
        if _HOOKS_INSTALLED:
            return
        from tqdm.std import tqdm

        original_update = tqdm.update
        original_iter = tqdm.__iter__

        def update(self, n=1):
            job = _CURRENT.get()
            if job is not None and job.tqdm_ticks:
                count = getattr(self, "_styleprompt_n", 0) + (n or 0)
                self._styleprompt_n = count
                job.tick(count, getattr(self, "total", None), getattr(self, "desc", "") or "")
            return original_update(self, n)

        def iterate(self):
            job = _CURRENT.get()
            if job is None or not job.tqdm_ticks:
                yield from original_iter(self)
                return
            total = getattr(self, "total", None)
            what = getattr(self, "desc", "") or ""
            for i, item in enumerate(original_iter(self)):
                job.tick(i, total, what)
                yield item

        tqdm.update = update
        tqdm.__iter__ = iterate
        _HOOKS_INSTALLED = True
