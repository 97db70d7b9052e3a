"""Training-step speed and memory: our trainer against the diffusers examples' loops, one process.

    python bench/train_step.py            # tiny + mid-size model, CPU, fp32
    python bench/train_step.py --steps 20 --configs mid --precision bf16

Two tables. The first is the token (textual inversion) step against a minimal loop with the math
of diffusers' examples/textual_inversion: the whole token-embedding table is the trainable
parameter (AdamW state for all of it), the VAE encodes the batch every step, and after every
step the non-placeholder rows are copied back from a saved original. Ours
(`StyleTokenTrainer.step`) trains only the placeholder rows and samples cached latents.

The second is pivotal tuning (`--adapter lora`, rank 4, all UNet attention projections; and with
`--lora-text-encoder`) beside our token step, as ratios against it, and against a reference
step written here the way diffusers'
examples/advanced_diffusion_training/train_dreambooth_lora_sdxl_advanced.py takes one (its
examples are not installed here; SD 1.x-shaped, as our configs): a peft `LoraConfig` (rank =
alpha, gaussian init) on to_k/to_q/to_v/to_out.0 put on with `unet.add_adapter`, the token the
script's `--train_text_encoder_ti` way (the whole fp32 token table trainable, and every step the
other rows put back and the new rows' spread pulled towards the table's, its
`retract_embeddings`), AdamW over the table and the LoRA weights (their own learning rates),
the gradients clipped to norm 1 (`--max_grad_norm`), the VAE every step (its default, no
`--cache_latents`), and the noise-prediction MSE. The script trains either text-encoder LoRAs
or the token; the `+ text-encoder LoRA` reference adds peft's q/k/v/out_proj LoRA to the token
step, to match ours.

Same model weights, batch, resolution and precision; rounds alternate between the loops so
machine drift hits all of them. Memory comes from one fresh child process per loop (a freed
loop's memory would otherwise be reused by the next and hide its peak): peak RSS (Linux VmHWM)
and its rise over the RSS after set-up, i.e. what the steps themselves touched. The last line is
`ratio: <ours token steps/s / reference token steps/s>` on the last config.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
LR, LORA_LR, LORA_RANK = 5e-3, 1e-4, 4  # set here, not from the trainer's defaults: the bench measures one recipe
# Our runs and their references: (name, LoRA: None / "unet" / "unet+te").
KINDS = (("token", None), ("pivotal", "unet"), ("pivotal + text-encoder LoRA", "unet+te"))


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
    """diffusers' textual inversion step: whole table trainable, VAE every step, rows copied back.

    With `lora` ("unet", "unet+te"): the pivotal step of diffusers' advanced dreambooth LoRA
    script (module docstring): its LoRA on the UNet (and text encoder), gradient clipping, and
    its `retract_embeddings` after the step.
    """

    def __init__(
        self,
        pipe,
        resolution: int,
        images: list[torch.Tensor],
        dtype: torch.dtype,
        lr: float,
        lora: str | None = None,
    ):
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
        self.lora = lora
        self.lora_params = self._add_lora(pipe, text_encoder=lora == "unet+te") if lora else []
        self.table.requires_grad_(True)  # peft's injection marks only its adapters trainable
        groups = [{"params": list(self.table.parameters()), "lr": lr}]
        if self.lora_params:
            groups.append({"params": self.lora_params, "lr": LORA_LR})
        self.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-2)
        self.original = self.table.weight.data.clone()
        self.std = float(self.original.std())
        self.keep = torch.ones(self.table.weight.shape[0], dtype=torch.bool)
        self.keep[min(self.ids) : max(self.ids) + 1] = False
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.generator = torch.Generator().manual_seed(0)
        text = PROMPT.format(expand_token(TOKEN, TOKEN, VECTORS))
        tok = pipe.tokenizer
        self.input_ids = tok(
            [text], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    @staticmethod
    def _add_lora(pipe, text_encoder: bool) -> list[torch.nn.Parameter]:
        """The advanced script's LoRA: rank = alpha, gaussian init, on the UNet's to_k/q/v/out.0
        through `add_adapter`; on the text encoder's q/k/v/out_proj through peft (transformers'
        `add_adapter`, which the script calls, wants a newer peft than this diffusers does)."""
        from peft import LoraConfig, inject_adapter_in_model

        def config(targets: list[str]) -> LoraConfig:
            return LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian", target_modules=targets)

        pipe.unet.add_adapter(config(["to_k", "to_q", "to_v", "to_out.0"]))
        params = [p for p in pipe.unet.parameters() if p.requires_grad]
        if text_encoder:
            inject_adapter_in_model(config(["q_proj", "k_proj", "v_proj", "out_proj"]), pipe.text_encoder)
            params += [p for n, p in pipe.text_encoder.named_parameters() if "lora_" in n]
        return params

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
        if self.lora:
            torch.nn.utils.clip_grad_norm_([self.table.weight, *self.lora_params], 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            self.table.weight[self.keep] = self.original[self.keep]
            if self.lora:  # retract_embeddings: the new rows' spread pulled towards the table's
                new = self.table.weight[~self.keep]
                self.table.weight[~self.keep] = new * (self.std / (float(new.std()) + 1e-8)) ** 0.1
        return float(loss.detach())

    def state_bytes(self) -> int:
        """Parameter + grad + AdamW's two moments (fp32) of every trained weight (the saved
        original of the table, one more copy, not counted)."""
        return (self.table.weight.numel() + sum(p.numel() for p in self.lora_params)) * 4 * 4


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


def set_up(config: str, precision: str, folder: Path, only: str | None = None) -> tuple[dict, dict, int]:
    """The loops of one config, each on its own copy of the model: ({name: step function},
    {name: trainable state bytes}, resolution). Names: "ref token", "ours token", "ref pivotal",
    ...; `only`: set up that loop alone (a memory child)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    art = folder / "art"
    art.mkdir()
    images = make_images(art)
    _, res = build_pipeline(config)
    images = [F.interpolate(t, size=(int(res * 1.15 + 8), int(res * 1.44)), mode="bilinear") for t in images]
    steps: dict = {}
    state: dict = {}
    for kind, lora in KINDS:
        ref_name, ours_name = f"ref {kind}", f"ours {kind}"
        if only in (None, ref_name):
            ref = ReferenceLoop(build_pipeline(config)[0], res, images, dtype, lr=LR, lora=lora)
            steps[ref_name], state[ref_name] = ref.step, ref.state_bytes()
        if only in (None, ours_name):
            ours = our_trainer(config, precision, art, folder / f"run-{len(steps)}", res, lora)
            counter = {"n": 0}

            def ours_step(trainer=ours, counter=counter) -> float:
                counter["n"] += 1
                return trainer.step(counter["n"])

            steps[ours_name] = ours_step
            state[ours_name] = sum(p.numel() for p in ours.trainable()) * 4 * 4  # param + grad + 2 moments
            if only is None:  # like for like: the same layers adapted at the same rank as the reference
                ours_lora = sum(p.numel() for p in ours.lora.parameters()) if ours.lora else 0
                if ours_lora != sum(p.numel() for p in ref.lora_params):
                    raise SystemExit(f"{kind}: our LoRA and the reference's adapt different layers")
    return steps, state, res


