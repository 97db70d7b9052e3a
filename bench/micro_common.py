"""What bench/micro_ti.py's figures share: batched seeded sampling, retrieval, the VAE round trip."""

from __future__ import annotations

import torch

from styleprompt.micro.judges import StyleJudge


def sample(pipe, prompts: list[str], seeds: list[int], steps: int = 25, guidance: float = 7.5, batch: int = 24):
    """One picture per (prompt, seed), batched, each with its own seeded generator."""
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[i : i + batch]]
        with torch.no_grad():
            out = pipe(
                prompt=prompts[i : i + batch], generator=gens, num_inference_steps=steps, guidance_scale=guidance
            )
        images += out.images
    return images


def retrieval(judge: StyleJudge, vectors: torch.Tensor, painting: str) -> tuple[float, float]:
    ranks = judge.ranks(vectors, painting)
    return float((ranks <= 1).float().mean()), float((ranks <= 3).float().mean())


def round_trip(vae, images: list) -> list:
    """Each picture encoded to its latent mean and decoded: what the model's VAE can carry at best."""
    from styleprompt.plumbing.images import pil_to_tensor, tensor_to_pil

    out = []
    for i in range(0, len(images), 64):
        x = torch.cat([pil_to_tensor(img) for img in images[i : i + 64]]) * 2 - 1
        with torch.no_grad():
            decoded = vae.decode(vae.encode(x).latent_dist.mean).sample
        out += [tensor_to_pil(((d + 1) / 2).clamp(0, 1)[None]) for d in decoded]
    return out
