"""The Train tab: artworks in, a style token out, with live progress, loss and previews.

It calls `styleprompt.diffusion.training.train` exactly as the CLI does, with `TrainCallbacks` feeding the
page (progress with ETA, the loss curve, each preview as it is rendered) and the Stop button
(the trainer stops after the current step and keeps a resumable checkpoint).
"""

from __future__ import annotations

import math
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from classic import limits
from styleprompt.diffusion.config import TrainConfig, training_default
from styleprompt.diffusion.models import MODEL_CHOICES_HELP
from styleprompt.diffusion.training_run import TrainingRun
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
    session_of,
    show_errors,
    wire_stop,
)
from styleprompt.ui.serve import IMAGE_SUFFIXES, check_uploads, stage_images

_DEFAULTS = TrainConfig(images="")
# The world classes the "Paint world pictures" helper draws by default, the same four as the
# README's `styleprompt world --class ...` example and bench/micro_ti.py's token runs: the other
# classes (boat, fish, ...) stay unseen, for prompts that test whether the token learned a style.
WORLD_TRAINING_CLASSES = ["lighthouse", "house", "city", "tree"]
PRECISIONS = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
# What the run learns (TrainConfig.adapter): the token alone, or pivotal tuning (issue 24).
ADAPTERS = [("style token", "none"), ("style token + LoRA", "lora")]


@dataclass
class TrainTab:
    """The components other tabs hook into (Generate refreshes its token list after a run)."""

    start_event: Any
    embedding: Any  # gr.State: the path of the last trained embedding in this session


def world_classes_all() -> list[str]:
    from styleprompt.micro.world import CLASSES

    return list(CLASSES)


def empty_loss_frame():
    import pandas as pd

    return pd.DataFrame(
        {
            "step": pd.Series([], dtype="int64"),
            "loss": pd.Series([], dtype="float64"),
            "series": pd.Series([], dtype="object"),
        }
    )


def loss_frame_of(losses: list[tuple[int, float]], validation: list[tuple[int, float]]):
    """The live plot's rows: the training loss, its moving average and the validation loss (the
    curve that tells when to stop, `styleprompt.diffusion.validation`), one `series` each, as loss.png draws them."""
    import pandas as pd

    from styleprompt.diffusion.training import moving_average

    if not losses and not validation:
        return empty_loss_frame()
    rows = [(step, value, "loss") for step, value in losses]
    rows += [
        (step, value, "moving average") for (step, _), value in zip(losses, moving_average([v for _, v in losses]))
    ]
    rows += [(step, value, "validation") for step, value in validation]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


class _RunFeed:
    """What the trainer's callbacks report, read by the page's refresh loop (another thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.losses: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        self.previews: list[tuple[str, str]] = []
        self.phase = "loading the model"

    def loss_frame(self):
        with self.lock:
            losses, validation = list(self.losses), list(self.validation)
        return loss_frame_of(losses, validation)

    def gallery(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.previews)


FORMAT_NOTES = {
    "diffusers": "diffusers `load_textual_inversion`, styleprompt",
    "a1111": "AUTOMATIC1111 / Forge `embeddings/` (pickle .pt)",
    "emb_params": "AUTOMATIC1111, ComfyUI (safetensors)",
    "a1111-png": "AUTOMATIC1111 (the embedding inside a preview PNG)",
    "sdxl": "SDXL tools (clip_l / clip_g)",
    "sdxl-pair": "diffusers' two-call SDXL loading",
    "lora-diffusers": "diffusers `load_lora_weights`, styleprompt `--lora` and this app's Generate tab",
    "lora-kohya": "AUTOMATIC1111, Forge, ComfyUI (kohya LoRA)",
    "webui-embedding": "the token for AUTOMATIC1111, Forge, ComfyUI `embeddings/`, beside the kohya LoRA",
}


def lora_downloads(embedding: Path) -> list[tuple[Path, str]]:
    """The run's LoRA files beside its token, and the token named for the kohya LoRA (none for a
    token-only run)."""
    run = TrainingRun(embedding.parent)
    named = [(run.lora, "lora-diffusers"), (run.kohya_lora, "lora-kohya"), (run.webui_embedding, "webui-embedding")]
    return [(path, fmt) for path, fmt in named if path.is_file()]


def embedding_downloads(embedding: Path) -> tuple[list[str], str]:
    """The trained token in every format that can hold it (one subfolder per format), the run's
    LoRA files where it trained one, and a table saying which file is which format, since
    several share a name."""
    from styleprompt.diffusion.formats import export_all, read_embedding

    written = export_all(read_embedding(embedding), TrainingRun(embedding.parent).formats)
    files = [(embedding, "diffusers")]  # the run's own file; the diffusers copy would be the same bytes
    files += [(path, fmt) for fmt, paths in written.items() if fmt != "diffusers" for path in paths]
    files += lora_downloads(embedding)
    table = "| file | format | loads in |\n|---|---|---|\n" + "\n".join(
        f"| `{path.name}` | {fmt} | {FORMAT_NOTES.get(fmt, '')} |" for path, fmt in files
    )
    return [str(path) for path, _ in files], table


def _adapter_of(value: Any) -> str:
    """The radio's value, checked (the API can send anything)."""
    offered = [v for _, v in ADAPTERS]
    if value not in offered:
        raise UserError(f"learn must be one of {', '.join(repr(label) for label, _ in ADAPTERS)} (got {value!r})")
    return str(value)


