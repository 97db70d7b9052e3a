"""The Generate tab: a model, one or more style tokens, a prompt, and a gallery that keeps each
image's parameters (shown on selection, and in the PNG's text chunks when downloaded).

It calls `styleprompt.diffusion.generate` exactly as `styleprompt generate` does. Tokens are loaded into
a private copy of the model's text side (`ModelCache.view_with`), never into the shared model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from classic import limits
from styleprompt.diffusion.models import MODEL_CHOICES_HELP
from styleprompt.diffusion.templates import CLASS_NAMES
from styleprompt.diffusion.tokens import file_sha256
from styleprompt.plumbing.errors import SettingError, UserError
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
from styleprompt.ui.serve import EMBEDDING_SUFFIXES, LORA_SUFFIXES, check_uploads

MAX_EMBEDDINGS = 8
MAX_LORAS = 4  # each LoRA view holds its own UNet (ModelCache.private_unet_copy)
LORA_SCALE = (0.0, 2.0)  # the slider's range; the CLI's --lora FILE:SCALE takes -10..10
HISTORY_LIMIT = 48  # images a session's gallery keeps


@dataclass
class GenerateTab:
    recent: Any  # the dropdown of trained embeddings; refreshed after each training run


def peek_token(path: str | Path) -> str | None:
    """The token a file will add, read without loading a model (for labels and the prompt helper)."""
    from styleprompt.diffusion.formats import read_embedding

    try:
        return read_embedding(path).token
    except (UserError, OSError, ValueError, KeyError):  # a label only; a bad file is reported when used
        return None


def recent_choices(ctx: AppContext) -> list[tuple[str, str]]:
    return [(f"{peek_token(p) or '?'} · {p.parent.name}", str(p)) for p in ctx.output.trained_embeddings()]


def selected_embeddings(ctx: AppContext, uploads: Any, recent: Any) -> list[Path]:
    s = ctx.settings
    files = check_uploads(
        as_path_list(uploads),
        what="embeddings",
        max_count=MAX_EMBEDDINGS,
        max_mb=s.max_upload_mb,
        suffixes=EMBEDDING_SUFFIXES,
    )
    chosen = []  # the lists accept typed values (the API has no page to refresh them): check each one
    for value in [recent] if isinstance(recent, str) else list(recent or []):
        path = Path(value)
        if not ctx.output.contains(path) or not path.is_file():  # only this app's own trained files
            raise UserError(f"{value} is not a trained embedding of this app; pick one from the list or upload it")
        chosen.append(path)
    paths = files + chosen
    if len(paths) > MAX_EMBEDDINGS:
        raise UserError(f"{len(paths)} embeddings chosen; at most {MAX_EMBEDDINGS} can be used together")
    return paths


def selected_loras(ctx: AppContext, uploads: Any) -> list[Path]:
    """The uploaded LoRA files, checked like embedding uploads (count, type, size)."""
    return check_uploads(
        as_path_list(uploads),
        what="LoRAs",
        max_count=MAX_LORAS,
        max_mb=ctx.settings.max_upload_mb,
        suffixes=LORA_SUFFIXES,
    )


def load_app_loras(view: Any, files: list[Path], scale: float) -> list[dict]:
    """`lora.load_loras` as `styleprompt generate --lora FILE:SCALE` calls it, with its
    one-line errors said as the page says them (the upload, not the command-line flag)."""
    from styleprompt.diffusion.lora import load_loras

    try:
        return load_loras(view, [(str(p), scale) for p in files])
    except SettingError as exc:  # the library names the setting (`loras`); the page, the upload
        raise UserError(exc.named("the LoRA")) from None


def template_prompt(tokens: list[str], cls: str) -> str:
    """The prompt users type, "a <S> style of a [class]"; several tokens share the slot."""
    subject = (cls or "").strip() or "lighthouse"
    return f"a {' '.join(tokens) or '<S>'} style of a {subject}"


def caption(params: dict, seed: Any) -> str:
    parts = [f"seed {seed}"]
    if params.get("steps"):
        parts.append(f"{params['steps']} steps")
    if params.get("scheduler"):
        parts.append(str(params["scheduler"]))
    if params.get("guidance") is not None:
        parts.append(f"cfg {params['guidance']}")
    return " · ".join(parts)


def build(ctx: AppContext) -> GenerateTab:
    from styleprompt.diffusion.generate import SCHEDULERS

    s = ctx.settings
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            model = gr.Textbox(value=s.model, label=f"Model ({MODEL_CHOICES_HELP})", elem_id="gen-model")
            with gr.Row():
                recent = gr.Dropdown(
                    choices=recent_choices(ctx),
                    value=[],
                    multiselect=True,
                    allow_custom_value=True,
                    label="Style tokens from training",
                    elem_id="gen-recent",
                    scale=4,
                )
                refresh = gr.Button("↻", size="sm", scale=0, min_width=40, elem_id="gen-refresh")
            uploads = gr.File(
                label=f"...or upload embeddings (.safetensors, .pt, .bin; at most {MAX_EMBEDDINGS})",
                file_count="multiple",
                file_types=list(EMBEDDING_SUFFIXES),
                height=140,
                elem_id="gen-embeddings",
            )
            style_scale = gr.Slider(
                *limits.span("style_scale"),
                value=1.0,
                step=0.05,
                label="Style scale (multiplies the token vectors)",
                elem_id="gen-style-scale",
            )
            lora_files = gr.File(
                label=f"LoRAs (.safetensors, diffusers or kohya format; at most {MAX_LORAS})",
                file_count="multiple",
                file_types=list(LORA_SUFFIXES),
                height=120,
                elem_id="gen-loras",
            )
            lora_scale = gr.Slider(
                *LORA_SCALE,
                value=1.0,
                step=0.05,
                label="LoRA scale (the weight of every uploaded LoRA)",
                elem_id="gen-lora-scale",
            )
            with gr.Row():
                cls = gr.Dropdown(
                    choices=CLASS_NAMES,
                    value="lighthouse",
                    allow_custom_value=True,
                    label="Subject [class]",
                    elem_id="gen-class",
                    scale=3,
                )
                helper = gr.Button('Write "a <S> style of a [class]"', elem_id="gen-helper", scale=2)
            prompt = gr.Textbox(
                label="Prompt", lines=2, placeholder="a <my-style> style of a lighthouse", elem_id="gen-prompt"
            )
            negative = gr.Textbox(label="Negative prompt", elem_id="gen-negative")
            with gr.Row():
                steps = gr.Slider(
                    *limits.span("steps", s.max_gen_steps), value=25, step=1, label="Steps", elem_id="gen-steps"
                )
                guidance = gr.Slider(
                    *limits.span("guidance"), value=7.5, step=0.5, label="Guidance", elem_id="gen-guidance"
                )
            with gr.Row():
                scheduler = gr.Dropdown(
                    choices=list(SCHEDULERS), value=SCHEDULERS[0], label="Scheduler", elem_id="gen-scheduler"
                )
                seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="gen-seed")
                count = gr.Slider(
                    *limits.span("count", s.max_batch), value=1, step=1, label="Images", elem_id="gen-count"
                )
            with gr.Accordion("Start from a content image (image to image)", open=False):
                content = image_input(type="filepath", label="Content image", elem_id="gen-content", height=220)
                strength = gr.Slider(
                    *limits.span("strength"),
                    value=0.6,
                    step=0.05,
                    label="Strength (how far from the content image)",
                    elem_id="gen-strength",
                )
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                stop = gr.Button("Stop", variant="stop", elem_id="gen-stop", interactive=False)
        with gr.Column(scale=3, min_width=360):
            status = gr.HTML(idle_html("nothing generated yet"), elem_id="gen-status")
            gallery = gr.Gallery(
                label="Gallery (newest first; select an image for its parameters)",
                columns=3,
                height=460,
                format="png",
                elem_id="gen-gallery",
            )
            params = gr.JSON(label="Parameters of the selected image", elem_id="gen-params")
    history = gr.State([])

    @show_errors(outputs=4, status=0)
    def run_generate(
        model,
        uploads,
        recent,
        style_scale,
        prompt,
        negative,
        steps,
        guidance,
        scheduler,
        seed,
        count,
        content,
        strength,
        history,
        lora_files,
        lora_scale,
        request: gr.Request,
    ):
        from styleprompt.diffusion.generate import GenerateConfig, generate, load_embeddings, save_generated

        paths = selected_embeddings(ctx, uploads, recent)
        if not (prompt or "").strip():
            raise UserError('the prompt is empty; write one, or use the "a <S> style of a [class]" button')
        seed_value = int_in(seed, "Seed", -1, limits.MAX_SEED)  # -1: drawn at random
        if seed_value < 0:
            seed_value = random.randrange(2**31)
        scale = float_in(style_scale, "Style scale", *limits.span("style_scale"))
        loras = selected_loras(ctx, lora_files)
        weight = float_in(lora_scale, "LoRA scale", *LORA_SCALE)
        cfg = GenerateConfig(
            prompt=prompt.strip(),
            negative_prompt=(negative or "").strip(),
            steps=int_in(steps, "Steps", *limits.span("steps", s.max_gen_steps)),
            guidance=float_in(guidance, "Guidance", *limits.span("guidance")),
            scheduler=scheduler,
            seed=seed_value,
            count=int_in(count, "Images", *limits.span("count", s.max_batch)),
            image=content or None,
            strength=float_in(strength, "Strength", *limits.span("strength")),
        )
        model_name = s.model_for(model)

        def prepare(view):
            tokens = load_embeddings(view, [str(p) for p in paths], scale)
            if loras:
                load_app_loras(view, loras, weight)
            return tokens

        def work(job):
            if paths or loras:
                label = (tuple(file_sha256(p) for p in paths), scale)
                if loras:
                    label += (tuple(file_sha256(p, length=64) for p in loras), weight)
                loaded, tokens = ctx.models.view_with(model_name, s.precision, label, prepare, own_unet=bool(loras))
            else:
                loaded, tokens = ctx.models.get(model_name, s.precision), []
            with ctx.models.lock_for(loaded):
                items = generate(loaded, cfg, tokens, show_progress=False)  # the page shows the progress
            run_dir = ctx.output.new_run("generate", "-".join(t.strip("<>") for t in tokens) or "plain")
            return items, save_generated(items, run_dir)

        job = yield from stream_job(ctx, request, "generate", work, "generating", outputs=4)
        items, files = job.result
        new = [
            {"path": str(path), "caption": caption(item.params, item.seed), "params": dict(item.params, seed=item.seed)}
            for item, path in zip(items, files)
        ]
        history = (new + list(history or []))[:HISTORY_LIMIT]
        done = (
            f"done: {len(new)} image{'s' if len(new) != 1 else ''} · seed {seed_value} · {format_duration(job.elapsed)}"
        )
        yield (
            progress_html(done, state="done"),
            [(h["path"], h["caption"]) for h in history],
            new[0]["params"] if new else None,
            history,
        )

    job_event(
        run,
        stop,
        run_generate,
        [
            model,
            uploads,
            recent,
            style_scale,
            prompt,
            negative,
            steps,
            guidance,
            scheduler,
            seed,
            count,
            content,
            strength,
            history,
            lora_files,
            lora_scale,
        ],
        [status, gallery, params, history],
        api_name="generate",
        concurrency_limit=s.heavy_concurrency,
        concurrency_id="generate",
        show_progress="hidden",
    )

    wire_stop(ctx, stop, "generate", "stop_generate")

    def show_params(history, evt: gr.SelectData):
        if history and 0 <= evt.index < len(history):
            return history[evt.index]["params"]
        return None

    gallery.select(show_params, [history], [params], queue=False, api_visibility="private")

    @show_errors
    def write_prompt(cls, uploads, recent):
        tokens = [peek_token(p) or "<S>" for p in selected_embeddings(ctx, uploads, recent)]
        return template_prompt(tokens, cls)

    helper.click(write_prompt, [cls, uploads, recent], [prompt], queue=False, api_name="prompt_helper")

    refresh.click(refresher(ctx), None, [recent], queue=False, api_visibility="private")
    return GenerateTab(recent=recent)


def refresher(ctx: AppContext):
    """A handler that re-reads the trained tokens into a dropdown (it keeps its single or multiple choice)."""

    def refresh():
        return gr.Dropdown(choices=recent_choices(ctx))

    return refresh
