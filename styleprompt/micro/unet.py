"""The build's long stage: text encoder + UNet together, and the optional style-blend continuation.

Why this recipe (the textual inversion papers' base models, scaled down): the text encoder is
trained with the UNet (a random CLIP knows no words), prompts are the templates users type
("a {style} style of a {class}" and the textual inversion template family) with 10% empty
prompts for classifier-free guidance, and sampling uses an EMA of the weights.

State is the library's: checkpoints in `styleprompt.diffusion.checkpoints`' layout
(checkpoint-<step>/state.safetensors + state.json: weights, EMA weights and AdamW's state, no
pickle), the trainer's loss log (`LossLog`, torn last line dropped on resume). A damaged
checkpoint is moved aside and the previous one resumed from. Checkpoints of builds before this
layout (`step-NNNNNN/` with one file per module) are still read, so an old build folder resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from styleprompt.diffusion.checkpoints import (
    CheckpointDamaged,
    list_checkpoints,
    load_tensor_checkpoint,
    save_tensor_checkpoint,
)
from styleprompt.diffusion.templates import FILEWORDS_TEMPLATES, STYLE_TEMPLATES, fill
from styleprompt.micro import arch, style_words, world
from styleprompt.micro.autoencoder import cosine_to_tenth
from styleprompt.micro.build_files import intact_tensors, log, progress, read_json, set_aside
from styleprompt.plumbing.cpu_threads import set_threads
from styleprompt.plumbing.files import write_text_atomic

UNET_CHECKPOINTS = "checkpoints"
BLEND_CHECKPOINTS = "blend-checkpoints"
MODULES = ("text_encoder", "unet")


def base_prompt(rng: np.random.Generator, word: str, cls: str) -> str:
    """A training prompt: mostly what users type, then the textual inversion template family; 10% empty."""
    r = rng.random()
    if r < 0.1:
        return ""
    if r < 0.5:
        return f"a {word} style of a {cls}"
    with_class = [t for t in STYLE_TEMPLATES if "{class}" in t] + FILEWORDS_TEMPLATES
    style_only = [t for t in STYLE_TEMPLATES if "{class}" not in t]
    pool = with_class if r < 0.8 else style_only
    template = pool[int(rng.integers(len(pool)))]
    return fill(template, word, cls, filewords=f"a {cls}")


# -- checkpoints -------------------------------------------------------------------------------------------


def _legacy(folder: Path) -> bool:
    return folder.name.startswith("step-")


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def checkpoints(out: Path, folder: str = UNET_CHECKPOINTS) -> list[Path]:
    """A stage's complete checkpoints, oldest first (the library's layout and the older `step-NNNNNN`)."""
    root = out / folder
    found = [path for _, path in list_checkpoints(root)]
    if root.is_dir():
        found += [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return sorted(found, key=step_of)


def _intact_checkpoint(path: Path) -> bool:
    if _legacy(path):
        names = [*(f"{m}.safetensors" for m in MODULES), *(f"{m}.ema.safetensors" for m in MODULES)]
        return all(intact_tensors(path / n) for n in [*names, "optimizer.safetensors"])
    return read_json(path / "state.json") is not None and intact_tensors(path / "state.safetensors")


def _set_aside(path: Path, why: str) -> None:
    aside = set_aside(path)
    log.warning("%s is damaged (%s); moved to %s, resuming from the checkpoint before it", path, why, aside.name)


def save_state(
    out: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    ema: dict[str, dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    folder: str = UNET_CHECKPOINTS,
    spare: tuple[int, ...] = (),
) -> Path:
    """checkpoint-<step>: the modules' weights, their EMA and the optimizer; the newest two (and `spare`) are kept."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        tensors.update({f"ema.{name}.{k}": v for k, v in ema[name].items()})
    return save_tensor_checkpoint(out / folder, step, tensors, optimizer.state_dict(), keep=2, spare=spare)


