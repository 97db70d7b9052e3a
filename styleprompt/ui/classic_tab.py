"""The Classic tab: every registered stylization method (Gatys, AdaIN, Ghiasi et al., ...) directly.

It offers `styleprompt.evaluation.methods.names(standalone=True)` and runs the chosen one through
the same contract as `styleprompt transfer`, with its networks in the app's model cache. Every
per-method field (Gatys' iterations, ...) and weight-file box comes from the registry
(`Method.fields`, `Method.sources`); this tab names no method. The method chosen at first is one
that can run with the weights at hand (Ghiasi ships its real network); random weights sit
behind an explicit, labelled tick box.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from classic import limits
from styleprompt.evaluation import methods
from styleprompt.plumbing.errors import UserError
from styleprompt.ui.common import (
    AppContext,
    as_path_list,
    float_in,
    format_duration,
    idle_html,
    image_input,
    int_in,
    job_event,
    progress_html,
    show_errors,
    stream_job,
    wire_stop,
)
from styleprompt.ui.serve import IMAGE_SUFFIXES, check_uploads


def parse_style_weights(text: str) -> list[float] | None:
    """ "0.7, 0.3" -> [0.7, 0.3]; empty -> None (equal weights). The method checks the count."""
    from classic.inputs import parse_weights

    return parse_weights(text.replace(";", ",")) if (text or "").strip() else None


def build(ctx: AppContext) -> None:
    s = ctx.settings
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            standalone = methods.names(standalone=True)
            ready, _ = methods.available(standalone, methods.Sources(device=_device(s.device)))
            method = gr.Radio(standalone, value=(ready or standalone)[0], label="Method", elem_id="classic-method")
            content = image_input(type="filepath", label="Content photo", elem_id="classic-content", height=220)
            styles = gr.File(
                label="Style image(s)", file_count="multiple", file_types=["image"], elem_id="classic-styles"
            )
            weights = gr.Textbox(
                label="Style weights, one per style (e.g. 0.7, 0.3; empty: equal)", elem_id="classic-weights"
            )
            mask = image_input(
                type="filepath",
                label="Mask (white: first style, black: second; optional)",
                elem_id="classic-mask",
                height=160,
            )
            with gr.Row():
                alpha = gr.Slider(
                    *limits.span("alpha"), value=1.0, step=0.05, label="Strength (alpha)", elem_id="classic-alpha"
                )
                preserve = gr.Checkbox(value=False, label="Preserve the content's colours", elem_id="classic-preserve")
            with gr.Row():
                size = gr.Number(
                    value=512,
                    precision=0,
                    label="Size (long side, px)",
                    minimum=limits.span("size")[0],
                    maximum=limits.span("size")[1],
                    elem_id="classic-size",
                )
                fields = method_fields(methods.fields_of(standalone), "classic", s)
            sources = methods.sources_of(standalone)
            offered = [src for src in sources if src.app_label]
            users = [methods.label(n) for n in standalone if any(src.app_label for src in methods.get(n).sources)]
            with gr.Accordion(f"Weights ({', '.join(users)})", open=False):
                random_weights = gr.Checkbox(
                    value=False,
                    label="Random weights (--random-weights): a labelled demo of the machinery, not of the method",
                    elem_id="classic-random-weights",
                )
                boxes = [gr.Textbox(label=src.app_label, elem_id=f"classic-{src.elem}") for src in offered]
            with gr.Row():
                run = gr.Button("Stylize", variant="primary", elem_id="classic-run")
                stop = gr.Button("Stop", variant="stop", elem_id="classic-stop", interactive=False)
        with gr.Column(scale=3, min_width=360):
            status = gr.HTML(idle_html("nothing stylized yet"), elem_id="classic-status")
            output = gr.Image(
                label="Result", type="filepath", format="png", interactive=False, elem_id="classic-output"
            )

    @show_errors(outputs=2, status=0)
    def stylize(request: gr.Request, method, content, styles, weights, mask, alpha, preserve, size, *rest):
        # rest: one value per field, the random-weights box, one value per weight file (as laid out above)
        field_values, random_weights = rest[: len(fields)], rest[len(fields)]
        files = dict(zip((src.key for src in offered), rest[len(fields) + 1 :]))
        from styleprompt.plumbing.images import load_image, save_image

        style_method = methods.get(method)
        if not content:
            raise UserError("no content photo; upload one")
        style_files = check_uploads(
            as_path_list(styles),
            what="style images",
            max_count=s.max_uploads,
            max_mb=s.max_upload_mb,
            suffixes=IMAGE_SUFFIXES,
        )
        if not style_files:
            raise UserError("no style image; upload at least one")
        style_weights = parse_style_weights(weights)
        device = _device(s.device)
        sources = methods.Sources(
            device=device,
            random_weights=bool(random_weights),
            files={
                src.key: s.weights_file_for(files.get(src.key), src.what or src.key) for src in style_method.sources
            },
        )
        own = field_options(style_method, fields, field_values, s)  # checked only where they are used
        alpha_value, size_value = (
            float_in(alpha, "Strength", *limits.span("alpha")),
            int_in(size, "Size", *limits.span("size")),
        )
        run_dir = ctx.output.new_run("classic", method)

        def work(job):
            stylizer = style_method.load(sources, ctx.models)  # networks from the app's cache, loaded once
            request = methods.Request(
                styles=[load_image(p) for p in style_files],
                style_weights=style_weights,
                alpha=alpha_value,
                preserve_color=bool(preserve),
                mask=load_image(mask) if mask else None,
                size=size_value,
                options=own,
            )
            result = methods.stylize_measured(stylizer, load_image(content), request, device)
            text = {
                "method": method,
                "styles": ", ".join(p.name for p in style_files),
                "style_weights": str(style_weights),
                "alpha": str(alpha_value),
                "preserve_color": str(bool(preserve)),
                "size": str(size_value),
                **{k: str(v) for k, v in own.items()},
                **result.details,
                "random_weights": str(result.random_weights),
            }
            return save_image(result.image, run_dir / f"{method}.png", text=text), result.random_weights

        job = yield from stream_job(ctx, request, "classic", work, method, outputs=2)
        path, random = job.result
        labelled = " · random weights" if random else ""
        yield progress_html(f"done: {method}{labelled} · {format_duration(job.elapsed)}", state="done"), str(path)

    job_event(
        run,
        stop,
        stylize,
        [method, content, styles, weights, mask, alpha, preserve, size, *fields.values(), random_weights, *boxes],
        [status, output],
        api_name="classic",
        concurrency_limit=s.heavy_concurrency,
        concurrency_id="classic",
        show_progress="hidden",
    )

    wire_stop(ctx, stop, "classic", "stop_classic")


def method_fields(
    wanted: list[methods.Field], tab: str, settings, values: dict[str, Any] | None = None
) -> dict[methods.Field, Any]:
    """One app component per method field (`methods.Field`), elem_id `TAB-ELEM`, in the order given;
    `values`: a first value per option other than the field's default."""
    made: dict[methods.Field, Any] = {}
    for f in wanted:
        top = min(f.maximum, getattr(settings, f.app_limit)) if f.app_limit else f.maximum
        value = (values or {}).get(f.option, f.default)
        if f.slider_step:
            made[f] = gr.Slider(
                f.minimum, top, value=value, step=f.slider_step, label=f.label, elem_id=f"{tab}-{f.elem}"
            )
        else:
            made[f] = gr.Number(
                value=value,
                precision=0 if f.integer else None,
                label=f.label,
                minimum=f.minimum,
                maximum=top,
                elem_id=f"{tab}-{f.elem}",
            )
    return made


def field_options(method: methods.StyleMethod, fields: dict[methods.Field, Any], values: Any, settings) -> dict:
    """The method's own options from the fields' values, each checked against its bounds."""
    own: dict[str, Any] = {}
    for f, value in zip(fields, values):
        if f.option in method.options and f in method.fields:
            top = min(f.maximum, getattr(settings, f.app_limit)) if f.app_limit else f.maximum
            name = f.label.split(" (")[0]
            own[f.option] = int_in(value, name, f.minimum, top) if f.integer else float_in(value, name, f.minimum, top)
    return own


def _device(requested: str | None) -> str:
    from styleprompt.diffusion.models import pick_device

    return str(pick_device(requested))