def our_trainer(config: str, precision: str, art: Path, output: Path, res: int, lora: str | None):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    pipe, _ = build_pipeline(config)
    cfg = TrainConfig(
        images=str(art),
        token=TOKEN,
        model=config,
        output=str(output),
        vectors=VECTORS,
        init_word=INIT,
        resolution=res,
        batch_size=1,
        grad_accum=1,
        lr=LR,
        steps=10**6,
        ti_fraction=1.0,  # the token and the LoRA both train in every step measured (whatever the defaults)
        lora_start=0.0,
        mixed_precision={"fp32": "no", "bf16": "bf16"}[precision],
        device="cpu",
        adapter="lora" if lora else "none",
        lora_rank=LORA_RANK,
        lora_alpha=float(LORA_RANK),
        lora_lr=LORA_LR,
        lora_text_encoder=lora == "unet+te",
        lora_blocks="all",
    )
    loaded = LoadedModel(pipe, config, model_family(pipe), torch.device("cpu"), dtype)
    return StyleTokenTrainer(cfg, loaded)


def measure(config: str, steps: int, rounds: int, precision: str) -> dict:
    """Steps/s of every loop, alternating in rounds in this process; memory from child processes."""
    with tempfile.TemporaryDirectory() as tmp:
        loops, state, res = set_up(config, precision, Path(tmp))
        for step_fn in loops.values():  # warm-up
            for _ in range(2):
                step_fn()
        times = dict.fromkeys(loops, 0.0)
        for _ in range(rounds):
            for name, step_fn in loops.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    step_fn()
                times[name] += time.perf_counter() - t0
    memory = {name: child_memory(config, name, precision, steps, torch.get_num_threads()) for name in loops}
    total = steps * rounds
    return {
        "config": config,
        "resolution": res,
        "sps": {name: total / t for name, t in times.items()},
        "memory": memory,
        "state_mib": {name: b / 2**20 for name, b in state.items()},
    }


