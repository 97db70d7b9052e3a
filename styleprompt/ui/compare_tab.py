"""The Compare tab: content photos, style images and a style token -> the comparison grid and
metrics table of `styleprompt compare`, with each method's time.

It calls `styleprompt.evaluation.compare.run_compare`, the function behind the CLI command, with the
cached model (a private text copy, since the token is loaded into it). The methods, their fields
and weight-file boxes come from the registry; the methods ticked at first are those that can run
with the weights at hand (real-weight ones first), the others are listed with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from classic import limits
from styleprompt.evaluation import methods as registry
from styleprompt.evaluation.compare import default_methods, method_names
from styleprompt.ui.classic_tab import field_options, method_fields
from styleprompt.ui.common import (
    AppContext,
    as_path_list,
    format_duration,
    idle_html,
    int_in,
    job_event,
    progress_html,
    show_errors,
    stream_job,
    wire_stop,
)
from styleprompt.ui.generate_tab import recent_choices, selected_embeddings
from styleprompt.ui.serve import IMAGE_SUFFIXES, check_uploads

MAX_CONTENTS = 4


def build(ctx: AppContext) -> Any:
    s = ctx.settings
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            contents = gr.File(
                label=f"Content photos (at most {MAX_CONTENTS})",
                file_count="multiple",
                file_types=["image"],
                height=150,
                elem_id="cmp-contents",
            )
            styles = gr.File(
                label=f"Style images (the artworks; at most {s.max_uploads})",
                file_count="multiple",
                file_types=["image"],
                height=150,
                elem_id="cmp-styles",
            )
            recent = gr.Dropdown(
                choices=recent_choices(ctx),
                value=None,
                allow_custom_value=True,
                label="Style token from training",
                elem_id="cmp-recent",
            )
            upload = gr.File(
                label="...or upload an embedding",
                file_types=[".safetensors", ".pt", ".bin"],
                height=120,
                elem_id="cmp-embedding",
            )
            classes = gr.Textbox(
                value="a city",
                label="Class for the token's prompt (comma-separated for several)",
                elem_id="cmp-classes",
            )
            choices, ticked, info = method_choices(s)
            methods = gr.CheckboxGroup(choices, value=ticked, label="Methods", info=info, elem_id="cmp-methods")
            sources = registry.sources_of(method_names())
            offered = [src for src in sources if src.app_label]
            with gr.Accordion("Weights and sizes", open=False):
                model = gr.Textbox(value=s.model, label="Model for the token methods", elem_id="cmp-model")
                random_weights = gr.Checkbox(
                    value=False,
                    label="Random weights (--random-weights): a labelled demo of the machinery, not of the method",
                    elem_id="cmp-random-weights",
                )
                boxes = [gr.Textbox(label=src.app_label, elem_id=f"cmp-{src.elem}") for src in offered]
                with gr.Row():
                    size = gr.Number(
                        value=512,
                        precision=0,
                        label="Size (long side, px)",
                        minimum=limits.span("size")[0],
                        maximum=limits.span("size")[1],
                        elem_id="cmp-size",
                    )
                    seed = gr.Number(
                        value=0, precision=0, label="Seed", minimum=limits.span("seed")[0], elem_id="cmp-seed"
                    )
                with gr.Row():
                    fields = method_fields(registry.fields_of(method_names()), "cmp", s, compare_defaults(s))
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop", interactive=False)
        with gr.Column(scale=3, min_width=360):
            status = gr.HTML(idle_html("no comparison yet"), elem_id="cmp-status")
            grid = gr.Image(label="Side by side", type="filepath", format="png", interactive=False, elem_id="cmp-grid")
            table = gr.Dataframe(
                value=_empty_table(),
                label="Metrics and timings",
                interactive=False,
                wrap=False,
                max_height=360,
                elem_id="cmp-table",
            )
            reports = gr.File(
                label="Report (HTML, CSV, Markdown)", file_count="multiple", interactive=False, elem_id="cmp-reports"
            )

    @show_errors(outputs=4, status=0)
    def run_compare_ui(
        request: gr.Request, contents, styles, recent, upload, classes, methods, model, random_weights, *rest
    ):
        # rest: one value per weight-file box, size, seed, one value per method field (as laid out above)
        files = dict(zip((src.key for src in offered), rest[: len(offered)]))
        size, seed = rest[len(offered)], rest[len(offered) + 1]
        field_values = rest[len(offered) + 2 :]
        from styleprompt.evaluation.compare import run_compare
        from styleprompt.plumbing.errors import UserError

        content_files = check_uploads(
            as_path_list(contents),
            what="content photos",
            max_count=MAX_CONTENTS,
            max_mb=s.max_upload_mb,
            suffixes=IMAGE_SUFFIXES,
        )
        style_files = check_uploads(
            as_path_list(styles),
            what="style images",
            max_count=s.max_uploads,
            max_mb=s.max_upload_mb,
            suffixes=IMAGE_SUFFIXES,
        )
        if not content_files or not style_files:
            raise UserError("a comparison needs at least one content photo and one style image; upload both")
        chosen = list(methods or [])
        if not chosen:
            raise UserError("no method is ticked; tick at least one")
        embeddings = selected_embeddings(ctx, as_path_list(upload), recent)
        if len(embeddings) > 1:
            raise UserError("choose one style token for a comparison (the list or an upload, not both)")
        class_list = [c.strip() for c in (classes or "").split(",") if c.strip()]
        own: dict[str, Any] = {}
        for name in chosen:  # each ticked method's fields, checked against their bounds
            own.update(field_options(registry.get(name), fields, field_values, s))
        options = dict(
            methods=tuple(chosen),
            random_weights=bool(random_weights),
            weights={src.key: s.weights_file_for(files.get(src.key), src.what or src.key) for src in offered},
            options=own,
            size=int_in(size, "Size", *limits.span("size")),
            seed=int_in(seed, "Seed", *limits.span("seed")),
            device=s.device,
        )
        model_name = s.model_for(model)
        # The diffusion model, from the app's cache, for the methods that read it (the token methods):
        # a private text copy, since the token is loaded into it.
        needs_model = bool(embeddings) and any(
            registry.DIFFUSION_MODEL in registry.get(name).sources for name in chosen
        )
        run_dir = ctx.output.new_run("compare")

        def work(job):
            def progress(message: str, fraction: float) -> None:  # run_compare's own progress; Stop acts here
                job.tick(round(100 * max(0.0, min(1.0, float(fraction)))), 100, message)

            loaded = (
                ctx.models.private_text_copy(ctx.models.get(model_name, s.precision)) if needs_model else model_name
            )
            return run_compare(
                [str(p) for p in content_files],
                [str(p) for p in style_files],
                embedding=str(embeddings[0]) if embeddings else None,
                classes=class_list,
                model=loaded,
                output=str(run_dir),
                progress=progress,
                **options,
            )

        job = yield from stream_job(ctx, request, "compare", work, "comparing", outputs=4)
        view = result_view(job.result)
        text = f"done: {view['summary']} · {format_duration(job.elapsed)}"
        yield progress_html(text, state="done"), view["grid"], view["table"], view["files"]

    job_event(
        run,
        stop,
        run_compare_ui,
        [
            contents,
            styles,
            recent,
            upload,
            classes,
            methods,
            model,
            random_weights,
            *boxes,
            size,
            seed,
            *fields.values(),
        ],
        [status, grid, table, reports],
        api_name="compare",
        concurrency_limit=s.heavy_concurrency,
        concurrency_id="compare",
        show_progress="hidden",
    )

    wire_stop(ctx, stop, "compare", "stop_compare")
    return recent


def compare_defaults(settings) -> dict[str, Any]:
    """Each method field's first value in a comparison here (Gatys: fewer iterations on a CPU)."""
    from styleprompt.diffusion.models import pick_device

    device = str(pick_device(settings.device))
    values: dict[str, Any] = {}
    for name in method_names():
        for option, value in registry.get(name).compare_options({}, 512, device).items():
            values.setdefault(option, value)
    return values


