"""The build's autoencoder stages: the VAE, every picture's latents, and the wide decoder.

Why together: they are the one job of making the latent space the UNet learns in. The VAE is
trained first, frozen, used to encode every picture (plain and mirrored), and a decoder twice as
wide is then trained on those same latents, so no latent moves (docs/micro.md, stage 5).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from styleprompt.micro import arch
from styleprompt.micro.build_files import (
    done,
    intact_model_folder,
    intact_tensors,
    progress,
    save_model_folder,
    save_tensors,
)
from styleprompt.micro.world_data import load_data, to_model_input
from styleprompt.plumbing.cpu_threads import set_threads


def cosine_to_tenth(progress: float) -> float:
    """The rate factor of every stage's schedule: a cosine from 1 at progress 0 to 0.1 at 1."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def edge_l1(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical gradients: pixel L1 alone averages textures
    away, matching the gradients keeps the brushwork the style judge reads."""
    return F.l1_loss(recon.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(recon.diff(dim=-2), x.diff(dim=-2))


def stage_vae(out: Path, steps: int, batch: int, seed: int) -> None:
    folder = out / "vae"
    if done(folder, intact_model_folder):
        return
    images, _, _ = load_data(out)
    torch.manual_seed(seed)
    vae = arch.build_vae().train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    bar = progress(total=steps, desc="vae")
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
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
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
    save_model_folder(vae, folder)


def encode_latents(vae, images: torch.Tensor, desc: str) -> dict[str, torch.Tensor]:
    """Latent means and stds of uint8 pictures, all plain and then all mirrored (twice as many rows)."""
    means, stds = [], []
    with torch.no_grad():
        for flip in (False, True):
            for i in progress(iterable=range(0, len(images), 256), desc=f"{desc}{' (mirrored)' if flip else ''}"):
                x = to_model_input(images[i : i + 256])
                dist = vae.encode(x.flip(-1) if flip else x).latent_dist
                means.append(dist.mean)
                stds.append(dist.std)
    return {"means": torch.cat(means).contiguous(), "stds": torch.cat(stds).contiguous()}


def stage_latents(out: Path) -> None:
    """Each picture's latent distribution, plain and mirrored (the VAE is frozen from here on)."""
    path = out / "latents.safetensors"
    if done(path, intact_tensors):
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(out / "vae")).eval()
    images, classes, words = load_data(out)
    tensors = {
        **encode_latents(vae, images, "latents"),
        "classes": classes.repeat(2).contiguous(),
        "words": words.repeat(2).contiguous(),
    }
    save_tensors(tensors, path)


def stage_blend_latents(out: Path) -> None:
    """The blends' latent distributions, plain and mirrored, like `stage_latents`."""
    from safetensors.torch import load_file

    path = out / "blend_latents.safetensors"
    if done(path, intact_tensors):
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(out / "vae")).eval()
    data = load_file(str(out / "data" / "blends.safetensors"))
    tensors = encode_latents(vae, data["images"], "blend latents")
    tensors.update({k: data[k].repeat(2).contiguous() for k in ("classes", "first", "second", "mix")})
    save_tensors(tensors, path)


def stage_decoder(out: Path, steps: int, batch: int, seed: int) -> None:
    """Train a wider decoder on the frozen encoder's latents: the latent space the UNet learns stays the same.

    Why: after the VAE stage the reconstructions blur the painted textures. The style judge's
    retrieval@1 on round trips of 532 fresh renderer pictures was 0.68, against 1.0 on the
    originals. Fine-tuning the 16/32/64-channel decoder for 800 steps raised it to 0.80, with
    la_muse, scene_de_rue and the_scream still under 0.2. A decoder twice as wide
    (`arch.build_wide_decoder_vae`), trained from scratch with the image-gradient term weighted
    up, is measured in docs/micro.md (bench/micro_ti.py's ceiling 0).
    """
    from safetensors.torch import load_file

    folder = out / "vae-decoder"
    if done(folder, intact_model_folder):
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
    bar = progress(total=steps, desc="decoder")
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
    save_model_folder(vae.eval(), folder, fix=lambda tmp: drop_derived_vae_keys(tmp / "config.json"))


def drop_derived_vae_keys(config: Path) -> None:
    """AsymmetricAutoencoderKL writes two keys its __init__ derives itself (block_out_channels,
    force_upcast), then warns on every load that they "will be ignored": drop them from the file."""
    from styleprompt.plumbing.files import write_text_atomic

    values = json.loads(config.read_text())
    if values.get("_class_name") == "AsymmetricAutoencoderKL":
        for key in ("block_out_channels", "force_upcast"):
            values.pop(key, None)
        write_text_atomic(config, json.dumps(values, indent=2, sort_keys=True) + "\n")


def load_vae(folder: Path):
    """An AutoencoderKL or the wide-decoder AsymmetricAutoencoderKL, by the class its config names."""
    import diffusers

    name = json.loads((folder / "config.json").read_text())["_class_name"]
    if name not in ("AutoencoderKL", "AsymmetricAutoencoderKL"):
        raise ValueError(f"{folder}: unexpected VAE class {name}")
    return getattr(diffusers, name).from_pretrained(str(folder))
