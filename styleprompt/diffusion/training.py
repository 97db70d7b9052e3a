"""Textual inversion of a style: one readable training loop on accelerate.

The math is diffusers' `examples/textual_inversion`: encode the artwork to latents, add noise at a
random timestep, predict the noise (or the velocity, by the scheduler's prediction type) with the
frozen UNet conditioned on a prompt holding the placeholder, and descend the MSE on the
placeholder's embedding rows only. What differs, and why:
- Only the placeholder rows are a parameter (`LearnedTokens`), spliced into the frozen table's
  output. Every other row stays bit-identical by construction; the optimizer holds n x d values
  instead of the whole 49408 x 768 table, and there is no per-step copy-back of that table.
- VAE latents are computed once per artwork (`data.LatentCache`).
- Checkpoints are safetensors + JSON (`checkpoints.py`): nothing is unpickled on resume.
- SDXL (diffusers' `textual_inversion_sdxl.py` math): both text encoders learn their own rows for
  the same token names, the UNet sees both encoders' penultimate states side by side plus the
  pooled embedding and the micro-conditioning (original size, crop corner, target size), and the
  result is saved as A1111/ComfyUI's `{"clip_l", "clip_g"}` file plus diffusers' pair of files.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from classic import limits
from styleprompt.diffusion import checkpoints as ckpt
from styleprompt.diffusion import lora as lora_lib
from styleprompt.diffusion import validation
from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.data import Artwork, CropWindow, LatentCache, load_artworks
from styleprompt.diffusion.formats import Embedding, write_embedding
from styleprompt.diffusion.models import (
    LoadedModel,
    is_sdxl,
    load_pipeline,
    move_pipeline,
    native_resolution,
    pick_device,
    text_encoders,
)
from styleprompt.diffusion.templates import PromptSampler
from styleprompt.diffusion.tokens import add_placeholder_tokens, expand_token, save_diffusers_embedding
from styleprompt.diffusion.training_run import TrainingRun, artworks_digest
from styleprompt.plumbing import cpu_threads
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import atomic_path, check_output_folder, remove_stale_temporaries
from styleprompt.plumbing.images import save_image

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good embedding was kept."""


class LearnedTokens(nn.Module):
    """A frozen token-embedding table whose placeholder rows come from a small fp32 parameter.

    The table is kept outside the module's parameters and state dict (it is the text encoder's,
    frozen, and may be fp16/bf16); only `vectors` trains and is saved.
    """

    table: nn.Embedding
    ids: torch.Tensor

    def __init__(self, table: nn.Embedding, ids: list[int], norm_cap: float = 0.0):
        super().__init__()
        object.__setattr__(self, "table", table)
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=table.weight.device), persistent=False)
        self.vectors = nn.Parameter(table.weight[ids].detach().float().clone())
        # The longest of the model's own word embeddings, times the cap (0: no cap).
        self.max_norm = float(table.weight.detach().float().norm(dim=-1).max()) * norm_cap

    @torch.no_grad()
    def cap_norms(self) -> None:
        """Keep each learned vector no longer than the model's longest word embedding (x the cap).

        Why: at A1111's lr 5e-3 a vector keeps growing long after its direction has settled. On
        the micro model a starry token found the direction of the word "starry" (cosine 0.70)
        at twice that word's length, and its pictures overshot the style (docs/micro.md). The cap
        keeps a token within the range of lengths the text encoder was trained on.
        """
        if self.max_norm <= 0:
            return
        norms = self.vectors.norm(dim=-1, keepdim=True)
        self.vectors.mul_(torch.clamp(self.max_norm / norms.clamp_min(1e-12), max=1.0))

    @property
    def weight(self) -> torch.Tensor:  # code that inspects the input embeddings sees the table
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.table(input_ids)
        match = input_ids.unsqueeze(-1) == self.ids
        hit = match.any(-1, keepdim=True)
        learned = self.vectors.to(out.dtype)[match.to(torch.long).argmax(-1)]
        return torch.where(hit, learned, out)

    @torch.no_grad()
    def write_back(self) -> nn.Embedding:
        """Copy the learned vectors into the table's rows and return the plain table."""
        self.table.weight[self.ids] = self.vectors.to(self.table.weight.dtype)
        return self.table


@dataclass
class TrainResult:
    output_dir: Path
    embedding_path: Path
    steps_done: int
    final_loss: float | None
    stopped_early: bool
    loaded: LoadedModel
    lora_path: Path | None = None  # --adapter lora: diffusers' file (the kohya one beside it)


@dataclass
class SdxlConditioning:
    """What SDXL's UNet needs besides the first encoder's prompt: the second tokenizer's ids and
    the micro-conditioning rows (original size, crop corner, target size) per item."""

    input_ids_2: torch.Tensor
    time_ids: torch.Tensor


@dataclass
class Batch:
    """One micro-batch: latents with their noise and timesteps, the prompts' token ids, where each
    crop came from, and SDXL's extra conditioning (None for SD 1.x/2.x)."""

    latents: torch.Tensor
    input_ids: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    windows: list[CropWindow]
    sdxl: SdxlConditioning | None = None