def method_choices(settings) -> tuple[list[tuple[str, str]], list[str], str]:
    """The Methods box: every method, those that can run with the weights at hand first (real-weight
    ones before random ones) and ticked; a random-weights method is labelled so; the others are
    listed with the reason below the box."""
    from styleprompt.diffusion.models import pick_device

    here = registry.Sources(
        device=str(pick_device(settings.device)), files={registry.DIFFUSION_MODEL.key: settings.model}
    )
    ready, not_run = default_methods(here)
    labels = []
    for name in [*ready, *not_run]:
        random = name in ready and registry.get(name).availability(here).random
        labels.append((f"{name} (random weights \u2020)" if random else name, name))
    info = "; ".join(f"not ticked: {name}: {why}" for name, why in not_run.items())
    return labels, ready, info


# The table's first columns (metrics.csv's), shown as headers before any run instead of Gradio's "1 2 3".
TABLE_COLUMNS = ("content", "class", "method", "status", "time_s", "peak_memory_mib")


def _empty_table() -> Any:
    import pandas as pd

    return pd.DataFrame(columns=list(TABLE_COLUMNS))


def result_view(result: Any) -> dict:
    """The grid, the metrics table and the report files of a CompareResult, for the page."""
    import pandas as pd

    files = [str(f) for f in (result.html, result.csv, result.md) if Path(f).is_file()]
    ok = sum(1 for state in result.states.values() if state.ok)
    return {
        "grid": str(result.grid) if Path(result.grid).is_file() else None,
        "table": pd.DataFrame(result.rows) if result.rows else _empty_table(),
        "files": files,
        "summary": f"{ok} of {len(result.status)} methods ran",
    }
