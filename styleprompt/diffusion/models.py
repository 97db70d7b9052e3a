"""Loading a diffusion pipeline: hub id, local folder, single checkpoint file, or `tiny`.

Why here and nowhere else: every entry point (train, generate, compare, the app) needs the same
answers to "which device, which dtype, which model family" and the same one-line error when a
model is missing, instead of a page of hub tracebacks.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from styleprompt.diffusion import families
from styleprompt.diffusion.families import (
    DEFAULT_MODEL,
    MICRO_MODEL,
    MODEL_CHOICES_HELP,
    TINY_MODELS,
    family_of_width,
    is_sdxl,
    model_family,
    text_encoders,
)
from styleprompt.plumbing.errors import SettingError, UserError

# Re-exported: callers ask the loader for these, and families.py is where they are decided.
__all__ = [
    "DEFAULT_MODEL",
    "TINY_MODELS",
    "MODEL_CHOICES_HELP",
    "LoadedModel",
    "family_of_width",
    "is_sdxl",
    "load_pipeline",
    "model_family",
    "move_pipeline",
    "native_resolution",
    "pick_device",
    "pick_dtype",
    "pipeline_over",
    "runner_for",
    "text_copy",
    "text_encoders",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, or the best available one: cuda, then mps, then cpu."""
    if requested and requested != "auto":
        try:
            device = torch.device(requested)
        except (RuntimeError, ValueError):
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise SettingError("device", f"unknown {{setting}} {requested!r}: use cpu, cuda, cuda:N or mps")
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise SettingError(
                "device", f"{{setting}} {requested} was asked for but no CUDA GPU is available; use {{setting}} cpu"
            )
        if requested == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise SettingError(
                "device", "{setting} mps was asked for but Apple's MPS is not available; use {setting} cpu"
            )
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingError(
                "device",
                f"{{setting}} {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered from 0; use cuda:0",
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


def native_resolution(pipe: Any) -> int:
    """The image side the UNet was trained at (512 for SD 1.5, 1024 for SDXL)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


@dataclass
class LoadedModel:
    """A loaded pipeline and what every user of it needs to know about it.

    `tokens`: where each style token loaded into this model came from (files, their SHA-256,
    format, vectors, scale), written by `generate.load_embeddings` and recorded in every PNG.
    `loras`: the same for each LoRA loaded into it (file, SHA-256, format, rank, scale, and the
    adapter's name in the pipeline), written by `lora.load_loras`, read by `lora.loaded_loras`.
    Both belong to the model, not to a pipeline object (the app's views are new pipelines over the
    same parts): a copy of the model (`text_copy`) copies them.
    """

    pipe: Any
    name: str
    family: str
    device: torch.device
    dtype: torch.dtype
    tokens: dict[str, dict] = field(default_factory=dict)
    loras: list[dict] = field(default_factory=list)


def text_copy(loaded: LoadedModel) -> LoadedModel:
    """The same model with its own tokenizer(s), text encoder(s) and scheduler.

    What training and loading a token change lives in exactly those parts; the UNet and VAE
    (most of the memory) are shared, and nothing is cast. The caller makes sure no one changes
    `loaded` while it is copied (the app's `ModelCache` holds the model's lock).
    """
    import copy

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
    return LoadedModel(
        pipe=view,
        name=loaded.name,
        family=loaded.family,
        device=loaded.device,
        dtype=loaded.dtype,
        tokens=copy.deepcopy(loaded.tokens),
        loras=copy.deepcopy(loaded.loras),  # its adapters are in the shared UNet and the copied encoders
    )


def unet_copy(loaded: LoadedModel) -> LoadedModel:
    """A `text_copy` that owns its UNet too, for a LoRA: peft wraps the UNet's layers in place, so on
    a shared UNet the LoRA would paint into every other user's pictures while it is there. The
    cost is one more UNet in memory."""
    import copy

    view = text_copy(loaded)
    view.pipe = pipeline_over(view.pipe, view.pipe.__class__, unet=copy.deepcopy(loaded.pipe.unet))
    return view


# -- pipelines over a loaded model's components -------------------------------------------------------


def pipeline_over(pipe: Any, cls: Any, **replacements: Any) -> Any:
    """A `cls` pipeline over `pipe`'s components, with `replacements` swapped in.

    Built directly rather than with `from_pipe`, which casts every shared component to fp32
    unless told the dtype (and to one dtype when told): that would silently change the cached
    model the app shares, or an fp16 model's fp32 VAE.
    """
    import inspect

    components = dict(pipe.components, **replacements)
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        if name in components:
            kwargs[name] = components[name]
        elif name == "requires_safety_checker":
            kwargs[name] = components.get("safety_checker") is not None
        elif name == "add_watermarker":
            kwargs[name] = getattr(pipe, "watermark", None) is not None
        elif name in pipe.config and not name.startswith("_"):
            kwargs[name] = pipe.config[name]
        elif param.default is inspect.Parameter.empty:
            kwargs[name] = None
    runner = cls(**kwargs)
    runner.set_progress_bar_config(disable=True)
    return runner


def _pipeline_class(pipe: Any, img2img: bool) -> Any:
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    if is_sdxl(pipe):
        return StableDiffusionXLImg2ImgPipeline if img2img else StableDiffusionXLPipeline
    return StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline


def runner_for(pipe: Any, img2img: bool, scheduler: Any) -> Any:
    """A text->image or image->image pipeline over the loaded pipeline's own components (nothing
    copied, nothing cast), of the pipeline's family."""
    return pipeline_over(pipe, _pipeline_class(pipe, img2img), scheduler=scheduler)


# -- loading ------------------------------------------------------------------------------------------


def load_micro_folder(folder: Path | None = None) -> Any:
    """The micro model's StableDiffusionPipeline in float32, read offline from its folder
    (default: the one shipped as package data, `families.MICRO_MODEL_DIR`)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    folder = Path(folder) if folder is not None else families.MICRO_MODEL_DIR
    if not (folder / "model_index.json").is_file():
        raise UserError(
            f"the micro model is not built ({folder} has no model_index.json); "
            "run `python -m styleprompt.micro build --output build/micro --install`"
        )
    # StableDiffusionPipeline's type hint names AutoencoderKL; the micro model's wide-decoder
    # AsymmetricAutoencoderKL has the same encode/decode interface, and diffusers would otherwise warn
    # "Expected types for vae" on every load.
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return StableDiffusionPipeline.from_pretrained(
            str(folder),
            **pipeline_dtype(torch.float32),
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _not_available(model: str, reason: str) -> UserError:
    return UserError(
        f"model {model!r} is not available ({reason}). Online, it downloads into the Hugging Face cache "
        f"on first use (or beforehand: `hf download {model}`); else pass a local diffusers folder or a "
        ".safetensors checkpoint, or use --model micro (trained, offline) or tiny (random) for an offline test model"
    )


def first_sentence(text: str, limit: int = 240) -> str:
    """The first sentence of an error text, whole: a library's message cut at a fixed length ended
    mid-word ("... cached snapshot folder for the )")."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    match = re.search(r"[.!?](\s|$)", line)
    sentence = line[: match.start()] if match else line
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " ..."
    return sentence


def pipeline_dtype(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype argument of diffusers' loaders under the name this diffusers reads: `dtype` since
    it deprecated `torch_dtype` (which printed a FutureWarning on every load), else `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def missing_model_reason(model: str) -> str | None:
    """Why `model` cannot be loaded from this machine as it stands, or None when it is here
    (a test model, a local file or folder, a hub id in the Hugging Face cache). Reads no weights:
    for the app's page, which must say a model is missing rather than look healthy without one."""
    if model in TINY_MODELS:
        return None
    if model == MICRO_MODEL:
        built = (families.MICRO_MODEL_DIR / "model_index.json").is_file()
        return None if built else "the micro model is not built in this install"
    path = Path(model).expanduser()
    if path.exists():
        return None
    if not _HUB_ID.match(model):
        return f"{model} is neither a local file or folder nor a hub id"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return "it is not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
    return "it is not in the Hugging Face cache; it downloads (several GB) on first use if this machine is online"


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
            return cls.from_single_file(str(path), **pipeline_dtype(dtype), **kwargs)
        except (OSError, ValueError) as exc:
            raise _not_available(
                str(path), f"could not read it as a Stable Diffusion checkpoint: {first_sentence(str(exc))}"
            ) from None
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{path} is a folder but not a diffusers pipeline (no model_index.json)")
        return DiffusionPipeline.from_pretrained(str(path), **pipeline_dtype(dtype), **kwargs)
    if not _HUB_ID.match(model):
        raise UserError(
            f"unknown model {model!r}: give a hub id like {DEFAULT_MODEL}, a diffusers folder, a .safetensors "
            "file, micro or tiny"
        )
    try:  # The cache first: works offline, and never re-contacts the hub for a cached model.
        return DiffusionPipeline.from_pretrained(model, **pipeline_dtype(dtype), local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001 - any cache miss falls through to the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise _not_available(model, "not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return DiffusionPipeline.from_pretrained(model, **pipeline_dtype(dtype), **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; the user needs one line
        reason = first_sentence(str(exc)) or type(exc).__name__
        raise _not_available(model, f"not cached, and the hub could not provide it: {reason}") from None


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
    elif model == MICRO_MODEL:
        pipe = load_micro_folder()
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
