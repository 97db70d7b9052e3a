"""Training-step speed and memory: our trainer against the diffusers example's loop, one process.

    python bench/train_step.py            # tiny + mid-size model, CPU, fp32
    python bench/train_step.py --steps 20 --configs mid --precision bf16

The reference is a minimal loop with the math of diffusers' examples/textual_inversion: the
whole token-embedding table is the trainable parameter (AdamW state for all of it), the VAE
encodes the batch every step, and after every step the non-placeholder rows are copied back from
a saved original. Ours (`StyleTokenTrainer.step`) trains only the placeholder rows and samples
cached latents. Same model weights, batch, resolution and precision; rounds alternate between
the two loops so machine drift hits both. The last line is `ratio: <ours steps/s / reference steps/s>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from styleprompt.diffusion import tiny
from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.models import LoadedModel, model_family
from styleprompt.diffusion.tokens import add_placeholder_tokens, expand_token
from styleprompt.diffusion.training import StyleTokenTrainer

TOKEN, VECTORS, INIT = "<bench>", 4, "painting"
PROMPT = "a painting in the style of {}"


def build_pipeline(config: str):
    """tiny: the test model. mid: SD-shaped widths (768-wide text, 49408-row table), fewer layers."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    if config == "tiny":
        return tiny.build_tiny_pipeline(), 128
    tokenizer = tiny.build_tiny_tokenizer()
    text = tiny.build_tiny_text_encoder(49408, hidden_size=768)  # SD 1.x's table: 49408 x 768
    text.encoder.layers = text.encoder.layers[:2]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(64, 128, 256),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=[32, 64, 128, 128],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
    ).eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tiny.build_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe, 256