@dataclass
class TrainCallbacks:
    """Hooks for the app: progress, new previews, and a stop request checked every step."""

    on_step: Callable[[int, int, float], None] | None = None
    on_preview: Callable[[int, Path], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_validation: Callable[[int, float, float | None], None] | None = None  # step, val_loss, val_heldout


def _fingerprint(cfg: TrainConfig, family: str) -> dict:
    found = {"token": cfg.token, "vectors": cfg.vectors, "model": cfg.model, "family": family}
    if cfg.adapter != "none":  # a token-only checkpoint keeps the fingerprint it always had
        found["adapter"] = cfg.adapter
    return found


class LossLog:
    """loss.csv, appended a row per step and flushed; truncated to the resume step on resume.

    A token run's log (`validation=True`) adds `val_loss` and `val_heldout` (the validation
    losses, `validation.py`), filled every --validate-every steps and empty elsewhere; they come
    last, so readers of the first four columns keep working (the micro build's log has only those).
    """

    FIELDS = ["step", "loss", "lr", "elapsed_s"]
    VALIDATION_FIELDS = ["val_loss", "val_heldout"]

    def __init__(self, path: Path, resume_step: int, validation: bool = False):
        self.path = path
        self.fields = self.FIELDS + (self.VALIDATION_FIELDS if validation else [])
        rows = self.read(path) if resume_step > 0 else []
        rows = [r for r in rows if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.rows = rows
        self.handle = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, self.fields, extrasaction="ignore")

    @staticmethod
    def read(path: Path) -> list[dict]:
        """The rows of a run's loss.csv; a torn last line (a kill mid-write) is dropped, any other damage refused."""
        if not path.is_file():
            return []
        fix = f"move {path.name} out of {path.parent} to resume without its earlier rows"
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("elapsed_s")]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"cannot read {path}: not a loss log ({type(exc).__name__}); {fix}") from None
        for number, row in enumerate(rows, start=2):
            try:
                int(row["step"]), float(row["loss"]), float(row["elapsed_s"])
            except (KeyError, TypeError, ValueError):
                raise UserError(
                    f"cannot read {path}: line {number} is not step,loss,lr,elapsed_s numbers; {fix}"
                ) from None
        return rows

    def append(
        self, step: int, loss: float, lr: float, elapsed: float, val: tuple[float | None, float | None] = (None, None)
    ) -> None:
        row = {"step": step, "loss": f"{loss:.6f}", "lr": f"{lr:.3e}", "elapsed_s": f"{elapsed:.2f}"}
        row.update({k: "" if v is None else f"{v:.6f}" for k, v in zip(("val_loss", "val_heldout"), val)})
        self.writer.writerow(row)
        self.handle.flush()
        self.rows.append(row)

    def close(self) -> None:
        self.handle.close()


