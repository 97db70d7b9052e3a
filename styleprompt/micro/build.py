"""Build the micro model from nothing, resumably: world data, VAE, text encoder + UNet, judges.

`python -m styleprompt.micro build --output build/micro [--install]`. Every stage writes its
result into the output folder and is skipped when that result is already there; the long stage
(text encoder + UNet) checkpoints every `--checkpoint-every` steps in safetensors (weights, EMA
weights and AdamW moments, no pickle) and resumes from the newest checkpoint, so a killed build
continues where it stopped. Everything is seeded.

Why this recipe (the textual inversion papers' base models, scaled down): the text encoder is
trained with the UNet (a random CLIP knows no words), prompts are the templates users type
("a {style} style of a {class}" and the textual inversion template family) with 10% empty
prompts for classifier-free guidance, and sampling uses an EMA of the weights.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from styleprompt.diffusion.templates import FILEWORDS_TEMPLATES, STYLE_TEMPLATES, fill
from styleprompt.micro import HELD_OUT, JUDGE_DIR, MODEL_DIR, STYLE_WORDS, arch, style_words, world
from styleprompt.plumbing.cpu_threads import set_threads

log = logging.getLogger(__name__)

SHARED_STYLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "style"


def _tqdm(**kwargs):
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def style_folder(path: str | Path | None = None) -> Path:
    from styleprompt.plumbing.errors import UserError

    folder = Path(path) if path else SHARED_STYLES
    missing = [name for name in [*STYLE_WORDS.values(), *HELD_OUT] if not (folder / name).is_file()]
    if missing:
        raise UserError(f"the style paintings are not in {folder} (missing {missing[0]}); pass --styles DIR")
    return folder


def load_painting(folder: Path, name: str):
    from styleprompt.plumbing.images import load_image

    return load_image(folder / name)


# -- stage 1: the world's pictures ---------------------------------------------------------------


def stage_data(out: Path, styles: Path, per_class: int, seed: int) -> None:
    """`per_class` pictures of every class in every style word, one safetensors file per word."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for k, word in enumerate(style_words()):
        path = folder / f"{word}.safetensors"
        if path.is_file():
            continue
        t0 = time.time()
        style = None if word == world.PLAIN_STYLE else world.style_vector_of(load_painting(styles, STYLE_WORDS[word]))
        pictures = world.make_pictures(style, world.CLASSES, per_class * len(world.CLASSES), seed=seed * 1000 + k)
        images = torch.from_numpy(np.stack([np.asarray(p.image) for p in pictures]))
        classes = torch.tensor([world.CLASSES.index(p.cls) for p in pictures])
        save_file({"images": images, "classes": classes}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        log.warning("data: %s, %d pictures in %.0f s", word, len(pictures), time.time() - t0)


def load_data(out: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images [N, 64, 64, 3], class index [N], style-word index [N])."""
    images, classes, words = [], [], []
    for k, word in enumerate(style_words()):
        part = load_file(str(out / "data" / f"{word}.safetensors"))
        images.append(part["images"])
        classes.append(part["classes"])
        words.append(torch.full_like(part["classes"], k))
    return torch.cat(images), torch.cat(classes), torch.cat(words)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# -- stage 2: the style judge's gallery ------------------------------------------------------------


def stage_gallery(styles: Path, per_class: int = 2, seed: int = 777) -> None:
    """Each of the 19 paintings' style as the world paints it at the model's resolution.

    Why not only the painting's own vector: a 64-px picture cannot carry a painting's fine
    detail, so the judge scores world renderings against the paintings' own vectors at 0.69
    retrieval@1, against these world prototypes at 0.99 (docs/micro.md). Both galleries ship;
    the figures use the prototypes and report the paintings' own vectors beside them.
    """
    path = JUDGE_DIR / "style_gallery.safetensors"
    if path.is_file():
        return
    from classic.ghiasi import style_vectors

    names = sorted([*STYLE_WORDS.values(), *HELD_OUT])
    own, proto = [], []
    for k, name in enumerate(_tqdm(iterable=names, desc="judge gallery")):
        painting = load_painting(styles, name)
        pictures = world.make_pictures(
            world.style_vector_of(painting), world.CLASSES, per_class * len(world.CLASSES), seed=seed * 1000 + k
        )
        with torch.no_grad():
            vectors = style_vectors([p.image for p in pictures] + [painting])
        proto.append(F.normalize(vectors[:-1], dim=-1).mean(0))
        own.append(vectors[-1])
    JUDGE_DIR.mkdir(parents=True, exist_ok=True)
    save_file(
        {"prototypes": torch.stack(proto).contiguous(), "paintings": torch.stack(own).contiguous()},
        str(path),
        metadata={"names": json.dumps(names)},
    )


# -- stage 3: the VAE ---------------------------------------------------------------------------------


def cosine_to_tenth(progress: float) -> float:
    """The rate factor of every stage's schedule: a cosine from 1 at progress 0 to 0.1 at 1."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def edge_l1(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical gradients: pixel L1 alone averages textures
    away, matching the gradients keeps the brushwork the style judge reads."""
    return F.l1_loss(recon.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(recon.diff(dim=-2), x.diff(dim=-2))


def stage_vae(out: Path, steps: int, batch: int, seed: int) -> None:
    folder = out / "vae"
    if (folder / "config.json").is_file():
        return
    images, _, _ = load_data(out)
    torch.manual_seed(seed)
    vae = arch.build_vae().train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    bar = _tqdm(total=steps, desc="vae")
    for step in range(1, steps + 1):
        if step % 50 == 1:
            set_threads()
        idx = torch.randint(len(images), (batch,), generator=generator)
        x = to_model_input(images[idx])
        flip = torch.rand(batch, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample(generator=None)).sample
        edges = edge_l1(recon, x)
        loss = F.l1_loss(recon, x) + 0.5 * F.mse_loss(recon, x) + edges + 1e-6 * dist.kl().mean()
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, step / 50) * cosine_to_tenth(step / steps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()
    vae.eval()
    with torch.no_grad():
        sample = torch.cat(
            [
                vae.encode(to_model_input(images[i : i + 256])).latent_dist.sample()
                for i in range(0, min(len(images), 2048), 256)
            ]
        )
    vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    tmp = folder.with_name("vae.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(str(tmp))
    tmp.replace(folder)


# -- stage 4: latents ------------------------------------------------------------------------------------


def encode_latents(vae, images: torch.Tensor, desc: str) -> dict[str, torch.Tensor]:
    """Latent means and stds of uint8 pictures, all plain and then all mirrored (twice as many rows)."""
    means, stds = [], []
    with torch.no_grad():
        for flip in (False, True):
            for i in _tqdm(iterable=range(0, len(images), 256), desc=f"{desc}{' (mirrored)' if flip else ''}"):
                x = to_model_input(images[i : i + 256])
                dist = vae.encode(x.flip(-1) if flip else x).latent_dist
                means.append(dist.mean)
                stds.append(dist.std)
    return {"means": torch.cat(means).contiguous(), "stds": torch.cat(stds).contiguous()}


def stage_latents(out: Path) -> None:
    """Each picture's latent distribution, plain and mirrored (the VAE is frozen from here on)."""
    path = out / "latents.safetensors"
    if path.is_file():
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(out / "vae")).eval()
    images, classes, words = load_data(out)
    tmp = path.with_suffix(".tmp")
    save_file(
        {
            **encode_latents(vae, images, "latents"),
            "classes": classes.repeat(2).contiguous(),
            "words": words.repeat(2).contiguous(),
        },
        str(tmp),
    )
    tmp.replace(path)