def peak_rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Reset the kernel's high-water mark (Linux); returns the current RSS in MiB."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class ReferenceLoop:
    """diffusers' textual inversion step: whole table trainable, VAE every step, rows copied back."""

    def __init__(self, pipe, resolution: int, images: list[torch.Tensor], dtype: torch.dtype, lr: float):
        from diffusers import DDPMScheduler

        self.pipe, self.res, self.images, self.dtype = pipe, resolution, images, dtype
        self.ids = add_placeholder_tokens(pipe.tokenizer, pipe.text_encoder, TOKEN, VECTORS, INIT)
        pipe.vae.requires_grad_(False)
        pipe.unet.requires_grad_(False)
        pipe.vae.to(dtype=dtype)
        pipe.unet.to(dtype=dtype)
        te = pipe.text_encoder  # stays fp32: its embedding table is the trained parameter
        te.encoder.requires_grad_(False)
        te.final_layer_norm.requires_grad_(False)
        te.embeddings.position_embedding.requires_grad_(False)
        self.table = te.get_input_embeddings()
        self.optimizer = torch.optim.AdamW(self.table.parameters(), lr=lr, weight_decay=1e-2)
        self.original = self.table.weight.data.clone()
        self.keep = torch.ones(self.table.weight.shape[0], dtype=torch.bool)
        self.keep[min(self.ids) : max(self.ids) + 1] = False
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.generator = torch.Generator().manual_seed(0)
        text = PROMPT.format(expand_token(TOKEN, TOKEN, VECTORS))
        tok = pipe.tokenizer
        self.input_ids = tok(
            [text], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    def step(self) -> float:
        g = self.generator
        image = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        _, _, h, w = image.shape
        top = int(torch.randint(h - self.res + 1, (1,), generator=g))
        left = int(torch.randint(w - self.res + 1, (1,), generator=g))
        pixels = image[..., top : top + self.res, left : left + self.res]
        if torch.rand(1, generator=g) < 0.5:
            pixels = pixels.flip(-1)
        vae, unet = self.pipe.vae, self.pipe.unet
        latents = vae.encode(pixels.to(self.dtype)).latent_dist.sample().detach() * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g).to(latents)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (1,), generator=g)
        noisy = self.scheduler.add_noise(latents, noise, t)
        hidden = self.pipe.text_encoder(self.input_ids)[0].to(self.dtype)
        pred = unet(noisy, t, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            self.table.weight[self.keep] = self.original[self.keep]
        return float(loss)

    def state_bytes(self) -> int:
        w = self.table.weight
        return w.numel() * 4 * 4  # parameter + grad + AdamW's two moments (fp32), plus the saved original


def make_images(folder: Path, n: int = 3) -> list[torch.Tensor]:
    import numpy as np
    from PIL import Image

    tensors = []
    for i in range(n):
        rng = np.random.default_rng(i)
        arr = rng.integers(0, 256, size=(320, 400, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"art{i}.png")
        tensors.append(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1)
    return tensors


def measure(config: str, steps: int, rounds: int, precision: str) -> dict:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "art"
        folder.mkdir()
        images = make_images(folder)
        ref_pipe, res = build_pipeline(config)
        ours_pipe, _ = build_pipeline(config)
        images = [F.interpolate(t, size=(int(res * 1.15 + 8), int(res * 1.44)), mode="bilinear") for t in images]
        ref = ReferenceLoop(ref_pipe, res, images, dtype, lr=5e-3)
        cfg = TrainConfig(
            images=str(folder),
            token=TOKEN,
            model=config,
            output=str(Path(tmp) / "run"),
            vectors=VECTORS,
            init_word=INIT,
            resolution=res,
            batch_size=1,
            grad_accum=1,
            lr=5e-3,
            steps=10**6,
            mixed_precision={"fp32": "no", "bf16": "bf16"}[precision],
            device="cpu",
        )
        loaded = LoadedModel(ours_pipe, config, model_family(ours_pipe), torch.device("cpu"), dtype)
        ours = StyleTokenTrainer(cfg, loaded)
        counter = {"ref": 0, "ours": 0}

        def ours_step() -> float:
            counter["ours"] += 1
            return ours.step(counter["ours"])

        for _ in range(2):  # warm-up
            ref.step()
            ours_step()
        times = {"reference": 0.0, "ours": 0.0}
        peaks = {"reference": 0.0, "ours": 0.0}
        for _ in range(rounds):
            for name, step_fn in (("reference", ref.step), ("ours", ours_step)):
                start_rss = reset_peak_rss()
                t0 = time.perf_counter()
                for _ in range(steps):
                    step_fn()
                times[name] += time.perf_counter() - t0
                peaks[name] = max(peaks[name], peak_rss_mib() - start_rss)
        vectors = ours.parts[0].vectors
        ours_state = vectors.numel() * 4 * 4  # parameter + grad + AdamW's two moments
        total = steps * rounds
        return {
            "config": config,
            "resolution": res,
            "ref_sps": total / times["reference"],
            "ours_sps": total / times["ours"],
            "ref_peak": peaks["reference"],
            "ours_peak": peaks["ours"],
            "ref_state_mib": ref.state_bytes() / 2**20,
            "ours_state_mib": ours_state / 2**20,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--steps", type=int, default=10, help="steps per round per loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [measure(c, args.steps, args.rounds, args.precision) for c in args.configs]
    print(
        f"\ntraining step, batch 1, {args.precision}, {args.steps * args.rounds} steps per loop, device cpu ({os.cpu_count()} cores)"
    )
    print(
        "| model | px | reference steps/s | ours steps/s | speed ratio | ref peak RSS rise MiB | ours peak RSS rise MiB | ref trainable state MiB | ours trainable state MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['resolution']} | {r['ref_sps']:.2f} | {r['ours_sps']:.2f} | {r['ours_sps'] / r['ref_sps']:.2f}x "
            f"| {r['ref_peak']:.0f} | {r['ours_peak']:.0f} | {r['ref_state_mib']:.2f} | {r['ours_state_mib']:.4f} |"
        )
    headline = rows[-1]
    print(f"ratio: {headline['ours_sps'] / headline['ref_sps']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