def child_memory(config: str, name: str, precision: str, steps: int, threads: int) -> dict:
    """Peak RSS of a fresh process that sets up only loop `name` and runs 2 + `steps` steps."""
    command = [sys.executable, __file__, "--memory-of", config, name, "--precision", precision]
    command += ["--steps", str(steps), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_of(config: str, name: str, precision: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        loops, _, _ = set_up(config, precision, Path(tmp), only=name)
        step_fn = loops[name]
        after_setup = reset_peak_rss()
        for _ in range(2 + steps):
            step_fn()
        return {"peak_mib": peak_rss_mib(), "rise_mib": peak_rss_mib() - after_setup}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--steps", type=int, default=10, help="steps per round per loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--memory-of", nargs=2, metavar=("CONFIG", "LOOP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_of:
        print(json.dumps(memory_of(*args.memory_of, args.precision, args.steps)))
        return 0
    rows = [measure(c, args.steps, args.rounds, args.precision) for c in args.configs]
    print(
        f"\ntraining step, batch 1, {args.precision}, {args.steps * args.rounds} steps per loop, device cpu "
        f"({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    )
    print(
        "| model | px | reference steps/s | ours steps/s | speed ratio | ref peak RSS rise MiB | ours peak RSS rise MiB | ref trainable state MiB | ours trainable state MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sps, mem, st = r["sps"], r["memory"], r["state_mib"]
        ref, ours = "ref token", "ours token"
        print(
            f"| {r['config']} | {r['resolution']} | {sps[ref]:.2f} | {sps[ours]:.2f} | {sps[ours] / sps[ref]:.2f}x "
            f"| {mem[ref]['rise_mib']:.0f} | {mem[ours]['rise_mib']:.0f} | {st[ref]:.2f} | {st[ours]:.4f} |"
        )
    print(
        f"\npivotal tuning (rank {LORA_RANK}) beside the token step; vs token = this row / the token row (ours, same process)"
    )
    print(
        "| model | px | run | ours steps/s | speed vs token | ours / reference speed | reference steps/s "
        "| peak RSS MiB | vs token | step RSS rise MiB | vs token | trainable state MiB (ours / reference) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sps, mem, st = r["sps"], r["memory"], r["state_mib"]
        token = "ours token"
        for kind, _ in KINDS:
            ours, ref = f"ours {kind}", f"ref {kind}"
            rise_ratio = mem[ours]["rise_mib"] / mem[token]["rise_mib"] if mem[token]["rise_mib"] > 0 else float("nan")
            print(
                f"| {r['config']} | {r['resolution']} | {kind} | {sps[ours]:.2f} | {sps[ours] / sps[token]:.2f}x "
                f"| {sps[ours] / sps[ref]:.2f}x | {sps[ref]:.2f} "
                f"| {mem[ours]['peak_mib']:.0f} | {mem[ours]['peak_mib'] / mem[token]['peak_mib']:.2f}x "
                f"| {mem[ours]['rise_mib']:.0f} | {rise_ratio:.2f}x | {st[ours]:.3f} / {st[ref]:.1f} |"
            )
    headline = rows[-1]["sps"]
    print(f"ratio: {headline['ours token'] / headline['ref token']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