def _read_legacy(folder: Path, modules, ema, optimizer) -> int:
    from safetensors.torch import load_file

    for name, module in modules.items():
        module.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
        ema[name] = load_file(str(folder / f"{name}.ema.safetensors"))
    moments = load_file(str(folder / "optimizer.safetensors"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        if f"{i}.exp_avg" in moments:
            optimizer.state[p] = {
                "exp_avg": moments[f"{i}.exp_avg"],
                "exp_avg_sq": moments[f"{i}.exp_avg_sq"],
                "step": moments[f"{i}.step"].reshape(()),
            }
    return int(json.loads((folder / "state.json").read_text())["step"])


def restore(folder: Path, modules, ema, optimizer) -> int:
    """Load a checkpoint into the modules, their EMA and the optimizer; returns its step."""
    if _legacy(folder):
        try:
            return _read_legacy(folder, modules, ema, optimizer)
        except Exception as exc:  # noqa: BLE001 - a torn file fails in safetensors or json
            raise CheckpointDamaged(f"checkpoint {folder} is damaged ({str(exc).splitlines()[0][:120]})") from None
    step, tensors, optimizer_state = load_tensor_checkpoint(folder)
    for name, module in modules.items():
        own = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}.")}
        module.load_state_dict(own)
        ema[name] = {k[len(name) + 5 :]: v for k, v in tensors.items() if k.startswith(f"ema.{name}.")}
    optimizer.load_state_dict(optimizer_state)
    return step


def restore_newest(candidates: list[Path], modules, ema, optimizer) -> int | None:
    """Restore the newest checkpoint of `candidates` that reads; damaged ones are moved aside. None: none read."""
    for folder in reversed(candidates):
        try:
            return restore(folder, modules, ema, optimizer)
        except CheckpointDamaged as exc:
            _set_aside(folder, str(exc).split("(", 1)[-1].rstrip(")")[:120])
    return None


def ema_weights(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The EMA weights of each module in a checkpoint (what the model is exported from)."""
    from safetensors.torch import load_file

    if _legacy(checkpoint):
        try:
            return {name: load_file(str(checkpoint / f"{name}.ema.safetensors")) for name in MODULES}
        except Exception as exc:  # noqa: BLE001 - a torn file fails in safetensors
            raise CheckpointDamaged(f"checkpoint {checkpoint} is damaged ({str(exc).splitlines()[0][:120]})") from None
    _, tensors, _ = load_tensor_checkpoint(checkpoint)
    return {
        name: {k[len(name) + 5 :]: v for k, v in tensors.items() if k.startswith(f"ema.{name}.")} for name in MODULES
    }


# -- the schedule ------------------------------------------------------------------------------------------


def half_point(steps: int, checkpoint_every: int) -> int:
    """The last checkpoint step within the rate schedule's hold (the first half, see `unet_lr`).

    Why keep it: every step up to there ran at the rates any longer plan would use too, so a build
    asked later for more steps resumes from it and ends exactly where a straight run would.
    """
    return (steps // 2) // checkpoint_every * checkpoint_every


def _resume_candidates(out: Path, steps: int) -> list[Path]:
    """The checkpoints to continue from, newest last; for a finished build extended to more steps, up to its half point.

    The extended plan's rates differ from the old one's after the old half point, so the old plan's
    later checkpoints are moved aside (kept, not deleted) into checkpoints/superseded-N.
    """
    found = checkpoints(out)
    done_file = out / "unet_done.json"
    marker = read_json(done_file)
    if not found or marker is None:
        return found
    old_steps = int(marker.get("steps", 0))
    half = [c for c in found if step_of(c) <= old_steps / 2]
    if old_steps >= steps or not half:
        if old_steps < steps:
            log.warning(
                "unet: no checkpoint from the first half of the %d-step plan; extending from its end", old_steps
            )
        return found
    aside = out / UNET_CHECKPOINTS / f"superseded-{old_steps}"
    aside.mkdir(exist_ok=True)
    for later in found[len(half) :]:
        later.replace(aside / later.name)
    done_file.unlink()
    log.warning(
        "unet: extending the %d-step build to %d from its half point, step %d", old_steps, steps, step_of(half[-1])
    )
    return half


def ema_decay(step: int, max_decay: float = 0.999) -> float:
    """EMA warm-up (1 - (1 + step)^-2/3, capped): early weights are not averaged in for long."""
    return min(max_decay, 1 - (1 + step) ** (-2 / 3))


def unet_lr(step: int, steps: int, lr: float) -> float:
    """Warm up, hold, then a cosine down to a tenth over the second half.

    Holding for the first half means a build asked for more steps later (resumed from a checkpoint of a
    shorter build) has seen the same rates so far as one run straight to the new total.
    """
    warm = min(1.0, step / 200)
    half = steps / 2
    if step <= half:
        return lr * warm
    return lr * warm * cosine_to_tenth((step - half) / half)


def _trainable_pair(lr: float):
    """A fresh tokenizer, text encoder + UNet (train mode), their AdamW and an EMA copy of their weights."""
    tokenizer = arch.build_tokenizer()
    modules = {
        "text_encoder": arch.build_text_encoder(len(tokenizer)).train(),
        "unet": arch.build_unet().train(),
    }
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=1e-2)
    ema = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    return tokenizer, modules, params, optimizer, ema


def _loss_log(path: Path, start: int):
    """The trainer's loss log, cut back to the step resumed from; also the time already spent."""
    from styleprompt.diffusion.training import LossLog

    if start and path.is_file():  # a build before the trainer's log named its last column "elapsed"
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.startswith("step,loss,lr,elapsed\n"):
            write_text_atomic(path, "step,loss,lr,elapsed_s\n" + text.split("\n", 1)[1])
    loss_log = LossLog(path, start)
    return loss_log, float(loss_log.rows[-1]["elapsed_s"]) if loss_log.rows else 0.0


def _diffusion_step(
    modules: dict[str, torch.nn.Module],
    params: list,
    optimizer: torch.optim.Optimizer,
    tokenizer,
    noise_scheduler,
    z: torch.Tensor,
    prompts: list[str],
    generator: torch.Generator,
) -> float:
    """One noise-prediction step on latents `z` with their prompts; returns the loss."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    noise = torch.randn(z.shape, generator=generator)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (z.shape[0],), generator=generator)
    noisy = noise_scheduler.add_noise(z, noise, t)
    pred = modules["unet"](noisy, t, modules["text_encoder"](ids)[0]).sample
    loss = F.mse_loss(pred, noise)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _ema_update(modules: dict[str, torch.nn.Module], ema: dict[str, dict[str, torch.Tensor]], decay: float) -> None:
    with torch.no_grad():
        for name, module in modules.items():
            for k, v in module.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[name][k].mul_(decay).add_(v, alpha=1 - decay)
                else:
                    ema[name][k].copy_(v)


def _scaling(out: Path) -> float:
    from diffusers import AutoencoderKL

    return float(AutoencoderKL.load_config(str(out / "vae"))["scaling_factor"])


def stage_unet(
    out: Path, steps: int, batch: int, lr: float, seed: int, checkpoint_every: int, max_minutes: float | None = None
) -> bool:
    """Train text encoder + UNet; returns True when `steps` are done (False: stopped by the time limit)."""
    from diffusers import DDPMScheduler
    from safetensors.torch import load_file

    done_file = out / "unet_done.json"
    marker = read_json(done_file)
    if marker is not None and marker.get("steps", 0) >= steps:
        found = checkpoints(out)
        if found and _intact_checkpoint(found[-1]):
            return True
        if found:
            _set_aside(found[-1], "a torn file")
        done_file.unlink()
    latents = load_file(str(out / "latents.safetensors"))
    scaling = _scaling(out)
    torch.manual_seed(seed)
    tokenizer, modules, params, optimizer, ema = _trainable_pair(lr)
    start = restore_newest(_resume_candidates(out, steps), modules, ema, optimizer) or 0
    if start:
        log.warning("unet: resuming from step %d", start)
    noise_scheduler = DDPMScheduler.from_config(arch.build_scheduler().config)
    words, classes = style_words(), world.CLASSES
    loss_log, elapsed0 = _loss_log(out / "loss.csv", start)
    keep_step = half_point(steps, checkpoint_every)
    t0 = time.time()
    bar = progress(total=steps, initial=start, desc="text encoder + unet")
    try:
        for step in range(start + 1, steps + 1):
            if step % 50 == 1:
                set_threads()
            generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
            rng = np.random.default_rng(seed * 1_000_003 + step)
            idx = torch.randint(len(latents["means"]), (batch,), generator=generator)
            mean, std = latents["means"][idx], latents["stds"][idx]
            z = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling
            prompts = [
                base_prompt(rng, words[int(w)], classes[int(c)])
                for w, c in zip(latents["words"][idx], latents["classes"][idx])
            ]
            current_lr = unet_lr(step, steps, lr)
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            loss_value = _diffusion_step(modules, params, optimizer, tokenizer, noise_scheduler, z, prompts, generator)
            _ema_update(modules, ema, ema_decay(step))
            loss_log.append(step, loss_value, current_lr, elapsed0 + time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if step % checkpoint_every == 0 or step == steps:
                save_state(out, step, modules, ema, optimizer, spare=(keep_step,))
                if max_minutes is not None and (time.time() - t0) / 60 > max_minutes and step < steps:
                    log.warning("unet: stopped at step %d by --max-minutes; run again to continue", step)
                    return False
    finally:
        bar.close()
        loss_log.close()
    write_loss_plot(out)
    write_text_atomic(done_file, json.dumps({"steps": steps}))
    return True


def write_loss_plot(out: Path) -> Path:
    """loss.png beside loss.csv (the model card's curve), with the trainer's own plot."""
    from styleprompt.diffusion.training import LossLog, plot_loss

    plot_loss(LossLog.read(out / "loss.csv"), out / "loss.png", "micro model: text encoder + UNet")
    return out / "loss.png"


# -- the optional style-blend continuation (off by default) -----------------------------------------------
#
# Why it exists: textual inversion moves a token's input embedding by gradient descent, so a token
# finds a style only if that style's word lies downhill from the init word. On the shipped model it
# often does not: for sketch, the descent at "painting" points toward "close-up" and "small" (the
# templates' filler words), cosine -0.18 to the direction of the word "sketch"
# (bench/micro_token_gradient.py), and a sketch token learns nothing in any token recipe tried.
# Blends teach that a mix of two style words' embeddings paints the mix of their styles (Ghiasi
# style vectors interpolate): 800 blend steps at 2e-4 turn that cosine to +0.12 and the sketch
# token learns (r@1 0.71 and 0.75 over two seeds). But they cost the base model some of its words
# (figure a 0.87 -> 0.84; matisse's token 0.67 -> 0.38), and a milder continuation (1000 steps at
# 1e-4) keeps neither gain. So the shipped model has none; the numbers are in docs/micro.md.
# Blends mixed into the UNet stage from its start is the experiment to run next.


class EmbeddingBlend:
    """Replaces a prompt's style word by a mix of two words' input embeddings (gradients reach both rows).

    A forward hook on the text encoder's input embeddings, so the encoder itself runs unchanged.
    """

    def __init__(self, text_encoder):
        self.mixes: list[tuple[int, int, int, float]] = []  # (prompt row, word id, other word id, mix)
        self.handle = text_encoder.get_input_embeddings().register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Embedding, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self.mixes:
            return output
        ids, output, table = inputs[0], output.clone(), module.weight
        for row, word, other, lam in self.mixes:
            output[row, ids[row] == word] = lam * table[word] + (1 - lam) * table[other]
        return output


def stage_blend(
    out: Path,
    unet_steps: int,
    steps: int,
    batch: int,
    lr: float,
    fraction: float,
    seed: int,
    checkpoint_every: int,
    ema_decay_rate: float = 0.998,
) -> None:
    """Continue the UNet stage's final checkpoint with `fraction` of every batch from the blends.

    A constant rate and a shorter EMA (decay `ema_decay_rate`) than the UNet stage's: the continuation is
    short, and the blends must reach the averaged weights. Checkpoints go to blend-checkpoints/, so
    the UNet stage's own checkpoints (and extending its plan later) are left as they were.
    """
    from diffusers import DDPMScheduler
    from safetensors.torch import load_file

    done_file = out / "blend_done.json"
    if steps <= 0 or read_json(done_file) == {"steps": steps}:
        return
    plain = load_file(str(out / "latents.safetensors"))
    blends = load_file(str(out / "blend_latents.safetensors"))
    scaling = _scaling(out)
    tokenizer, modules, params, optimizer, ema = _trainable_pair(lr)
    earlier = checkpoints(out, BLEND_CHECKPOINTS)
    own = [c for c in earlier if step_of(c) <= steps]
    if earlier and not own:  # a shorter plan than the one they came from: start over
        (out / BLEND_CHECKPOINTS).rename(out / f"{BLEND_CHECKPOINTS}-superseded-{int(time.time())}")
    start = restore_newest(own, modules, ema, optimizer) if own else None
    if start is None:
        unet_final = [c for c in checkpoints(out) if step_of(c) == unet_steps]
        if not unet_final:
            raise CheckpointDamaged(f"the UNet stage's checkpoint of step {unet_steps} is missing in {out}")
        restore(unet_final[-1], modules, ema, optimizer)
        start = 0
    for group in optimizer.param_groups:
        group["lr"] = lr
    noise_scheduler = DDPMScheduler.from_config(arch.build_scheduler().config)
    words, classes = style_words(), world.CLASSES
    word_ids = [tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    blend = EmbeddingBlend(modules["text_encoder"])
    n_blend = int(round(batch * fraction))
    loss_log, elapsed0 = _loss_log(out / "blend_loss.csv", start)
    t0 = time.time()
    bar = progress(total=steps, initial=start, desc="style blends")
    try:
        for step in range(start + 1, steps + 1):
            if step % 50 == 1:
                set_threads()
            generator = torch.Generator().manual_seed(seed * 1_000_003 + 500_000 + step)
            rng = np.random.default_rng(seed * 1_000_003 + 500_000 + step)
            ip = torch.randint(len(plain["means"]), (batch - n_blend,), generator=generator)
            ib = torch.randint(len(blends["means"]), (n_blend,), generator=generator)
            mean = torch.cat([plain["means"][ip], blends["means"][ib]])
            std = torch.cat([plain["stds"][ip], blends["stds"][ib]])
            z = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling
            prompts = [
                base_prompt(rng, words[int(w)], classes[int(c)])
                for w, c in zip(plain["words"][ip], plain["classes"][ip])
            ]
            blend.mixes = []
            for k in ib.tolist():
                a, b = int(blends["first"][k]), int(blends["second"][k])
                prompts.append(base_prompt(rng, words[a], classes[int(blends["classes"][k])]))
                if prompts[-1]:  # an empty prompt (classifier-free guidance) has no word to blend
                    blend.mixes.append((len(prompts) - 1, word_ids[a], word_ids[b], float(blends["mix"][k])))
            loss_value = _diffusion_step(modules, params, optimizer, tokenizer, noise_scheduler, z, prompts, generator)
            _ema_update(modules, ema, ema_decay_rate)
            loss_log.append(step, loss_value, lr, elapsed0 + time.time() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if step % checkpoint_every == 0 or step == steps:
                save_state(out, step, modules, ema, optimizer, folder=BLEND_CHECKPOINTS)
    finally:
        bar.close()
        loss_log.close()
    write_text_atomic(done_file, json.dumps({"steps": steps}))


def final_checkpoint(out: Path) -> Path:
    """What the model is exported from: the blend stage's last checkpoint when it ran, else the UNet stage's."""
    blends = checkpoints(out, BLEND_CHECKPOINTS) if (out / "blend_done.json").is_file() else []
    return blends[-1] if blends else checkpoints(out)[-1]
