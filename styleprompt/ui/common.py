"""Pieces every tab shares: the app's context, the progress bar, error display, image lists.

Why: each tab is a thin layout over library calls; what they all do the same way (turn a
UserError into one line on the page, draw a progress bar with an ETA, hand Gradio paths inside
the output folder only) lives here once.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator

import gradio as gr

from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.ui.jobs import Job, JobBoard, JobCancelled, format_duration
from styleprompt.ui.serve import AppSettings, ModelCache, OutputFolder, hide_server_paths

log = logging.getLogger(__name__)

CSS = """
.sp-progress { display: flex; align-items: center; gap: 0.75em; padding: 0.5em 0; }
.sp-progress progress { flex: 1 1 auto; height: 1.1em; }
.sp-progress-text { font-variant-numeric: tabular-nums; white-space: nowrap; }
.sp-status-error { color: #b91c1c; }
"""


@dataclass
class AppContext:
    """What every tab's handlers share: settings, the one output folder, models, running jobs."""

    settings: AppSettings
    output: OutputFolder
    models: ModelCache
    jobs: JobBoard = field(default_factory=JobBoard)
    load_error: str | None = None  # why the default model failed to load at start, for the page to say

    @classmethod
    def create(cls, settings: AppSettings, models: ModelCache | None = None) -> "AppContext":
        return cls(
            settings=settings,
            output=OutputFolder(settings.output_dir),
            models=models or ModelCache(settings.device, settings.max_models),
        )


def model_notice(ctx: AppContext) -> str:
    """A warning for the top of the page when the default model is missing (or failed to load),
    with how to get it and the offline alternative; empty when all is well. The terminal alone
    used to say so, while the page named SD 1.5 as if it were ready."""
    from styleprompt.diffusion.models import missing_model_reason

    model = ctx.settings.model
    reason = (missing_model_reason(model) or ctx.load_error or "").rstrip(". ")
    if not reason:
        return ""
    hub = model not in ("micro", "tiny", "tiny-sdxl") and not Path(model).expanduser().exists()
    get = f"Get it with `hf download {model}` and restart, or s" if hub else "S"
    return (
        f"**The model `{model}` is not ready:** {reason}. {get}tart the app on a model that is here: "
        "`python app.py --model micro` (the project's own 64-px model, offline) or `--model tiny` (random, for tests)."
    )


def progress_html(
    label: str,
    done: float | None = None,
    total: float | None = None,
    extra: str = "",
    *,
    eta: float | None = None,
    state: str = "running",
) -> str:
    """A progress bar and one line: "label 12/200 (6%) · ETA 0:58 · extra"."""
    text = html.escape(label)
    bar = ""
    if total:
        bar = f'<progress value="{done or 0:g}" max="{total:g}"></progress>'
        if state == "running":
            text += f" {int(done or 0)}/{int(total)} ({100.0 * (done or 0) / total:.0f}%) · ETA {format_duration(eta)}"
    elif state == "running":
        bar = "<progress></progress>"  # indeterminate: loading a model, for instance
    if extra:
        text += " · " + html.escape(extra)
    css = " sp-status-error" if state == "error" else ""
    return f'<div class="sp-progress{css}" data-state="{state}">{bar}<span class="sp-progress-text">{text}</span></div>'


def job_progress_html(job: Job, label: str) -> str:
    p = job.progress
    if p.total:
        what = f"{label} ({p.what})" if p.what else label
        return progress_html(what, p.done, p.total, eta=p.eta_seconds())
    return progress_html(f"{label}: working, {format_duration(job.elapsed)} so far")


def idle_html(text: str = "idle") -> str:
    return progress_html(text, state="idle")


def error_html(text: str) -> str:
    return progress_html(f"error: {text}", state="error")


def image_input(**kwargs: Any) -> gr.Image:
    """gr.Image whose upload goes through the CLI's reader first, so it gets the CLI's one line.

    Gradio opens an upload itself before any handler runs: a file it cannot identify gets a
    paragraph showing the server's cache path, and a format the CLI refuses (a SPIDER or DDS
    file named .png) would be converted and accepted. So the project's reader sees the upload
    first. The component's own `preprocess` is wrapped rather than subclassed: Gradio writes a
    .pyi stub beside the module of every component subclass at import time, which fails in a
    read-only install.
    """
    component = gr.Image(**kwargs)
    gradio_preprocess = component.preprocess

    def preprocess(payload: Any) -> Any:
        from styleprompt.plumbing.images import load_image

        path = getattr(payload, "path", None)
        if path:
            name = Path(getattr(payload, "orig_name", None) or path).name
            try:
                load_image(path)
            except UserError as reason:
                raise gr.Error(str(reason).replace(str(path), name), print_exception=False) from None
        try:
            return gradio_preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the reader accepted it; say what Gradio could not do
            raise gr.Error(
                f"cannot read {name if path else 'the image'}: {user_message(exc)}", print_exception=False
            ) from None

    component.preprocess = preprocess
    return component


# Library setting -> the label of the app's field for it (a setting without a field keeps its name).
FIELD_LABELS: dict[str, str] = {
    "vectors": "Vectors",
    "steps": "Steps",
    "resolution": "Resolution",
    "lr": "Learning rate",
    "preview_every": "Preview every",
    "preview_steps": "Preview sampling steps",
    "grad_accum": "Gradient accumulation",
    "mixed_precision": "Mixed precision",
    "seed": "Seed",
    "token": "Token name",
    "init_word": "Initializer word",
    "guidance": "Guidance",
    "count": "Images",
    "strength": "Strength",
    "style_scale": "Style scale",
    "alpha": "Strength (alpha)",
    "size": "Size",
    "iterations": "Iterations",
    "gatys_iterations": "Gatys iterations",
    "loras": "The LoRA",
    "lora_rank": "LoRA rank",
    "lora_blocks": "LoRA blocks",
    "output": "The output",
}


def user_message(exc: BaseException) -> str:
    """One line for the page: a UserError's own message (a setting named by its field's label),
    else the exception's first line; the server's paths (Gradio's upload cache, the output
    folder) taken out (`hide_server_paths`)."""
    if isinstance(exc, SettingError):
        return hide_server_paths(exc.named(FIELD_LABELS.get(exc.setting, exc.setting)))
    if isinstance(exc, UserError):
        return hide_server_paths(str(exc))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return hide_server_paths(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def show_errors(fn: Callable | None = None, *, outputs: int = 0, status: int | None = None) -> Callable:
    """Turn a UserError (and, as a last resort, any error) into Gradio's one-line error toast.

    Works for plain handlers and for generator handlers (which stream progress). A generator
    handler with `outputs` outputs whose `status` output is the progress line first shows the
    error there too, so the page does not keep a stale "running" bar. Unexpected errors are
    logged with their traceback on the server; the page shows one line.
    """
    if fn is None:
        return functools.partial(show_errors, outputs=outputs, status=status)

    def convert(exc: BaseException) -> gr.Error:
        if not isinstance(exc, (UserError, JobCancelled)):
            log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(user_message(exc), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except JobCancelled as exc:  # the user pressed Stop: say so, it is no error
                if status is not None:
                    update = [gr.skip()] * outputs
                    update[status] = progress_html(f"{exc} (Stop pressed)", state="stopped")
                    yield tuple(update) if outputs > 1 else update[0]
            except Exception as exc:  # noqa: BLE001 - shown to the user as one line
                if status is not None:
                    update = [gr.skip()] * outputs
                    update[status] = error_html(user_message(exc))
                    yield tuple(update) if outputs > 1 else update[0]
                raise convert(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            raise convert(exc) from None

    return wrapper


def session_of(request: Any) -> str:
    return getattr(request, "session_hash", None) or ""


def as_path_list(files: Any) -> list[str]:
    """Gradio hands uploads as a path, a list of paths, or file objects; we want paths."""
    if not files:
        return []
    if isinstance(files, (str, Path)):
        files = [files]
    out = []
    for item in files:
        path = item if isinstance(item, (str, Path)) else getattr(item, "name", None) or getattr(item, "path", None)
        if path:
            out.append(str(path))
    return out


def int_in(value: Any, name: str, low: int, high: int) -> int:
    """A whole number from a form field, or one line saying the allowed range."""
    try:  # exact for whole numbers past 2**53 (64-bit seeds), else through float
        number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a number between {low} and {high}") from None
    if (isinstance(number, float) and not math.isfinite(number)) or number != int(number) or not low <= number <= high:
        raise UserError(f"{name} must be a whole number between {low} and {high} (got {value})")
    return int(number)


def float_in(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number between {low:g} and {high:g}") from None
    if not low <= number <= high:
        raise UserError(f"{name} must be between {low:g} and {high:g} (got {value})")
    return number


def stream_job(
    ctx: AppContext, request: Any, kind: str, work: Callable[[Job], Any], label: str, outputs: int
) -> Generator[tuple, None, Job]:
    """Run `work(job)` as the session's job of this kind, yielding the progress line (the first of
    `outputs` outputs; the others unchanged) until it ends. `job = yield from stream_job(...)`
    in a generator handler; `job.result` is what `work` returned; its error is raised here.
    """
    session = session_of(request)
    job = ctx.jobs.start(session, kind)
    unchanged = (gr.skip(),) * (outputs - 1)
    yield (job_progress_html(job, label), *unchanged)
    try:
        for _ in job.run(work, job):
            yield (job_progress_html(job, label), *unchanged)
    finally:
        ctx.jobs.finish(session, kind, job)
    return job


def job_event(start: Any, stop: Any, fn: Callable, inputs: Any, outputs: Any, **options: Any) -> Any:
    """`start.click(fn, inputs, outputs, **options)` with the tab's Start and Stop buttons armed
    around it: Start off and Stop on while the job runs, the other way round once it has ended
    (failed or stopped included). Returns the job's event (chain `.then` on it).

    Why a chain and not a second listener on `start`: Gradio's page runs the listeners of one
    click one after the other, each to its end, so a listener registered after a long job only
    ran once the job had ended, leaving Stop disabled for the whole run and enabled after it.
    Here the arming step is the click's only listener and the job follows it with `.then`.
    Start is off during the run, so a second click cannot queue a second run of this session.
    """
    armed = start.click(
        lambda: (gr.update(interactive=False), gr.update(interactive=True)),
        None,
        [start, stop],
        queue=False,
        show_progress="hidden",
        api_visibility="private",
    )
    event = armed.then(fn, inputs, outputs, **options)
    event.then(
        lambda: (gr.update(interactive=True), gr.update(interactive=False)),
        None,
        [start, stop],
        queue=False,
        show_progress="hidden",
        api_visibility="private",
    )
    return event


def wire_stop(ctx: AppContext, button: Any, kind: str, api_name: str) -> None:
    """The Stop button of a tab: stops this browser session's job of `kind`, bypassing the queue.

    The button is created with interactive=False; `job_event` turns it on while the job runs,
    so nobody presses it to no effect.
    """

    def stop(request: gr.Request) -> None:
        ctx.jobs.stop(session_of(request), kind)

    button.click(stop, None, None, queue=False, api_name=api_name)
