"""Loading a diffusion pipeline: hub id, local folder, single checkpoint file, or `tiny`.

Why here and nowhere else: every entry point (train, generate, compare, the app) needs the same
answers to "which device, which dtype, which model family" and the same one-line error when a
model is missing, instead of a page of hub tracebacks.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from styleprompt.plumbing.errors import UserError

# The standard Stable Diffusion 1.5 checkpoint (its maintained mirror on the hub).
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_MODELS = ("tiny", "tiny-sdxl")

# Text-encoder width -> family. SDXL is recognised by its second text encoder.
_FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

log = logging.getLogger(__name__)


# Training settings whose best value depends on the model; TrainConfig fills the ones a user left unset.
TRAINING_DEFAULTS: dict[str, float] = {"vectors": 4, "norm_cap": 0.0}
MODEL_TRAINING_DEFAULTS: dict[str, dict[str, float]] = {
    # The micro model's text encoder has 2 layers and 32 positions: four learned vectors outweighed the
    # prompt's one class word (starry token, 6 unseen classes x 2 seeds: class accuracy 0.33 with 4,
    # 0.75 with 1), and an uncapped vector grew to twice the length of any word while its direction
    # settled near the word "starry" (cosine 0.70); capped, the token's style retrieval@1 rose from 0.50
    # to 0.75 (docs/micro.md).
    "micro": {"vectors": 1, "norm_cap": 1.0},
}


def training_default(model: str, name: str) -> float:
    """The value of training setting `name` for `model` when the user gives none."""
    return MODEL_TRAINING_DEFAULTS.get(model, {}).get(name, TRAINING_DEFAULTS[name])


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, or the best available one: cuda, then mps, then cpu."""
    if requested and requested != "auto":
        try:
            device = torch.device(requested)
        except (RuntimeError, ValueError):
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise UserError(f"unknown --device {requested!r}: use cpu, cuda, cuda:N or mps")
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {requested} was asked for but no CUDA GPU is available; use --device cpu")
        if requested == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError("--device mps was asked for but Apple's MPS is not available; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered from 0; use cuda:0"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, precision: str | None = None) -> torch.dtype:
    """fp16 on GPUs by default (what SD checkpoints ship), fp32 on CPU (fp16 matmuls crawl there)."""
    names = {"fp32": torch.float32, "no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision:
        if precision not in names:
            raise UserError(f"unknown precision {precision!r}; use one of fp32, fp16, bf16")
        if precision == "fp16" and device.type == "cpu":
            raise UserError("fp16 needs a GPU; on CPU use bf16 or fp32")
        return names[precision]
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def move_pipeline(pipe: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move to `device`; cast only when the dtype really changes (a no-op cast makes diffusers warn)."""
    pipe = pipe.to(device)
    if pipe.unet.dtype != dtype:
        pipe = pipe.to(dtype=dtype)
    return pipe


def is_sdxl(pipe: Any) -> bool:
    """SDXL is the family with a second text encoder (the one place that rule lives)."""
    return getattr(pipe, "text_encoder_2", None) is not None


def text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs: one for SD 1.x/2.x, two for SDXL (each learns its own rows)."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if is_sdxl(pipe):
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def native_resolution(pipe: Any) -> int:
    """The image side the UNet was trained at (512 for SD 1.5, 1024 for SDXL)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def family_of_width(width: int) -> str:
    """A one-encoder family from its text encoder's width: "sd1", "sd2" or "custom-<width>"."""
    return _FAMILY_BY_WIDTH.get(width, f"custom-{width}")


def model_family(pipe: Any) -> str:
    """ "sd1", "sd2", "sdxl", or "custom-<width>" (the tiny models) from the text encoders."""
    if is_sdxl(pipe):
        return "sdxl"
    return family_of_width(int(pipe.text_encoder.config.hidden_size))


@dataclass
class LoadedModel:
    pipe: Any
    name: str
    family: str
    device: torch.device
    dtype: torch.dtype


def text_copy(loaded: LoadedModel) -> LoadedModel:
    """The same model with its own tokenizer(s), text encoder(s) and scheduler.

    What training and loading a token change lives in exactly those parts; the UNet and VAE
    (most of the memory) are shared, and nothing is cast. The caller makes sure no one changes
    `loaded` while it is copied (the app's `ModelCache` holds the model's lock).
    """
    import copy

    from styleprompt.diffusion.generate import pipeline_over

    pipe = loaded.pipe
    parts = {
        "tokenizer": copy.deepcopy(pipe.tokenizer),
        "text_encoder": copy.deepcopy(pipe.text_encoder),
        "scheduler": pipe.scheduler.__class__.from_config(pipe.scheduler.config),
    }
    if is_sdxl(pipe):
        parts["tokenizer_2"] = copy.deepcopy(pipe.tokenizer_2)
        parts["text_encoder_2"] = copy.deepcopy(pipe.text_encoder_2)
    view = pipeline_over(pipe, pipe.__class__, **parts)
    return LoadedModel(pipe=view, name=loaded.name, family=loaded.family, device=loaded.device, dtype=loaded.dtype)


def _not_available(model: str, reason: str) -> UserError:
    return UserError(
        f"model {model!r} is not available ({reason}); when online it downloads into the Hugging Face cache "
        f"(or run `huggingface-cli download {model}`), else pass a local diffusers folder or a .safetensors "
        "checkpoint, or use --model micro (trained, offline) or tiny (random) for an offline test model"
    )


def _single_file_is_sdxl(path: Path) -> bool:
    """SDXL checkpoints carry a second text encoder under conditioner.embedders.1."""
    if path.suffix != ".safetensors":
        return "xl" in path.name.lower()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return any(k.startswith("conditioner.embedders.1.") for k in handle.keys())


def _load_from_disk_or_hub(model: str, dtype: torch.dtype, **kwargs: Any):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise UserError(f"{path} is not a .safetensors or .ckpt checkpoint (nor a diffusers folder)")
        cls = StableDiffusionXLPipeline if _single_file_is_sdxl(path) else StableDiffusionPipeline
        try:
            return cls.from_single_file(str(path), torch_dtype=dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise _not_available(
                str(path), f"could not read it as a Stable Diffusion checkpoint: {str(exc).splitlines()[0]}"
            ) from None
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{path} is a folder but not a diffusers pipeline (no model_index.json)")
        return DiffusionPipeline.from_pretrained(str(path), torch_dtype=dtype, **kwargs)
    if not _HUB_ID.match(model):
        raise UserError(
            f"unknown model {model!r}: give a hub id like {DEFAULT_MODEL}, a diffusers folder, a .safetensors "
            "file, micro or tiny"
        )
    try:  # The cache first: works offline, and never re-contacts the hub for a cached model.
        return DiffusionPipeline.from_pretrained(model, torch_dtype=dtype, local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001 - any cache miss falls through to the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise _not_available(model, "not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return DiffusionPipeline.from_pretrained(model, torch_dtype=dtype, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_available(model, f"not cached and the hub could not provide it: {reason[:160]}") from None


def load_pipeline(
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    precision: str | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load a text-to-image pipeline onto the chosen device in the chosen dtype.

    `model` is a hub id (served from the Hugging Face cache when present), a local diffusers
    folder, a single .safetensors/.ckpt file, `micro` (the project's trained 64-px model of its
    procedural world, shipped in the package), `tiny` (SD 1.x layout, random) or `tiny-sdxl`.
    """
    dev = pick_device(device)
    dtype = pick_dtype(dev, precision)
    if model == "tiny":
        from styleprompt.diffusion.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(**kwargs)
    elif model == "micro":
        from styleprompt.micro import load_micro_pipeline

        pipe = load_micro_pipeline()
    elif model == "tiny-sdxl":
        from styleprompt.diffusion import tiny

        if not hasattr(tiny, "build_tiny_sdxl_pipeline"):
            raise UserError("the tiny SDXL model is not available in this version")
        pipe = tiny.build_tiny_sdxl_pipeline(**kwargs)
    else:
        if "xl" not in model.lower():  # a style tool: no NSFW filter blacking out paintings (as A1111)
            kwargs.setdefault("safety_checker", None)
        pipe = _load_from_disk_or_hub(model, dtype, **kwargs)
    if not hasattr(pipe, "text_encoder") or not hasattr(pipe, "unet"):
        raise UserError(f"{model} is a {type(pipe).__name__}, not a Stable Diffusion text-to-image pipeline")
    pipe = move_pipeline(pipe, dev, dtype)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe=pipe, name=model, family=model_family(pipe), device=dev, dtype=dtype)
