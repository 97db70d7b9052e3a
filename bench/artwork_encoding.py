"""What one training artwork costs before the first step: the time to encode it into the latent
cache and the cache's memory, per model (why `styleprompt.diffusion.data.MAX_TRAIN_IMAGES` is 500).

Each model encodes 20 generated artworks at two sizes (after a warm-up of 2) through
`LatentCache.build`, on one CPU thread. `--sd15` also times an SD 1.5-shaped VAE (random weights:
the time does not depend on them, and nothing is downloaded) on the 592x592 view of a 512-px run.

Run: .venv/bin/python bench/artwork_encoding.py tiny micro --sd15
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from styleprompt.diffusion.data import Artwork, LatentCache
from styleprompt.diffusion.models import load_pipeline, native_resolution


def bench_model(name: str, count: int = 20) -> None:
    pipe = load_pipeline(name, device="cpu").pipe
    resolution = native_resolution(pipe)
    rng = np.random.default_rng(0)
    for width, height in [(160, 128), (1024, 768)]:
        pictures = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]
        artworks = [Artwork(None, Image.fromarray(p), None) for p in pictures]  # type: ignore[arg-type]
        args = (pipe.vae, resolution, pipe.vae_scale_factor, torch.device("cpu"), torch.float32)
        LatentCache.build(artworks[:2], *args)
        start = time.perf_counter()
        cache = LatentCache.build(artworks, *args)
        per_image = (time.perf_counter() - start) / count
        kib = sum(m.numel() * 4 * 2 for m in cache.means) / count / 1024  # mean + std, both orientations
        print(f"{name} at {resolution} px, {width}x{height} artwork: {per_image * 1000:.1f} ms, {kib:.1f} KiB each")


def bench_sd15_vae() -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    ).eval()
    view = torch.randn(1, 3, 592, 592)  # training_view's short side for 512 px (x1.15, multiple of 8)
    with torch.no_grad():
        vae.encode(view[..., :64, :64])
        start = time.perf_counter()
        for _ in range(2):
            vae.encode(view)
    print(f"SD 1.5-shaped VAE, 592x592: {(time.perf_counter() - start) / 2:.1f} s per orientation (2 per artwork)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["tiny", "micro"])
    parser.add_argument("--sd15", action="store_true", help="also time an SD 1.5-shaped VAE (slow on a CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        bench_model(name)
    if args.sd15:
        bench_sd15_vae()


if __name__ == "__main__":
    main()