def build(ctx: AppContext) -> TrainTab:
    s = ctx.settings
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            files = gr.File(
                label=f"Artworks: 3-{s.max_uploads} images in one style (at most {s.max_upload_mb:g} MB each)",
                file_count="multiple",
                file_types=["image"],
                elem_id="train-artworks",
            )
            with gr.Accordion("No artworks at hand? Paint world pictures in a style (for the micro model)", open=False):
                gr.Markdown(
                    "Upload any painting: the real Ghiasi et al. network paints pictures of the micro model's "
                    "world (lighthouses, houses, boats, ...) in its style, ready to train a token on "
                    "(`--model micro`, 64 px)."
                )
                with gr.Row():
                    world_style = image_input(
                        label="Style painting", type="pil", height=160, elem_id="train-world-style"
                    )
                    with gr.Column():
                        world_count = gr.Number(
                            value=8,
                            label="Pictures",
                            precision=0,
                            minimum=1,
                            maximum=s.max_uploads,
                            elem_id="train-world-count",
                        )
                        world_button = gr.Button("Paint world pictures", elem_id="train-world-make")
                world_classes = gr.CheckboxGroup(
                    world_classes_all(),
                    value=WORLD_TRAINING_CLASSES,
                    label="Classes to draw, in turn (leave some out to prompt for them later: unseen classes)",
                    elem_id="train-world-classes",
                )
            folder = gr.Textbox(  # only where the server names folders (--art-folder): a path is a read on the server
                label="...or a folder of artworks on the server",
                placeholder=str(s.art_folders[0]) if s.art_folders else "",
                visible=bool(s.art_folders),
                elem_id="train-folder",
            )
            with gr.Row():
                token = gr.Textbox(value=_DEFAULTS.token, label="Token name", elem_id="train-token")
                init_word = gr.Textbox(value=_DEFAULTS.init_word, label="Initializer word", elem_id="train-init-word")
            with gr.Row():
                vectors = gr.Number(
                    value=int(training_default(s.model, "vectors")),
                    label="Vectors",
                    precision=0,
                    minimum=limits.span("vectors")[0],
                    maximum=limits.span("vectors")[1],
                    elem_id="train-vectors",
                )
                steps = gr.Number(
                    value=_DEFAULTS.steps,
                    label="Steps",
                    precision=0,
                    minimum=1,
                    maximum=s.max_train_steps,
                    elem_id="train-steps",
                )
            with gr.Row():
                resolution = gr.Number(
                    value=0,
                    label="Resolution (0: the model's own)",
                    precision=0,
                    minimum=0,
                    maximum=limits.span("resolution")[1],
                    elem_id="train-resolution",
                )
                lr = gr.Number(value=_DEFAULTS.lr, label="Learning rate", elem_id="train-lr")
            with gr.Row():
                adapter = gr.Radio(
                    ADAPTERS,
                    value=_DEFAULTS.adapter,
                    label="Learn (the LoRA: pivotal tuning, weights beside the token for what no word reaches)",
                    elem_id="train-adapter",
                )
                lora_rank = gr.Number(
                    value=_DEFAULTS.lora_rank,
                    label="LoRA rank",
                    precision=0,
                    minimum=limits.span("lora_rank")[0],
                    maximum=limits.span("lora_rank")[1],
                    elem_id="train-lora-rank",
                )
            with gr.Accordion("More settings", open=False):
                model = gr.Textbox(value=s.model, label=f"Model ({MODEL_CHOICES_HELP})", elem_id="train-model")
                with gr.Row():
                    preview_every = gr.Number(
                        value=_DEFAULTS.preview_every,
                        label="Preview every N steps (0: never)",
                        precision=0,
                        minimum=0,
                        elem_id="train-preview-every",
                    )
                    preview_steps = gr.Number(
                        value=_DEFAULTS.preview_steps,
                        label="Preview sampling steps",
                        precision=0,
                        minimum=limits.span("preview_steps", s.max_gen_steps)[0],
                        maximum=limits.span("preview_steps", s.max_gen_steps)[1],
                        elem_id="train-preview-steps",
                    )
                with gr.Row():
                    grad_accum = gr.Number(
                        value=_DEFAULTS.grad_accum, label="Gradient accumulation", precision=0, minimum=1, maximum=64
                    )
                with gr.Row():
                    precision = gr.Dropdown(list(PRECISIONS), value=_DEFAULTS.mixed_precision, label="Mixed precision")
                    seed = gr.Number(value=_DEFAULTS.seed, label="Seed", precision=0, minimum=limits.span("seed")[0])
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="train-start")
                stop = gr.Button("Stop", variant="stop", elem_id="train-stop", interactive=False)
        with gr.Column(scale=3, min_width=360):
            status = gr.HTML(idle_html("no training yet"), elem_id="train-status")
            loss_plot = gr.LinePlot(
                empty_loss_frame(),
                x="step",
                y="loss",
                color="series",
                title="Training loss and validation loss (fixed set)",
                elem_id="train-loss",
                height=260,
            )
            previews = gr.Gallery(label="Previews", columns=4, height=280, elem_id="train-previews")
            downloads = gr.File(
                label="Download the embedding (and the LoRA)",
                file_count="multiple",
                interactive=False,
                elem_id="train-downloads",
            )
            formats_note = gr.Markdown(elem_id="train-formats")
    embedding = gr.State(None)

    @show_errors(outputs=6, status=0)
    def run_training(
        files,
        folder,
        model,
        token,
        init_word,
        vectors,
        steps,
        resolution,
        lr,
        preview_every,
        preview_steps,
        grad_accum,
        precision,
        seed,
        adapter,
        lora_rank,
        request: gr.Request,
    ):
        from styleprompt.diffusion.training import TrainCallbacks, train

        uploads = check_uploads(
            as_path_list(files),
            what="artworks",
            max_count=s.max_uploads,
            max_mb=s.max_upload_mb,
            suffixes=IMAGE_SUFFIXES,
        )
        total = int_in(steps, "Steps", 1, s.max_train_steps)
        cfg_values = dict(
            token=(token or "").strip(),
            init_word=(init_word or "").strip(),
            model=s.model_for(model),
            vectors=int_in(vectors, "Vectors", *limits.span("vectors")),
            steps=total,
            resolution=int_in(resolution, "Resolution", 0, limits.span("resolution")[1]) or None,  # 0: native
            lr=float_in(lr, "Learning rate", 0.0, math.inf),  # positive: the library says so, by this label
            preview_every=int_in(preview_every, "Preview every", 0, s.max_train_steps),
            preview_steps=int_in(
                preview_steps, "Preview sampling steps", *limits.span("preview_steps", s.max_gen_steps)
            ),
            grad_accum=int_in(grad_accum, "Gradient accumulation", 1, 64),
            mixed_precision=precision if precision in PRECISIONS else "no",
            seed=int_in(seed, "Seed", *limits.span("seed")),
            adapter=_adapter_of(adapter),
            lora_rank=int_in(lora_rank, "LoRA rank", *limits.span("lora_rank")),
        )
        run_dir = ctx.output.new_run("train", cfg_values["token"])
        try:
            images = stage_images(uploads, folder, TrainingRun(run_dir).artworks, max_count=s.max_uploads, settings=s)
        except UserError:
            shutil.rmtree(run_dir, ignore_errors=True)  # a refused request leaves no empty run behind
            raise
        cfg = TrainConfig(images=str(images), output=str(run_dir), device=s.device, **cfg_values)
        session = session_of(request)
        job = ctx.jobs.start(session, "train", tqdm_ticks=False)
        feed = _RunFeed()

        def on_step(step: int, steps_total: int, loss: float) -> None:
            with feed.lock:
                feed.losses.append((step, float(loss)))
                feed.phase = "training"
            job.tick(step, steps_total, "training")

        def on_validation(step: int, loss: float, held_out: float | None) -> None:
            with feed.lock:
                feed.validation.append((step, float(loss)))

        def on_preview(step: int, path: Path) -> None:
            with feed.lock:
                feed.previews.append((str(path), f"step {step}"))

        def work():
            base = ctx.models.get(cfg.model, PRECISIONS[cfg.mixed_precision])
            # A LoRA wraps the UNet's layers: it trains on the run's own UNet, never the shared one.
            own = ctx.models.private_unet_copy if cfg.adapter == "lora" else ctx.models.private_text_copy
            loaded = own(base)
            with feed.lock:
                feed.phase = "preparing (latents, first preview)"
            callbacks = TrainCallbacks(
                on_step=on_step,
                on_preview=on_preview,
                should_stop=lambda: job.stop_requested,
                on_validation=on_validation,
            )
            return train(cfg, loaded=loaded, callbacks=callbacks)

        def status() -> str:
            p = job.progress
            stopping = " · stopping after this step" if job.stop_requested else ""
            if not p.total:
                return progress_html(f"{cfg.token}: {feed.phase}, {format_duration(job.elapsed)}{stopping}")
            last = feed.losses[-1][1] if feed.losses else float("nan")
            return progress_html(
                f"training {cfg.token}: step", p.done, p.total, f"loss {last:.4f}{stopping}", eta=p.eta_seconds()
            )

        yield status(), empty_loss_frame(), [], None, "", gr.skip()
        try:
            for _ in job.run(work):  # Gradio sends only what changed since the last yield
                yield status(), feed.loss_frame(), feed.gallery(), gr.skip(), gr.skip(), gr.skip()
        finally:
            ctx.jobs.finish(session, "train", job)
        result = job.result
        loss = f" · last loss {result.final_loss:.4f}" if result.final_loss is not None else ""
        took = format_duration(job.elapsed)
        if result.stopped_early:
            text = f"stopped at step {result.steps_done}/{total}{loss} · {took}; the embedding so far is below"
        else:
            text = f"finished {cfg.token}: step {result.steps_done}/{total}{loss} · {took}"
        files_out, table = embedding_downloads(result.embedding_path)
        yield (
            progress_html(text, result.steps_done, total, state="done"),
            feed.loss_frame(),
            feed.gallery(),
            files_out,
            table,
            str(result.embedding_path),
        )

    inputs = [
        files,
        folder,
        model,
        token,
        init_word,
        vectors,
        steps,
        resolution,
        lr,
        preview_every,
        preview_steps,
        grad_accum,
        precision,
        seed,
        adapter,
        lora_rank,
    ]
    event = job_event(
        start,
        stop,
        run_training,
        inputs,
        [status, loss_plot, previews, downloads, formats_note, embedding],
        api_name="train",
        concurrency_limit=s.heavy_concurrency,
        concurrency_id="train",
        show_progress="hidden",
    )

    @show_errors(outputs=1)
    def paint_world(style_image, count, classes):
        from styleprompt.micro.world import make_pictures, write_pictures

        if style_image is None:
            raise UserError("upload a style painting first")
        n = int_in(count, "Pictures", 1, s.max_uploads)
        chosen = [c for c in world_classes_all() if c in (classes or [])]  # typed values (the API) checked
        if not chosen:
            raise UserError("choose at least one class to draw")
        folder_out = ctx.output.new_run("world", "pictures")
        pictures = make_pictures(style_image.convert("RGB"), chosen, n, seed=0)
        return [str(p) for p in write_pictures(pictures, folder_out)]

    world_button.click(
        paint_world,
        [world_style, world_count, world_classes],
        [files],
        api_name="paint_world",
        concurrency_limit=s.heavy_concurrency,
        concurrency_id="train",
        show_progress="full",
    )

    wire_stop(ctx, stop, "train", "stop_training")
    return TrainTab(start_event=event, embedding=embedding)