def stage_decoder(out: Path, steps: int, batch: int, seed: int) -> None:
    """Train a wider decoder on the frozen encoder's latents: the latent space the UNet learns stays the same.

    Why: after the VAE stage the reconstructions blur the painted textures. The style judge's
    retrieval@1 on round trips of 532 fresh renderer pictures was 0.68, against 1.0 on the
    originals. Fine-tuning the 16/32/64-channel decoder for 800 steps raised it to 0.80, with
    la_muse, scene_de_rue and the_scream still under 0.2. A decoder twice as wide
    (`arch.build_wide_decoder_vae`), trained from scratch with the image-gradient term weighted
    up, is measured in docs/micro.md (bench/micro_ti.py's ceiling 0).
    """
    folder = out / "vae-decoder"
    if (folder / "config.json").is_file():
        return
    from diffusers import AutoencoderKL

    images, _, _ = load_data(out)
    latents = load_file(str(out / "latents.safetensors"))
    half = len(images)  # latents hold the plain pictures, then the mirrored ones
    trained = AutoencoderKL.from_pretrained(str(out / "vae"))
    torch.manual_seed(seed)
    vae = arch.build_wide_decoder_vae(trained)
    vae.requires_grad_(False)
    trainable = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in trainable:
        p.requires_grad_(True)
    vae.decoder.train()
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 1)
    bar = _tqdm(total=steps, desc="decoder")
    for step in range(1, steps + 1):
        if step % 50 == 1:
            set_threads()
        idx = torch.randint(len(latents["means"]), (batch,), generator=generator)
        z = latents["means"][idx] + latents["stds"][idx] * torch.randn(latents["means"][idx].shape, generator=generator)
        x = to_model_input(images[idx % half])
        mirrored = idx >= half
        x[mirrored] = x[mirrored].flip(-1)
        recon = vae.decode(z).sample
        edges = edge_l1(recon, x)
        loss = F.l1_loss(recon, x) + 2.0 * edges
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, step / 50) * cosine_to_tenth(step / steps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    bar.close()
    tmp = folder.with_name("vae-decoder.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.eval().save_pretrained(str(tmp))
    _drop_derived_vae_keys(tmp / "config.json")
    tmp.replace(folder)


def _drop_derived_vae_keys(config: Path) -> None:
    """AsymmetricAutoencoderKL writes two keys its __init__ derives itself (block_out_channels,
    force_upcast), then warns on every load that they "will be ignored": drop them from the file."""
    values = json.loads(config.read_text())
    if values.get("_class_name") == "AsymmetricAutoencoderKL":
        for key in ("block_out_channels", "force_upcast"):
            values.pop(key, None)
        config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


# -- stage 5: text encoder + UNet ------------------------------------------------------------------------------


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


def _checkpoints(out: Path, folder: str = "checkpoints") -> list[Path]:
    """A stage's checkpoints, oldest first (the UNet stage's in checkpoints/, the blend stage's beside)."""
    return sorted((out / folder).glob("step-*"), key=_step_of)


def _save_checkpoint(
    out: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    ema: dict[str, dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    keep: int = 2,
    also_keep: int | None = None,
    checkpoints_folder: str = "checkpoints",
) -> None:
    folder = out / checkpoints_folder / f"step-{step:06d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / f"{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in ema[name].items()}, str(tmp / f"{name}.ema.safetensors"))
    moments = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, state in ((i, optimizer.state[p]) for i, p in enumerate(params) if p in optimizer.state):
        moments[f"{i}.exp_avg"] = state["exp_avg"].contiguous()
        moments[f"{i}.exp_avg_sq"] = state["exp_avg_sq"].contiguous()
        moments[f"{i}.step"] = torch.as_tensor(state["step"]).reshape(1).float()
    save_file(moments, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    tmp.replace(folder)
    for old in _checkpoints(out, checkpoints_folder)[:-keep]:
        if _step_of(old) != also_keep:
            shutil.rmtree(old, ignore_errors=True)


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def half_point(steps: int, checkpoint_every: int) -> int:
    """The last checkpoint step within the rate schedule's hold (the first half, see `unet_lr`).

    Why keep it: every step up to there ran at the rates any longer plan would use too, so a build
    asked later for more steps resumes from it and ends exactly where a straight run would.
    """
    return (steps // 2) // checkpoint_every * checkpoint_every


def _resume_point(out: Path, steps: int, checkpoint_every: int) -> Path | None:
    """The checkpoint to continue from; for a finished build extended to more steps, its half point.

    The extended plan's rates differ from the old one's after the old half point, so the old plan's
    later checkpoints are moved aside (kept, not deleted) into checkpoints/superseded-N.
    """
    checkpoints = _checkpoints(out)
    done_file = out / "unet_done.json"
    if not checkpoints or not done_file.is_file():
        return checkpoints[-1] if checkpoints else None
    old_steps = int(json.loads(done_file.read_text()).get("steps", 0))
    half = [c for c in checkpoints if _step_of(c) <= old_steps / 2]
    if old_steps >= steps or not half:
        if old_steps < steps:
            log.warning(
                "unet: no checkpoint from the first half of the %d-step plan; extending from its end", old_steps
            )
        return checkpoints[-1]
    aside = out / "checkpoints" / f"superseded-{old_steps}"
    aside.mkdir(exist_ok=True)
    for later in checkpoints[len(half) :]:
        later.replace(aside / later.name)
    done_file.unlink()
    log.warning(
        "unet: extending the %d-step build to %d from its half point, step %d", old_steps, steps, _step_of(half[-1])
    )
    return half[-1]


def _restore(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    ema: dict[str, dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
) -> int:
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


def _open_loss_log(path: Path, start: int) -> None:
    """A fresh loss log, or the old one without the rows past the checkpoint resumed from (redone)."""
    if start == 0 or not path.is_file():
        path.write_text("step,loss,lr,elapsed\n")
        return
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= start]) + "\n")


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


def stage_unet(
    out: Path, steps: int, batch: int, lr: float, seed: int, checkpoint_every: int, max_minutes: float | None = None
) -> bool:
    """Train text encoder + UNet; returns True when `steps` are done (False: stopped by the time limit)."""
    from diffusers import DDPMScheduler

    done_file = out / "unet_done.json"
    if done_file.is_file() and json.loads(done_file.read_text()).get("steps", 0) >= steps:
        return True
    latents = load_file(str(out / "latents.safetensors"))
    from diffusers import AutoencoderKL

    scaling = float(AutoencoderKL.load_config(str(out / "vae"))["scaling_factor"])
    torch.manual_seed(seed)
    tokenizer, modules, params, optimizer, ema = _trainable_pair(lr)
    start = 0
    resume = _resume_point(out, steps, checkpoint_every)
    if resume is not None:
        start = _restore(resume, modules, ema, optimizer)
        log.warning("unet: resuming from step %d", start)
    noise_scheduler = DDPMScheduler.from_config(arch.build_scheduler().config)
    words, classes = style_words(), world.CLASSES
    loss_path = out / "loss.csv"
    _open_loss_log(loss_path, start)
    keep_step = half_point(steps, checkpoint_every)
    t0 = time.time()
    bar = _tqdm(total=steps, initial=start, desc="text encoder + unet")
    with loss_path.open("a") as log_file:
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
            log_file.write(f"{step},{loss_value:.6f},{current_lr:.3e},{time.time() - t0:.1f}\n")
            log_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if step % checkpoint_every == 0 or step == steps:
                _save_checkpoint(out, step, modules, ema, optimizer, also_keep=keep_step)
                if max_minutes is not None and (time.time() - t0) / 60 > max_minutes and step < steps:
                    bar.close()
                    log.warning("unet: stopped at step %d by --max-minutes; run again to continue", step)
                    return False
    bar.close()
    write_loss_plot(out)
    (out / "unet_done.json").write_text(json.dumps({"steps": steps}))
    return True


# -- stage 5b (optional, off by default): style blends ---------------------------------------------------------
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


def stage_blend_data(out: Path, styles: Path, combos: int, seed: int) -> None:
    """`combos` random (painting, painting, mix) blends, each painted over every class once."""
    path = out / "data" / "blends.safetensors"
    if path.is_file():
        return
    t0 = time.time()
    words = list(STYLE_WORDS)
    vectors = [world.style_vector_of(load_painting(styles, STYLE_WORDS[w])) for w in words]
    rng = np.random.default_rng(seed + 7)
    images, classes, first, second, mix = [], [], [], [], []
    for k in range(combos):
        a, b = (int(i) for i in rng.choice(len(words), 2, replace=False))
        lam = float(rng.uniform(0.15, 0.85))
        style = lam * vectors[a] + (1 - lam) * vectors[b]
        for picture in world.make_pictures(style, world.CLASSES, len(world.CLASSES), seed=seed * 1000 + 900_000 + k):
            images.append(np.asarray(picture.image))
            classes.append(world.CLASSES.index(picture.cls))
            first.append(a)
            second.append(b)
            mix.append(lam)
    tensors = {
        "images": torch.from_numpy(np.stack(images)),
        "classes": torch.tensor(classes),
        "first": torch.tensor(first),
        "second": torch.tensor(second),
        "mix": torch.tensor(mix, dtype=torch.float32),
    }
    save_file(tensors, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)
    log.warning("blends: %d pictures in %.0f s", len(images), time.time() - t0)


def stage_blend_latents(out: Path) -> None:
    """The blends' latent distributions, plain and mirrored, like `stage_latents`."""
    path = out / "blend_latents.safetensors"
    if path.is_file():
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(out / "vae")).eval()
    data = load_file(str(out / "data" / "blends.safetensors"))
    tensors = encode_latents(vae, data["images"], "blend latents")
    tensors.update({k: data[k].repeat(2).contiguous() for k in ("classes", "first", "second", "mix")})
    save_file(tensors, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)


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


def _ema_update(modules: dict[str, torch.nn.Module], ema: dict[str, dict[str, torch.Tensor]], decay: float) -> None:
    with torch.no_grad():
        for name, module in modules.items():
            for k, v in module.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[name][k].mul_(decay).add_(v, alpha=1 - decay)
                else:
                    ema[name][k].copy_(v)


BLEND_CHECKPOINTS = "blend-checkpoints"


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

    done_file = out / "blend_done.json"
    if steps <= 0 or (done_file.is_file() and json.loads(done_file.read_text()) == {"steps": steps}):
        return
    plain = load_file(str(out / "latents.safetensors"))
    blends = load_file(str(out / "blend_latents.safetensors"))
    from diffusers import AutoencoderKL

    scaling = float(AutoencoderKL.load_config(str(out / "vae"))["scaling_factor"])
    tokenizer, modules, params, optimizer, ema = _trainable_pair(lr)
    earlier = _checkpoints(out, BLEND_CHECKPOINTS)
    own = [c for c in earlier if _step_of(c) <= steps]
    if earlier and not own:  # a shorter plan than the one they came from: start over
        (out / BLEND_CHECKPOINTS).rename(out / f"{BLEND_CHECKPOINTS}-superseded-{int(time.time())}")
    start = _restore(own[-1] if own else out / "checkpoints" / f"step-{unet_steps:06d}", modules, ema, optimizer)
    start = start if own else 0
    for group in optimizer.param_groups:
        group["lr"] = lr
    noise_scheduler = DDPMScheduler.from_config(arch.build_scheduler().config)
    words, classes = style_words(), world.CLASSES
    word_ids = [tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    blend = EmbeddingBlend(modules["text_encoder"])
    n_blend = int(round(batch * fraction))
    loss_path = out / "blend_loss.csv"
    _open_loss_log(loss_path, start)
    t0 = time.time()
    bar = _tqdm(total=steps, initial=start, desc="style blends")
    with loss_path.open("a") as log_file:
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
            log_file.write(f"{step},{loss_value:.6f},{lr:.3e},{time.time() - t0:.1f}\n")
            log_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if step % checkpoint_every == 0 or step == steps:
                _save_checkpoint(out, step, modules, ema, optimizer, checkpoints_folder=BLEND_CHECKPOINTS)
    bar.close()
    done_file.write_text(json.dumps({"steps": steps}))


def final_checkpoint(out: Path) -> Path:
    """What the model is exported from: the blend stage's last checkpoint when it ran, else the UNet stage's."""
    blends = _checkpoints(out, BLEND_CHECKPOINTS) if (out / "blend_done.json").is_file() else []
    return blends[-1] if blends else _checkpoints(out)[-1]


def write_loss_plot(out: Path) -> Path:
    """loss.png beside loss.csv (the model card's curve), with the trainer's own plot."""
    from styleprompt.diffusion.training import plot_loss

    with (out / "loss.csv").open() as f:
        rows = list(csv.DictReader(f))
    plot_loss(rows, out / "loss.png", "micro model: text encoder + UNet")
    return out / "loss.png"


def load_vae(folder: Path):
    """An AutoencoderKL or the wide-decoder AsymmetricAutoencoderKL, by the class its config names."""
    import diffusers

    name = json.loads((folder / "config.json").read_text())["_class_name"]
    if name not in ("AutoencoderKL", "AsymmetricAutoencoderKL"):
        raise ValueError(f"{folder}: unexpected VAE class {name}")
    return getattr(diffusers, name).from_pretrained(str(folder))


def export_pipeline(out: Path, folder: Path, from_checkpoint: Path | None = None) -> Path:
    """The EMA weights of the newest (or given) checkpoint as a diffusers folder (safetensors)."""

    ckpt = from_checkpoint or final_checkpoint(out)
    tokenizer = arch.build_tokenizer()
    text_encoder = arch.build_text_encoder(len(tokenizer))
    unet = arch.build_unet()
    text_encoder.load_state_dict(load_file(str(ckpt / "text_encoder.ema.safetensors")))
    unet.load_state_dict(load_file(str(ckpt / "unet.ema.safetensors")))
    vae = load_vae(out / ("vae-decoder" if (out / "vae-decoder").is_dir() else "vae"))
    pipe = arch.assemble(vae.eval(), text_encoder.eval(), tokenizer, unet.eval())
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # fp16 on disk (the package must stay under 25 MB); load_micro_pipeline reads it back as fp32.
    pipe.to(dtype=torch.float16).save_pretrained(str(tmp), safe_serialization=True)
    _drop_derived_vae_keys(tmp / "vae" / "config.json")
    (tmp / "build.json").write_text(
        json.dumps(
            {
                "checkpoint": f"{ckpt.parent.name}/{ckpt.name}",
                "style_words": STYLE_WORDS,
                "held_out": HELD_OUT,
                "classes": world.CLASSES,
                "parameters": arch.parameter_counts(pipe),
            },
            indent=1,
        )
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


# -- stage 6: the class judge -----------------------------------------------------------------------------------


def stage_classifier(out: Path, styles: Path, steps: int, seed: int, test_per_class: int = 6) -> dict:
    """A small CNN trained on world renderings only; tested on fresh renderings in all 19 styles + photo."""
    from styleprompt.micro.judges import ClassJudge

    path = JUDGE_DIR / "classifier.safetensors"
    report_path = out / "classifier.json"
    if path.is_file() and report_path.is_file():
        return json.loads(report_path.read_text())
    images, classes, _ = load_data(out)
    torch.manual_seed(seed)
    model = ClassJudge().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for step in _tqdm(iterable=range(1, steps + 1), desc="class judge"):
        idx = torch.randint(len(images), (64,), generator=generator)
        x = to_model_input(images[idx])
        flip = torch.rand(64, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = F.cross_entropy(model(x), classes[idx])
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    names = sorted([*STYLE_WORDS.values(), *HELD_OUT])
    correct = total = 0
    per_style = {}
    for k, name in enumerate([None, *names]):
        vector = None if name is None else world.style_vector_of(load_painting(styles, name))
        pictures = world.make_pictures(vector, world.CLASSES, test_per_class * len(world.CLASSES), seed=900_000 + k)
        with torch.no_grad():
            x = to_model_input(torch.from_numpy(np.stack([np.asarray(p.image) for p in pictures])))
            predicted = model(x).argmax(1)
        truth = torch.tensor([world.CLASSES.index(p.cls) for p in pictures])
        hits = int((predicted == truth).sum())
        per_style[name or world.PLAIN_STYLE] = hits / len(pictures)
        correct, total = correct + hits, total + len(pictures)
    JUDGE_DIR.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    report = {"accuracy": correct / total, "pictures": total, "per_style": per_style, "steps": steps}
    report_path.write_text(json.dumps(report, indent=1))
    return report


# -- the whole build ----------------------------------------------------------------------------------------------


def build(
    out: Path,
    *,
    styles: str | None = None,
    per_class: int = 16,
    vae_steps: int = 700,
    unet_steps: int = 6400,
    batch: int = 48,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint_every: int = 100,
    classifier_steps: int = 400,
    install: bool = False,
    max_minutes: float | None = None,
    decoder_steps: int = 1500,
    blend_steps: int = 0,
    blend_lr: float = 2e-4,
    blend_fraction: float = 0.5,
    blend_combos: int = 70,
    blend_ema: float = 0.998,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    folder = style_folder(styles)
    (out / "build_config.json").write_text(
        json.dumps(
            {
                "per_class": per_class,
                "vae_steps": vae_steps,
                "unet_steps": unet_steps,
                "batch": batch,
                "lr": lr,
                "seed": seed,
                "classifier_steps": classifier_steps,
                "decoder_steps": decoder_steps,
                "blend_steps": blend_steps,
                "blend_lr": blend_lr,
                "blend_fraction": blend_fraction,
                "blend_combos": blend_combos,
                "blend_ema": blend_ema,
            },
            indent=1,
        )
    )
    timings = {}
    for name, stage in [
        ("data", lambda: stage_data(out, folder, per_class, seed)),
        ("blend data", lambda: stage_blend_data(out, folder, blend_combos, seed)),
        ("gallery", lambda: stage_gallery(folder)),
        ("vae", lambda: stage_vae(out, vae_steps, 32, seed)),
        ("latents", lambda: stage_latents(out)),
        ("blend latents", lambda: stage_blend_latents(out)),
        ("decoder", lambda: stage_decoder(out, decoder_steps, 32, seed)),
    ]:
        t0 = time.time()
        stage()
        timings[name] = round(time.time() - t0, 1)
        log.warning("stage %s: %.0f s", name, timings[name])
    t0 = time.time()
    done = stage_unet(out, unet_steps, batch, lr, seed, checkpoint_every, max_minutes)
    timings["unet"] = round(time.time() - t0, 1)
    if done:
        t0 = time.time()
        stage_blend(out, unet_steps, blend_steps, batch, blend_lr, blend_fraction, seed, checkpoint_every, blend_ema)
        timings["blend"] = round(time.time() - t0, 1)
        t0 = time.time()
        stage_classifier(out, folder, classifier_steps, seed)
        timings["classifier"] = round(time.time() - t0, 1)
    with (out / "timings.csv").open("a", newline="") as f:
        csv.writer(f).writerow([time.strftime("%Y-%m-%dT%H:%M:%S"), json.dumps(timings)])
    # Blend checkpoints from an earlier run with --blend-steps are not exported when it is now 0.
    source = (final_checkpoint(out) if blend_steps > 0 else _checkpoints(out)[-1]) if done else None
    if install or done:
        export_pipeline(out, out / "model", source)
    if install:
        export_pipeline(out, MODEL_DIR, source)