def moving_average(values: list[float], weight: float = 0.95) -> list[float]:
    """The exponential moving average the plots draw (the first value starts it)."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else weight * out[-1] + (1 - weight) * value)
    return out


def validation_points(rows: list[dict], column: str = "val_loss") -> tuple[list[int], list[float]]:
    """(steps, values) of the rows of loss.csv that hold a validation loss in `column`."""
    steps, values = [], []
    for row in rows:
        text = row.get(column) or ""
        if text:
            steps.append(int(row["step"]))
            values.append(float(text))
    return steps, values


def plot_loss(rows: list[dict], path: Path, title: str) -> None:
    """loss.png: raw per-step loss and its moving average, and beside them (own axis, right) the
    validation loss on the fixed set; written atomically.

    The validation loss has its own axis because its level is set by the fixed timesteps, not by
    the training draws: what tells when to stop is its shape (falling, flat, rising)."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    losses = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.5), dpi=100)
    lines = ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
    lines += ax.plot(steps, moving_average(losses), lw=1.6, label="moving average")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (training draws)")
    val_steps, val = validation_points(rows)
    if val:
        twin = ax.twinx()
        # Not smoothed: it is the same set every time, so its steps are real changes, and a moving
        # average over a few points would only lag.
        lines += twin.plot(val_steps, val, "o-", ms=3, lw=1.4, color="tab:green", label="validation (fixed set)")
        held_steps, held = validation_points(rows, "val_heldout")
        if held:
            lines += twin.plot(held_steps, held, "--", lw=1.2, color="tab:red", label="held-out artwork")
        twin.set_ylabel("MSE (fixed validation set)", color="tab:green")
    ax.set_title(title)
    ax.legend(handles=lines, fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _accelerator(cpu: bool):
    """An Accelerator for devices and data parallelism, always with mixed_precision="no".

    Why "no" whatever the run's precision: accelerate keeps one process-wide state and refuses a
    second precision in the same process (the app trains many times), and here it would add
    nothing: the frozen model is cast to the run's dtype, the learned rows stay fp32, and nothing
    is autocast. fp16's loss scaling is the trainer's own `torch.amp.GradScaler`.
    """
    from accelerate import Accelerator

    return Accelerator(mixed_precision="no", cpu=cpu)


def runs_on_cpu(cfg: TrainConfig) -> bool:
    """Asked for the CPU, or no CUDA GPU to train on."""
    return cfg.device == "cpu" or not torch.cuda.is_available()


def check_config(cfg: TrainConfig) -> None:
    """Every setting in range, before any artwork or model is read (also what the app's fields get).

    Errors name the setting (`SettingError`); the CLI shows it as its flag, the app as its label.
    """
    if cfg.mixed_precision not in ("no", "fp16", "bf16"):
        raise SettingError("mixed_precision", f"{{setting}} must be no, fp16 or bf16 (got {cfg.mixed_precision!r})")
    for name in ("steps", "batch_size", "grad_accum", "vectors"):
        if getattr(cfg, name) < 1:
            raise SettingError(name, f"{{setting}} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.lr <= 0 or not math.isfinite(cfg.lr):
        raise SettingError("lr", f"{{setting}} must be a positive number (got {cfg.lr})")
    limits.check_bound("vectors", cfg.vectors)
    if cfg.norm_cap < 0 or not math.isfinite(cfg.norm_cap):
        raise SettingError("norm_cap", f"{{setting}} must be 0 (no cap) or a positive number (got {cfg.norm_cap})")
    if cfg.resolution is not None and cfg.resolution != 0:
        limits.check_bound("resolution", cfg.resolution)
    limits.check_seed(cfg.seed)
    for name in ("save_every", "checkpoint_every", "preview_every", "lr_warmup_steps", "validate_every"):
        if getattr(cfg, name) < 0:
            raise SettingError(name, f"{{setting}} must be 0 or more (got {getattr(cfg, name)})")
    if cfg.preview_every > 0:
        limits.check_bound("preview_steps", cfg.preview_steps)
    _check_lora_config(cfg)
    if cfg.device:
        pick_device(cfg.device)
    check_output_folder(cfg.output)


def _check_lora_config(cfg: TrainConfig) -> None:
    """Pivotal tuning's settings (issue 24), named as the library names them (SettingError)."""
    if cfg.adapter not in ("none", "lora"):
        raise SettingError("adapter", f"{{setting}} must be none or lora (got {cfg.adapter!r})")
    limits.check_range("lora_rank", cfg.lora_rank, 1, 256, "LoRA ranks of 4-128 are usual for styles")
    for name in ("lora_alpha", "lora_lr"):
        value = getattr(cfg, name)
        if value is None and name == "lora_alpha":  # the rank
            continue
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SettingError(name, f"{{setting}} must be a positive number (got {value})")
    if not (0.0 <= cfg.ti_fraction <= 1.0):
        raise SettingError(
            "ti_fraction",
            f"{{setting}} must be between 0 (LoRA alone) and 1 (the token all run) (got {cfg.ti_fraction})",
        )
    if not (0.0 <= cfg.lora_start < 1.0):
        raise SettingError(
            "lora_start",
            f"{{setting}} must be at least 0 (the LoRA all run) and below 1 (got {cfg.lora_start})",
        )
    if cfg.adapter == "lora" and cfg.lora_start > cfg.ti_fraction:
        raise SettingError(
            "lora_start",
            f"{{setting}} {cfg.lora_start} is after the token stops (ti_fraction {cfg.ti_fraction}): nothing "
            "would train in between; start the LoRA at or before the token's end",
        )
    if cfg.lora_blocks not in lora_lib.BLOCKS:
        raise SettingError("lora_blocks", f"{{setting}} must be all or style (got {cfg.lora_blocks!r})")


class StyleTokenTrainer:
    """Holds the frozen model, the learned rows, the optimizer and the data for one run."""

    def __init__(self, cfg: TrainConfig, loaded: LoadedModel | None = None, artworks: list[Artwork] | None = None):
        check_config(cfg)
        self.cfg = cfg
        self.run = TrainingRun(cfg.output)
        self.out = self.run.folder
        artworks = artworks if artworks is not None else load_artworks(cfg.images)
        artworks, held_out = validation.split_held_out(artworks, cfg.validate_every or 0)
        cpu = runs_on_cpu(cfg)
        if cfg.mixed_precision == "fp16" and cpu:
            raise SettingError("mixed_precision", "{setting} fp16 needs a GPU; on CPU use bf16 or no")
        self.accelerator = _accelerator(cpu)
        device = self.accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        self.scaler = torch.amp.GradScaler(device.type) if cfg.mixed_precision == "fp16" else None
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.weight_dtype, "fp32")
        self.loaded = loaded or load_pipeline(cfg.model, device=str(device), precision=precision)
        pipe = self.pipe = self.loaded.pipe
        self.is_sdxl = is_sdxl(pipe)
        move_pipeline(pipe, device, self.weight_dtype)
        self.resolution = cfg.resolution or native_resolution(pipe)
        room = int(pipe.tokenizer.model_max_length) - 2  # a prompt's tokens between its start and end
        if cfg.vectors > room:
            raise SettingError(
                "vectors",
                f"{{setting}} {cfg.vectors} is more than the {room} tokens a prompt of {cfg.model} holds; use fewer",
            )
        limits.check_multiple("resolution", self.resolution, int(pipe.vae_scale_factor))

        # One (tokenizer, text encoder) pair for SD 1.x/2.x, two for SDXL; each learns its own rows
        # for the same token names, spliced in by its own LearnedTokens.
        self.encoders = text_encoders(pipe)
        self.parts: list[LearnedTokens] = []
        for tokenizer, text_encoder in self.encoders:
            ids = add_placeholder_tokens(tokenizer, text_encoder, cfg.token, cfg.vectors, cfg.init_word)
            text_encoder.requires_grad_(False)
            part = LearnedTokens(text_encoder.get_input_embeddings(), ids, cfg.norm_cap)
            text_encoder.set_input_embeddings(part)
            self.parts.append(part)
        for module in (pipe.unet, pipe.vae):
            module.requires_grad_(False)
        if cfg.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            pipe.unet.train()
            for _, text_encoder in self.encoders:
                text_encoder.gradient_checkpointing_enable()
                text_encoder.train()

        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        scale = cfg.grad_accum * cfg.batch_size * self.accelerator.num_processes if cfg.scale_lr else 1
        lr = cfg.lr * scale
        # Pivotal tuning: a LoRA beside the token, its own learning rate in its own parameter group.
        self.lora: lora_lib.AttachedLora | None = None
        groups: list = [part.vectors for part in self.parts]
        if cfg.adapter == "lora":
            self.lora = lora_lib.attach(
                pipe,
                rank=cfg.lora_rank,
                alpha=cfg.lora_scale_alpha,
                blocks=cfg.lora_blocks,
                conv=cfg.lora_conv,
                text_encoder=cfg.lora_text_encoder,
            )
            groups = [{"params": groups, "lr": lr}, {"params": self.lora.parameters(), "lr": cfg.lora_lr * scale}]
        # The step after which the token stops (diffusers' advanced script: the first half); a token-only run never does.
        self.pivot = round(cfg.ti_fraction * cfg.steps) if self.lora is not None else cfg.steps
        # The step after which the LoRA learns (0: from the start, as diffusers' advanced script).
        self.lora_from = round(cfg.lora_start * cfg.steps) if self.lora is not None else 0
        if self.accelerator.num_processes > 1:
            # What DDP does when it wraps a model: every process starts from rank 0's values, so a
            # LoRA initialised from each device's own random stream cannot start the processes apart.
            from accelerate.utils import broadcast

            with torch.no_grad():
                broadcast([param.data for param in self.trainable()], from_process=0)
        optimizer = torch.optim.AdamW(
            groups,
            lr=lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
            eps=cfg.adam_epsilon,
        )
        scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=cfg.lr_warmup_steps * self.accelerator.num_processes,
            num_training_steps=cfg.steps * self.accelerator.num_processes,
        )
        # The learned rows are deliberately not `prepare`d: accelerate would wrap their forward to
        # return fp32 under mixed precision (breaking a bf16 text encoder), and DDP for one n x d
        # parameter is just a gradient mean, done explicitly in step().
        self.optimizer, self.lr_scheduler = self.accelerator.prepare(optimizer, scheduler)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.sampler = PromptSampler(cfg.learnable_property)
        self.token_text = expand_token(cfg.token, cfg.token, cfg.vectors)
        self.latents = self._encode_artworks(artworks, device)
        self.held_out = self._encode_artworks([held_out], device) if held_out else None
        self.held_out_name = held_out.path.name if held_out else None
        self._validation: validation.ValidationSet | None = None
        self.original_sizes = [art.image.size for art in artworks]  # (w, h), for SDXL's size conditioning
        self.num_images = len(artworks)

    def _encode_artworks(self, artworks, device) -> LatentCache:
        """The latent cache; SDXL's VAE overflows in fp16 (force_upcast), so it encodes in fp32 there."""
        vae = self.pipe.vae
        upcast = self.weight_dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if upcast:
            vae.to(torch.float32)
        try:
            return LatentCache.build(
                artworks,
                vae,
                self.resolution,
                self.pipe.vae_scale_factor,
                device,
                torch.float32 if upcast else self.weight_dtype,
            )
        finally:
            if upcast:
                vae.to(self.weight_dtype)

    # -- one step -------------------------------------------------------------------------------

    def prompt_ids_of(self, prompts: list[str]) -> list[torch.Tensor]:
        """Token ids of these prompts from each tokenizer."""
        out = []
        for tok, _ in self.encoders:
            ids = tok(
                prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            )
            out.append(ids.input_ids.to(self.accelerator.device))
        return out

    def _time_ids(self, windows: list[CropWindow]) -> torch.Tensor:
        """SDXL micro-conditioning per item: original (h, w), crop (top, left), target (h, w)."""
        scale = int(self.pipe.vae_scale_factor)
        rows = []
        for entry, top, left in windows:
            width, height = self.original_sizes[entry // 2]  # two cache entries (plain, mirrored) per artwork
            rows.append([height, width, top * scale, left * scale, self.resolution, self.resolution])
        return torch.tensor(rows, dtype=torch.float32)

    def _sdxl_conditioning(self, input_ids: torch.Tensor, sdxl: SdxlConditioning):
        """Both encoders' penultimate hidden states side by side, and the UNet's added conditions."""
        (_, encoder_1), (_, encoder_2) = self.encoders
        out_1 = encoder_1(input_ids, output_hidden_states=True)
        out_2 = encoder_2(sdxl.input_ids_2, output_hidden_states=True)
        hidden = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1).to(self.weight_dtype)
        added = {
            "text_embeds": out_2.text_embeds.to(self.weight_dtype),
            "time_ids": sdxl.time_ids.to(self.accelerator.device, self.weight_dtype),
        }
        return hidden, added

    def loss_on(self, batch: Batch) -> torch.Tensor:
        """The textual inversion loss for one batch (the diffusers examples' math)."""
        pipe, device = self.pipe, self.accelerator.device
        latents = batch.latents.to(device, self.weight_dtype) * pipe.vae.config.scaling_factor
        noise = batch.noise.to(latents)
        timesteps = batch.timesteps.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if batch.sdxl is not None:
            hidden, added = self._sdxl_conditioning(batch.input_ids, batch.sdxl)
            pred = pipe.unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
        else:
            hidden = pipe.text_encoder(batch.input_ids)[0].to(self.weight_dtype)
            pred = pipe.unet(noisy, timesteps, hidden).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return F.mse_loss(pred.float(), target.float())

    def draw_batch(self) -> Batch:
        """This process's share of one global micro-batch: crops, noise, timesteps and prompts,
        all from the trainer's seeded generator.

        Every process draws the whole global batch (--batch-size x processes items) and keeps its
        own slice, as accelerate's sharding of a dataloader does: N processes of batch b then train
        on exactly the items one process of batch N x b does, so a data-parallel run is the same
        run as the one-process global batch (tests/test_data_parallel.py). Alone, the slice is the
        whole batch and the draws are what they always were. Drawing N x b items costs each
        process a few cached-latent crops and noise tensors, nothing beside the UNet.
        """
        acc = self.accelerator
        size = self.cfg.batch_size
        latents, captions, windows = self.latents.sample(size * acc.num_processes, self.generator)
        noise = torch.randn(latents.shape, generator=self.generator)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=self.generator
        )
        prompts = [self.sampler.sample(self.generator, self.token_text, c) for c in captions]
        mine = slice(acc.process_index * size, (acc.process_index + 1) * size)
        windows = windows[mine]
        ids = self.prompt_ids_of(prompts[mine])  # the same prompts from each tokenizer
        sdxl = SdxlConditioning(ids[1], self._time_ids(windows)) if self.is_sdxl else None
        return Batch(latents[mine], ids[0], noise[mine], timesteps[mine], windows, sdxl)

    def step(self, step: int) -> float:
        """Optimizer step number `step` (1-based) over grad_accum micro-batches; returns the mean loss.

        The batch randomness is seeded from (seed, step): a resumed run draws exactly what the
        uninterrupted one did, and every data-parallel process draws the same global batch and
        trains on its own slice of it (`draw_batch`). The gradients of every trained parameter
        (the learned rows and the LoRA's) are averaged across processes before the optimizer
        step, so every process takes the same step; the loss returned is the global batch's.
        """
        self.generator.manual_seed((self.cfg.seed * 1_000_003 + step * 7_919) % 2**64)
        if self.lora is not None:  # past the pivot only the LoRA learns: no gradient, so AdamW leaves the rows
            for part in self.parts:
                part.vectors.requires_grad_(step <= self.pivot)
            if self.lora_from:  # before --lora-start the LoRA stays zero (an identity); 0: it learns all run
                for param in self.lora.parameters():
                    param.requires_grad_(step > self.lora_from)
        total = 0.0
        for _ in range(self.cfg.grad_accum):
            loss = self.loss_on(self.draw_batch())
            if not torch.isfinite(loss):
                raise _NonFinite(float(loss.detach()))
            scaled = loss / self.cfg.grad_accum
            self.accelerator.backward(self.scaler.scale(scaled) if self.scaler else scaled)
            total += float(loss.detach())
        if self.accelerator.num_processes > 1:
            for param in self.trainable():
                if param.grad is not None:
                    param.grad = self.accelerator.reduce(param.grad, reduction="mean")
            # the global batch's loss in loss.csv, as a one-process run of that batch logs it
            shared = torch.tensor(total, dtype=torch.float64, device=self.accelerator.device)
            total = float(self.accelerator.reduce(shared, reduction="mean"))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # unscales first; skips the step on inf/NaN gradients
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        for part in self.parts:
            part.cap_norms()
        return total / self.cfg.grad_accum

    def trainable(self) -> list[nn.Parameter]:
        """Every trained parameter, in the optimizer's order: the learned rows, then the LoRA's."""
        return [part.vectors for part in self.parts] + (self.lora.parameters() if self.lora else [])

    def batch_of(
        self,
        latents: torch.Tensor,
        prompts: list[str],
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        windows: list[CropWindow],
    ) -> Batch:
        """A Batch of given items (the validation set's), with its prompts' ids and SDXL's conditioning."""
        ids = self.prompt_ids_of(prompts)
        sdxl = SdxlConditioning(ids[1], self._time_ids(windows)) if self.is_sdxl else None
        return Batch(latents, ids[0], noise, timesteps, windows, sdxl)

    def validation_set(self) -> validation.ValidationSet:
        """The fixed validation batches, built on first use from their own generator."""
        if self._validation is None:
            self._validation = validation.ValidationSet.build(self, self.held_out)
        return self._validation

    # -- outputs --------------------------------------------------------------------------------

    def vectors(self) -> torch.Tensor:
        """The learned rows; for SDXL both encoders' side by side ([n, 768 + 1280]), as checkpoints keep them."""
        if len(self.parts) == 1:
            return self.parts[0].vectors.detach()
        return torch.cat([part.vectors.detach() for part in self.parts], dim=1)

    def split(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        """`vectors()` back into one tensor per text encoder."""
        return list(torch.split(vectors, [int(part.vectors.shape[1]) for part in self.parts], dim=1))

    def embedding(self, step: int, vectors: torch.Tensor | None = None) -> Embedding:
        parts = self.split(self.vectors() if vectors is None else vectors)
        meta = {"styleprompt.model": self.cfg.model, "styleprompt.family": self.loaded.family}
        return Embedding(self.cfg.token, parts[0], parts[1] if self.is_sdxl else None, step=step, metadata=meta)

    def save_embedding(self, path: Path, step: int, vectors: torch.Tensor | None = None) -> Path:
        """diffusers' {token: [n, d]} file; for SDXL the {"clip_l", "clip_g"} file A1111 and ComfyUI load."""
        if self.is_sdxl:
            return write_embedding(self.embedding(step, vectors), path, "sdxl")[0]
        meta = {
            "styleprompt.step": str(step),
            "styleprompt.model": self.cfg.model,
            "styleprompt.family": self.loaded.family,
        }
        return save_diffusers_embedding(path, self.cfg.token, self.vectors() if vectors is None else vectors, meta)

    def save_webui_embedding(self, path: Path, step: int) -> Path:
        """The token as A1111/Forge/ComfyUI load it from their embeddings/ folder, beside the kohya LoRA
        (what diffusers' advanced scripts write as `NAME_emb.safetensors`): A1111's own safetensors
        layout (`emb_params`) for SD 1.x/2.x, `clip_l`/`clip_g` for SDXL."""
        return write_embedding(self.embedding(step), path, "sdxl" if self.is_sdxl else "emb_params")[0]

    def save_lora(self, path: Path, step: int) -> Path | None:
        """The LoRA as diffusers' `save_lora_weights` writes it (None: a token-only run)."""
        if self.lora is None:
            return None
        meta = lora_lib.lora_metadata(self.cfg.model, self.loaded.family, step)
        return lora_lib.save_lora(self.pipe, self.lora, path, meta)

    def save_diffusers_pair(self, folder: Path, step: int) -> list[Path]:
        """SDXL only: diffusers' two files, one per text encoder (load each with its encoder)."""
        return write_embedding(self.embedding(step), folder / TrainingRun.EMBEDDING, "sdxl-pair")

    @torch.no_grad()
    def preview(self, step: int) -> Path:
        cfg = self.cfg
        prompt = expand_token(cfg.preview_prompt.replace("{token}", cfg.token), cfg.token, cfg.vectors)
        generator = torch.Generator().manual_seed(cfg.seed)
        was_training = self.pipe.unet.training
        self.pipe.unet.eval()
        # Sample with the plain tables (the learned rows written in): a pipeline takes its dtype
        # from the text encoder's first parameter, which the fp32 splice would turn to fp32 and
        # mismatch a bf16/fp16 UNet.
        for (_, text_encoder), part in zip(self.encoders, self.parts):
            text_encoder.set_input_embeddings(part.write_back())
        try:
            image = self.pipe(
                prompt,
                num_inference_steps=cfg.preview_steps,
                guidance_scale=cfg.preview_guidance,
                height=self.resolution,
                width=self.resolution,
                generator=generator,
            ).images[0]
        finally:
            for (_, text_encoder), part in zip(self.encoders, self.parts):
                text_encoder.set_input_embeddings(part)
            self.pipe.unet.train(was_training)
        text = {
            "prompt": cfg.preview_prompt.replace("{token}", cfg.token),
            "step": str(step),
            "seed": str(cfg.seed),
            "model": cfg.model,
        }
        return save_image(image, self.run.preview(step), text=text)

    def training_state(self, step: int) -> ckpt.TrainingState:
        scaler = self.scaler.state_dict() if self.scaler is not None else None
        return ckpt.TrainingState(
            step=step,
            vectors=self.vectors(),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.lr_scheduler.state_dict(),
            scaler=scaler,
            fingerprint=_fingerprint(self.cfg, self.loaded.family),
            lora=self.lora.state() if self.lora is not None else None,
        )

    def restore(self, state: ckpt.TrainingState) -> None:
        expected = _fingerprint(self.cfg, self.loaded.family)
        if state.fingerprint and state.fingerprint != expected:
            raise UserError(
                f"the checkpoint in {self.out} was made for {state.fingerprint}, not {expected}; "
                "use a new --output or the same --token/--vectors/--model"
            )
        if state.vectors.shape != self.vectors().shape:
            raise UserError(
                f"the checkpoint in {self.out} holds vectors of shape {list(state.vectors.shape)}, "
                f"not {list(self.vectors().shape)}; use a new --output"
            )
        self._check_restorable(state)
        where = ckpt.checkpoint_path(self.run.checkpoints, state.step)
        if (state.lora is None) != (self.lora is None):
            raise SettingError(
                "adapter",
                f"checkpoint {where} {'holds' if state.lora else 'holds no'} LoRA weights, but this run is "
                f"{{setting}} {self.cfg.adapter}; resume with the recorded {{setting}} or start a new run in "
                "another output folder",
            )
        with torch.no_grad():
            for part, saved in zip(self.parts, self.split(state.vectors)):
                part.vectors.copy_(saved)
        if self.lora is not None and state.lora is not None:
            self.lora.load_state(state.lora, f"checkpoint {where}")
        try:
            self.optimizer.load_state_dict(state.optimizer)
            self.lr_scheduler.load_state_dict(state.lr_scheduler)
            if state.scaler and self.scaler is not None:
                self.scaler.load_state_dict(state.scaler)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise ckpt.CheckpointDamaged(
                f"the checkpoint in {self.run.checkpoints} does not fit this run's optimizer "
                f"({type(exc).__name__}: {str(exc)[:100]}); resume from an earlier one or delete it"
            ) from None

    def _check_restorable(self, state: ckpt.TrainingState) -> None:
        """The optimizer's moments have the learned rows' shapes; the schedule's counters are numbers."""
        where = ckpt.checkpoint_path(self.run.checkpoints, state.step)
        slots = state.optimizer["state"]
        trained = self.trainable()
        for pid, values in slots.items():
            if not 0 <= pid < len(trained):
                raise ckpt.CheckpointDamaged(
                    f"checkpoint {where} is damaged (optimizer state for parameter {pid}, "
                    f"this run has {len(trained)}); resume from an earlier one or delete it"
                )
            shape = tuple(trained[pid].shape)
            for key, value in values.items():
                if torch.is_tensor(value) and key != "step" and tuple(value.shape) != shape:
                    raise ckpt.CheckpointDamaged(
                        f"checkpoint {where} is damaged (optimizer {key} has shape {list(value.shape)}, not "
                        f"{list(shape)}); resume from an earlier one or delete it"
                    )
        sched = state.lr_scheduler
        numbers_ok = all(
            isinstance(sched.get(k, 0), int) and not isinstance(sched.get(k, 0), bool)
            for k in ("last_epoch", "_step_count")
        )
        lists_ok = all(
            isinstance(sched.get(k, []), list) and all(isinstance(v, (int, float)) for v in sched.get(k, []))
            for k in ("base_lrs", "_last_lr")
        )
        if not (numbers_ok and lists_ok):
            raise ckpt.CheckpointDamaged(
                f"checkpoint {where} is damaged (its lr_scheduler counters are not numbers); "
                "resume from an earlier one or delete it"
            )

    def finish(self) -> None:
        """Put the plain embedding table back with the learned rows in it (a normal pipeline again).

        A LoRA is removed from the model (it is in its file): the pipeline the caller keeps (the
        app trains many runs on one) is the base model plus the token, as after a token-only run.
        """
        if self.lora is not None:
            lora_lib.detach(self.lora)
            self.lora = None
        for (_, text_encoder), part in zip(self.encoders, self.parts):
            text_encoder.set_input_embeddings(part.write_back())
            text_encoder.eval()
        self.pipe.unet.eval()


class _NonFinite(Exception):
    def __init__(self, value: float):
        self.value = value


def _preview(trainer: StyleTokenTrainer, step: int, cb: TrainCallbacks) -> None:
    path = trainer.preview(step)
    if cb.on_preview:
        cb.on_preview(step, path)


def _validate(trainer: StyleTokenTrainer, step: int, cb: TrainCallbacks) -> tuple[float | None, float | None]:
    """The validation losses at every --validate-every'th step, (None, None) between."""
    every = trainer.cfg.validate_every or 0
    if every <= 0 or step % every:
        return None, None
    seen, held = validation.validation_losses(trainer)
    if cb.on_validation:
        cb.on_validation(step, seen, held)
    return seen, held


def _resume(trainer: StyleTokenTrainer, ckpt_dir: Path, resume: str) -> int:
    """Restore a checkpoint; returns its step (0: none yet).

    With `latest`, a damaged newest checkpoint (a truncated file, an edited state.json) is
    skipped with a warning for the one before it: that is what a user would do by hand, and a
    checkpoint is written every few hundred steps, so little is lost. A named checkpoint that
    is damaged is refused in one line naming the file.
    """
    if resume != "latest":
        path = ckpt.resolve_resume(ckpt_dir, resume)
        if path is None:  # only "latest" finds nothing, and it is handled below
            return 0
        state = ckpt.load_checkpoint(path)
        trainer.restore(state)
        log.warning("resuming from %s (step %d)", path, state.step)
        return state.step
    found = ckpt.list_checkpoints(ckpt_dir)
    damage: list[str] = []
    for _, path in reversed(found):
        try:
            state = ckpt.load_checkpoint(path)
            trainer.restore(state)
        except ckpt.CheckpointDamaged as exc:
            damage.append(str(exc))
            log.warning("%s; trying the checkpoint before it", exc)
            continue
        log.warning("resuming from %s (step %d)", path, state.step)
        return state.step
    if damage:
        raise UserError(
            f"every checkpoint in {ckpt_dir} is damaged (newest: {damage[0]}); "
            "delete that folder to start over, or choose a new --output"
        )
    return 0


def _recorded_threads(run: TrainingRun, recorded: dict) -> int | None:
    """The CPU thread count an interrupted run recorded in its config.json (None: none recorded),
    at most this machine's cores: a crafted or foreign count (`"cpu_threads": 4096`) would start
    that many OpenMP threads, each with its own stack and buffers, and exhaust the memory."""
    value = recorded.get("cpu_threads")  # read_config checked it is a whole number >= 1
    if value is None:
        return None
    cores = os.cpu_count() or 1
    if value > cores:
        log.warning(
            "%s records cpu_threads %d, more than the %d cores here; using %d (the resumed run may then "
            "differ from an uninterrupted one in the last digits)",
            run.config_path,
            value,
            cores,
            cores,
        )
        return cores
    return int(value)


def _check_resume(cfg: TrainConfig, run: TrainingRun, recorded: dict, images_digest: str) -> None:
    """A resume continues the recipe config.json records, or is refused (before the model loads)."""
    if not recorded and ckpt.list_checkpoints(run.checkpoints):
        raise SettingError(
            "resume",
            f"{{setting}}: {run.folder} holds checkpoints but no {run.CONFIG}, so its recipe cannot be checked; "
            "put the run's config.json back, start a new run (another --output), or add --overwrite to replace it",
        )
    if recorded:
        run.check_resume(cfg, recorded, images_digest=images_digest)


def train(cfg: TrainConfig, loaded: LoadedModel | None = None, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train a style token; returns where its embedding is. Resumable with cfg.resume='latest'.

    The run folder is this process's for the whole run (`TrainingRun.locked`: a second training
    into it is refused, naming this one's pid). A resume must ask for the recipe recorded in
    config.json (`TrainingRun.check_resume`).

    On CPU the torch thread count is chosen once, by the threads runnable at the start (one thread
    beside another job: two trainings side by side ran at 16.6 s a step with two threads each,
    0.2-0.4 s with one), and recorded in config.json; a resume reuses it, because another count changes float
    rounding and the resumed run would no longer end where the straight one does.
    """
    check_config(cfg)
    run = TrainingRun(cfg.output)
    with run.locked():
        recorded = run.read_config() if cfg.resume else {}
        artworks = load_artworks(cfg.images)
        digest = artworks_digest([art.path for art in artworks])
        if cfg.resume:
            _check_resume(cfg, run, recorded, digest)
        if not runs_on_cpu(cfg):
            return _train(cfg, loaded, callbacks, None, run, (artworks, digest), recorded)
        with cpu_threads.fixed_for_run(_recorded_threads(run, recorded)) as threads:
            return _train(cfg, loaded, callbacks, threads, run, (artworks, digest), recorded)


def _train(
    cfg: TrainConfig,
    loaded: LoadedModel | None,
    callbacks: TrainCallbacks | None,
    threads: int | None,
    run: TrainingRun,
    images: tuple[list[Artwork], str],
    recorded: dict,
) -> TrainResult:
    from tqdm.auto import tqdm

    cb = callbacks or TrainCallbacks()
    out = run.folder
    ckpt_dir = run.checkpoints
    if cfg.resume is None and ckpt.list_checkpoints(ckpt_dir):
        raise UserError(
            f"{out} already holds a training run; add --resume latest to continue it, or choose a new --output"
        )
    artworks, images_digest = images
    torch.manual_seed(cfg.seed)
    trainer = StyleTokenTrainer(cfg, loaded, artworks)
    acc = trainer.accelerator
    if recorded:  # the model's own resolution is known now
        run.check_resume(cfg, recorded, resolution=trainer.resolution)
    start = 0
    if cfg.resume:
        start = _resume(trainer, ckpt_dir, cfg.resume)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        for folder in run.written_folders():  # only where a run writes: the user's other files stay
            remove_stale_temporaries(folder)
        measured: dict = dict(
            resolution=trainer.resolution,
            images_used=trainer.num_images,
            images_digest=images_digest,
        )
        if threads is not None:
            measured["cpu_threads"] = threads
        if trainer.held_out_name:
            measured["validation_held_out"] = trainer.held_out_name
        run.write_config(cfg, **measured)
    loss_log = LossLog(run.loss_log, start, validation=True) if acc.is_main_process else None
    final_path = run.embedding
    elapsed0 = float(loss_log.rows[-1]["elapsed_s"]) if loss_log and loss_log.rows else 0.0
    t0 = time.perf_counter()
    loss = None
    stopped = False
    done = start
    lora_path: Path | None = None
    save_every, checkpoint_every = cfg.save_every or 0, cfg.checkpoint_every or 0  # TrainConfig fills both
    bar = tqdm(
        total=cfg.steps, initial=start, desc=f"training {cfg.token}", unit="step", disable=not acc.is_main_process
    )
    try:
        if start == 0 and cfg.preview_every > 0 and acc.is_main_process:
            _preview(trainer, 0, cb)
        for step in range(start + 1, cfg.steps + 1):
            last_good = trainer.vectors().clone()
            try:
                loss = trainer.step(step)
            except _NonFinite as bad:
                trainer.save_embedding(final_path, step - 1, last_good)
                raise TrainingDiverged(
                    f"training diverged at step {step} (loss {bad.value}); the last good embedding is in {final_path}. "
                    "Lower --lr or use --mixed-precision no"
                ) from None
            if not torch.isfinite(trainer.vectors()).all() or (trainer.lora and not trainer.lora.is_finite()):
                trainer.save_embedding(final_path, step - 1, last_good)
                raise TrainingDiverged(
                    f"the embedding became NaN or infinite at step {step}; the last good one is in {final_path}. Lower --lr"
                )
            done = step
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if loss_log is not None:  # the main process's
                val = _validate(trainer, step, cb)
                lr = trainer.lr_scheduler.get_last_lr()[0]
                loss_log.append(step, loss, lr, elapsed0 + time.perf_counter() - t0, val)
                if save_every > 0 and step % save_every == 0:
                    trainer.save_embedding(run.step_embedding(step), step)
                    trainer.save_lora(run.step_lora(step), step)  # the pair pick chooses from
                if cfg.preview_every > 0 and step % cfg.preview_every == 0:
                    _preview(trainer, step, cb)
                if checkpoint_every > 0 and step % checkpoint_every == 0:
                    ckpt.save_checkpoint(ckpt_dir, trainer.training_state(step), cfg.checkpoints_total_limit)
                    plot_loss(loss_log.rows, run.loss_plot, f"{cfg.token} on {cfg.model}")
            if cb.on_step:
                cb.on_step(step, cfg.steps, loss)
            if cb.should_stop and cb.should_stop():
                stopped = True
                if acc.is_main_process:
                    ckpt.save_checkpoint(ckpt_dir, trainer.training_state(step), cfg.checkpoints_total_limit)
                break
        if loss_log is not None:  # the main process writes the results
            trainer.save_embedding(final_path, done)
            if trainer.lora is not None:
                lora_path = trainer.save_lora(run.lora, done)
                lora_lib.save_kohya(trainer.lora, run.kohya_lora)
                trainer.save_webui_embedding(run.webui_embedding, done)
            if trainer.is_sdxl:
                trainer.save_diffusers_pair(run.diffusers, done)
            if not stopped and cfg.preview_every > 0 and done % cfg.preview_every != 0:
                _preview(trainer, done, cb)
            plot_loss(loss_log.rows, run.loss_plot, f"{cfg.token} on {cfg.model}")
    finally:
        bar.close()
        if loss_log:
            loss_log.close()
    trainer.finish()
    return TrainResult(out, final_path, done, loss, stopped, trainer.loaded, lora_path)
