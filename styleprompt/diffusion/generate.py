"""Pictures from style tokens: text->image, and image->image from a content photo (InST's recipe).

Why these choices:
- Tokens go into the loaded pipeline's own tokenizer(s) and text encoder(s), whatever file
  format they came in (`formats.read_embedding`), so diffusers' prompt handling (multi-vector
  expansion, SDXL's two encoders) applies unchanged.
- Image->image builds `StableDiffusion(XL)Img2ImgPipeline` from the loaded pipeline's components:
  the same UNet, VAE and text encoders in memory, never a second model load.
- Each image has its own CPU generator seeded `seed + i` and a fresh scheduler, so any one image
  is reproducible alone, on any device, from the parameters written into its PNG.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from classic import limits
from styleprompt.diffusion.families import describe_family, text_encoders
from styleprompt.diffusion.formats import read_embedding
from styleprompt.diffusion.lora import load_loras, loaded_loras
from styleprompt.diffusion.models import native_resolution, runner_for
from styleprompt.diffusion.tokens import embedding_width, file_sha256, install_token
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import open_regular, parse_json, shown_path
from styleprompt.plumbing.images import load_image, resize_long_side, save_image

log = logging.getLogger(__name__)

# Scheduler names -> (diffusers class name, options). The first is the default: DPM-Solver++ 2M
# gives good pictures in 20-30 steps, where DDIM and Euler need more.
_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
}
SCHEDULERS: tuple[str, ...] = tuple(_SCHEDULERS)
# Text chunk of a generated PNG holding every parameter as JSON (the other chunks are for people).
PARAMS_KEY = "styleprompt"
# How to rename a token that clashes with one already loaded (or with a word of the model).
_RENAME = "`styleprompt convert FILE --token <other-name> --to ... --output ...`"


@dataclass
class GenerateConfig:
    """What to paint. `{token}` in the prompt becomes the loaded tokens, `{class}` each class.

    `style_scale` is applied when tokens are loaded (`load_embeddings`); the PNG records the
    scale each token was really loaded with.
    """

    prompt: str
    negative_prompt: str = ""
    classes: list[str] = field(default_factory=list)
    steps: int = 25
    guidance: float = 7.5
    scheduler: str = SCHEDULERS[0]
    seed: int | None = None  # None: drawn at random, and recorded
    count: int = 1
    width: int | None = None
    height: int | None = None
    image: Any = None  # content image: a path or a PIL image; set -> image->image
    strength: float = 0.6
    style_scale: float = 1.0


@dataclass
class Generated:
    image: Image.Image
    params: dict
    seed: int


# -- loading tokens -----------------------------------------------------------------------------------


def _check_fits(emb, widths: tuple[int, ...], path: str, model: str) -> None:
    if emb.widths != widths:
        raise UserError(
            f"{path} is an embedding for {describe_family(emb.widths)}, but the model {model} is "
            f"{describe_family(widths)}; use an embedding trained for this model family"
        )


def load_embeddings(loaded, paths: Sequence[str], style_scale: float = 1.0) -> list[str]:
    """Load each file (any supported format) into the pipeline; returns the tokens, in order.

    Loading the same file (same vectors, same scale) again is a no-op. A file whose widths do
    not match the model's text encoders is refused with one line naming both families.
    """
    limits.check_between("style_scale", style_scale)
    pipe = loaded.pipe
    pairs = text_encoders(pipe)
    widths = tuple(embedding_width(te) for _, te in pairs)
    tokens: list[str] = []
    for path in paths:
        emb = read_embedding(path)
        _check_fits(emb, widths, str(path), loaded.name)
        room = int(pipe.tokenizer.model_max_length) - 2  # a prompt's tokens between its start and end
        if emb.num_vectors > room:
            raise UserError(
                f"{path} holds {emb.num_vectors} vector{'s' if emb.num_vectors != 1 else ''} for {emb.token}, more than the {room} tokens a prompt "
                f"of this model holds; it cannot be used in a prompt whole"
            )
        scaled = emb.scaled(float(style_scale))
        for (tokenizer, text_encoder), vectors in zip(pairs, scaled.parts()):
            install_token(tokenizer, text_encoder, emb.token, vectors, _RENAME)
        loaded.tokens[emb.token] = {
            "token": emb.token,
            "files": [str(Path(f).resolve()) for f in emb.files],
            "sha256": [file_sha256(f, length=64) for f in emb.files],
            "format": emb.format,
            "vectors": emb.num_vectors,
            "scale": float(style_scale),
        }
        if emb.token not in tokens:
            tokens.append(emb.token)
    return tokens


# -- prompts and pipelines -------------------------------------------------------------------------------


def expand_prompts(template: str, tokens: Sequence[str], classes: Sequence[str]) -> list[tuple[str, str]]:
    """(class, prompt) for each class; `{token}` -> the tokens, `{class}` -> the class."""
    if "{token}" in template and not tokens:
        raise UserError("the prompt has {token} but no style token was loaded; pass --embedding FILE")
    text = template.replace("{token}", " ".join(tokens))
    wanted = [c.strip() for c in classes if c and c.strip()]
    if "{class}" in text:
        if not wanted:
            raise UserError("the prompt has {class}; give one or more --class values (a lighthouse, a city, ...)")
        return [(c, text.replace("{class}", c)) for c in wanted]
    if wanted:
        raise SettingError(
            "classes", '{setting} needs a {class} slot in the prompt, e.g. "a {token} style of a {class}"'
        )
    return [("", text)]


def make_scheduler(name: str, config) -> Any:
    import diffusers

    if name not in _SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    class_name, options = _SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    if class_name == "LMSDiscreteScheduler":
        try:
            import scipy  # noqa: F401 - LMS integrates its coefficients with scipy
        except ImportError:
            raise UserError(
                "the lms scheduler needs scipy (pip install scipy); or choose dpm++, euler or ddim"
            ) from None
    return cls.from_config(config, **options)


def _content_image(value: Any, cfg: GenerateConfig, pipe) -> tuple[Image.Image, dict]:
    """The content image at the size it is painted at, and what the PNG records about it."""
    if isinstance(value, Image.Image):
        img = value.convert("RGB")
        import hashlib

        info = {
            "content": f"<image {img.width}x{img.height}>",
            "content_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
        }
    else:
        path = Path(value)
        img = load_image(path)
        info = {"content": str(path.resolve()), "content_sha256": file_sha256(path, length=64)}
    multiple = int(pipe.vae_scale_factor)
    if cfg.width and cfg.height:
        img = img.resize((cfg.width, cfg.height), Image.Resampling.LANCZOS)
    else:
        img = resize_long_side(img, native_resolution(pipe), multiple=multiple)
    return img, info


def check_config(cfg: GenerateConfig) -> None:
    """Every setting in range, before a model loads (the command calls it first; generate again)."""
    if not (cfg.prompt or "").strip():
        raise UserError('the prompt is empty; write one, such as "a {token} style of a {class}"')
    limits.check_between("steps", cfg.steps)
    limits.check_bound("count", cfg.count)
    limits.check_between("guidance", cfg.guidance)
    limits.check_between("strength", cfg.strength)
    limits.check_generate_size(cfg.width, cfg.height)
    limits.check_between("style_scale", cfg.style_scale)
    if cfg.scheduler not in _SCHEDULERS:
        raise UserError(f"unknown scheduler {cfg.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    if cfg.seed is not None:  # image i uses seed + i
        limits.check_range("seed", cfg.seed, 0, limits.MAX_SEED - cfg.count + 1, "image i uses seed + i, 64 bits")


@torch.no_grad()
def _vae_round_trip(pipe, content: Image.Image) -> Image.Image:
    """Strength 0: no denoising at all; the content only passes through the VAE (its mode)."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(content)
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        import copy

        vae = copy.deepcopy(vae).float()  # SDXL's VAE overflows in fp16; never cast the shared one
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    decoded = vae.decode(latents).sample
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]


def _sources(loaded, tokens: Sequence[str]) -> list[dict]:
    known = getattr(loaded, "tokens", None) or {}  # a LoadedModel's provenance (any object with .pipe works)
    vocab = loaded.pipe.tokenizer.get_vocab()
    out = []
    for token in tokens:
        if token not in vocab:
            raise UserError(f"style token {token} is not loaded in this model; pass its file with --embedding")
        out.append(dict(known.get(token, {"token": token, "files": [], "sha256": [], "scale": None})))
    return out


def _a1111_parameters(p: dict) -> str:
    """The `parameters` text chunk in A1111's layout, so its PNG Info tab reads our images."""
    lines = [p["prompt"]]
    if p["negative_prompt"]:
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    fields = [
        f"Steps: {p['steps']}",
        f"Sampler: {p['scheduler']}",
        f"CFG scale: {p['guidance']}",
        f"Seed: {p['seed']}",
        f"Size: {p['width']}x{p['height']}",
        f"Model: {p['model']}",
    ]
    if p["mode"] == "img2img":
        fields.append(f"Denoising strength: {p['strength']}")
    return "\n".join(lines + [", ".join(fields)])


def generate(
    loaded, cfg: GenerateConfig, embeddings: Sequence[str] = (), *, show_progress: bool = True
) -> list[Generated]:
    """Paint `count` images per class with the loaded tokens; image->image when cfg.image is set."""
    from tqdm.auto import tqdm

    check_config(cfg)
    pipe = loaded.pipe
    tokens = list(embeddings)
    sources = _sources(loaded, tokens)
    loras = loaded_loras(loaded)  # each LoRA loaded with --lora: file, sha256, format, rank, scale
    prompts = expand_prompts(cfg.prompt, tokens, cfg.classes)
    negative = cfg.negative_prompt.replace("{token}", " ".join(tokens)).strip()
    for token in tokens:
        if not any(token in p for _, p in prompts):
            log.warning("style token %s is loaded but not in the prompt; it will not affect the image", token)
    base_seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    content: Image.Image | None = None
    content_info: dict[str, str] = {}
    if cfg.image is not None:
        content, content_info = _content_image(cfg.image, cfg, pipe)
    denoise = cfg.steps if content is None else min(int(cfg.steps * cfg.strength), cfg.steps)
    if content is not None and cfg.strength >= 1.0:
        denoise = cfg.steps  # strength 1 ignores the content: plain text->image at its size
    bar = tqdm(total=len(prompts) * cfg.count * denoise, desc="generating", unit="step", disable=not show_progress)

    def tick(runner, step, timestep, kwargs):
        bar.update(1)
        return {}

    results: list[Generated] = []
    try:
        for cls, prompt in prompts:
            for i in range(cfg.count):
                seed = base_seed + i
                image = _paint(pipe, cfg, prompt, negative, seed, content, denoise, tick)
                params = {
                    "prompt": prompt,
                    "negative_prompt": negative,
                    "prompt_template": cfg.prompt,
                    "class": cls,
                    "seed": seed,
                    "steps": cfg.steps,
                    "guidance": cfg.guidance,
                    "scheduler": cfg.scheduler,
                    "width": image.width,
                    "height": image.height,
                    "model": loaded.name,
                    "family": loaded.family,
                    "dtype": str(loaded.dtype).replace("torch.", ""),
                    "device": str(loaded.device),
                    "mode": "txt2img" if content is None else "img2img",
                    "embeddings": sources,
                }
                if loras:
                    params["loras"] = loras
                if content is not None:
                    params.update(strength=cfg.strength, denoising_steps=denoise, **content_info)
                results.append(Generated(image=image, params=params, seed=seed))
    finally:
        bar.close()
    return results


def _paint(
    pipe, cfg: GenerateConfig, prompt: str, negative: str, seed: int, content, denoise: int, tick
) -> Image.Image:
    generator = torch.Generator("cpu").manual_seed(seed)
    common = dict(
        prompt=prompt,
        negative_prompt=negative or None,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        generator=generator,
        callback_on_step_end=tick,
    )
    scheduler = make_scheduler(cfg.scheduler, pipe.scheduler.config)
    if content is None or cfg.strength >= 1.0:
        width = content.width if content is not None else cfg.width
        height = content.height if content is not None else cfg.height
        runner = runner_for(pipe, False, scheduler)
        return runner(width=width, height=height, **common).images[0]
    if denoise < 1:
        return _vae_round_trip(pipe, content)
    runner = runner_for(pipe, True, scheduler)
    return runner(image=content, strength=cfg.strength, **common).images[0]


# -- saving and reproducing ----------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40]


def png_text(params: dict) -> dict[str, str]:
    """The PNG text chunks: every parameter as JSON, readable ones, and A1111's `parameters`."""
    text = {PARAMS_KEY: json.dumps(params, sort_keys=True), "parameters": _a1111_parameters(params)}
    for key in ("prompt", "negative_prompt", "seed", "steps", "guidance", "scheduler", "model", "mode", "strength"):
        if key in params:
            text[key] = str(params[key])
    text["embeddings"] = "; ".join(
        f"{s['token']} {' + '.join(s['files']) or '(not from a file)'} sha256 {' + '.join(s['sha256']) or '-'} scale {s['scale']}"
        for s in params.get("embeddings", [])
    )
    return text


def save_generated(items: Sequence[Generated], out_dir: str | Path) -> list[Path]:
    """Write each image as `NNN-<class>-seed<S>.png` (never over an older file), with its parameters.

    The folder was checked before painting (`check_output_folder`); should it still fail (a disk
    that filled, a folder removed meanwhile), the painted images go to a new folder in the
    system's temporary folder instead, and the one-line error says where: nothing painted is lost.
    """
    out = Path(out_dir)
    try:
        return _write_generated(items, out)
    except (UserError, OSError) as exc:
        import tempfile

        rescue = Path(tempfile.mkdtemp(prefix="styleprompt-generate-"))
        _write_generated(items, rescue)
        reason = str(exc) if isinstance(exc, UserError) else (exc.strerror or str(exc))
        raise UserError(
            f"could not write into {out} ({reason}); the {len(items)} painted image(s) are in {rescue}"
        ) from None


def _write_generated(items: Sequence[Generated], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in out.glob("*.png") if (m := re.match(r"^(\d+)-", p.name))]
    index = max(taken, default=-1) + 1
    paths = []
    for item in items:
        cls = _slug(str(item.params.get("class", "")))
        name = f"{index:03d}-{cls + '-' if cls else ''}seed{item.seed}.png"
        paths.append(save_image(item.image, out / name, text=png_text(item.params)))
        index += 1
    return paths


def read_png_params(path: str | Path) -> dict:
    """The parameters a generated PNG carries (its `styleprompt` text chunk)."""
    p = Path(path)
    shown = shown_path(p)
    # Opened once, never blocking (a FIFO is refused at once instead of waiting for a writer); Pillow
    # reads that handle, so what was checked is what is read.
    with open_regular(p, "image") as handle:
        try:
            with Image.open(handle) as img:
                raw = (getattr(img, "text", None) or img.info).get(PARAMS_KEY)
        except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise anything on malformed files
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot read {shown} as an image ({first})") from None
    if not raw:
        raise UserError(f"{shown} carries no {PARAMS_KEY} parameters; it was not made by styleprompt generate")
    if not isinstance(raw, str):
        raise UserError(f"{shown}: the {PARAMS_KEY} text chunk is damaged (not text)")
    try:
        params = parse_json(raw, f"the {PARAMS_KEY} text chunk of {shown}", "parameters chunk")
    except UserError as exc:
        raise UserError(f"{exc}; it was not written by styleprompt generate, or was edited") from None
    return check_png_params(params, p)


# The parameters chunk's schema: key -> (accepted types, required). Read once, here, at the boundary.
_NUMBER = (int, float)
_PARAMS_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "model": ((str,), True),
    "prompt_template": ((str,), True),
    "steps": ((int,), True),
    "guidance": (_NUMBER, True),
    "scheduler": ((str,), True),
    "seed": ((int,), True),
    "width": ((int,), True),
    "height": ((int,), True),
    "negative_prompt": ((str,), False),
    "class": ((str,), False),
    "mode": ((str,), False),
    "content": ((str,), False),
    "content_sha256": ((str,), False),
    "strength": (_NUMBER, False),
    "dtype": ((str,), False),
    "embeddings": ((list,), False),
    "loras": ((list,), False),
}
_LORA_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "file": ((str,), True),
    "sha256": ((str,), True),
    "scale": (_NUMBER, True),
}
_SOURCE_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "token": ((str,), True),
    "files": ((list,), False),
    "sha256": ((list,), False),
    "scale": (_NUMBER + (type(None),), False),
}


def _check_fields(doc: Any, schema: dict, where: str) -> None:
    if not isinstance(doc, dict):
        raise UserError(f"{where} is {type(doc).__name__}, not an object; it was not written by styleprompt generate")
    for key, (types, required) in schema.items():
        if key not in doc:
            if required:
                raise UserError(f"{where} lacks '{key}'; it was not written by styleprompt generate, or was edited")
            continue
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(
                f"{where}: '{key}' is {type(value).__name__} {str(value)[:40]!r}, not "
                f"{' or '.join(t.__name__ for t in types)}; the parameters were edited"
            )


def check_png_params(params: Any, path: Path) -> dict:
    """Validate a generated PNG's parameters (any PNG can carry any chunk: they are data)."""
    where = f"the {PARAMS_KEY} parameters of {path}"
    _check_fields(params, _PARAMS_SCHEMA, where)
    for source in params.get("embeddings", []):
        _check_fields(source, _SOURCE_SCHEMA, f"a token entry in {where}")
        for key in ("files", "sha256"):
            if not all(isinstance(v, str) for v in source.get(key, [])):
                raise UserError(
                    f"{where}: a token's '{key}' holds something other than text; the parameters were edited"
                )
    for record in params.get("loras", []):
        _check_fields(record, _LORA_SCHEMA, f"a LoRA entry in {where}")
    if params.get("mode", "txt2img") not in ("txt2img", "img2img"):
        raise UserError(f"{where}: mode {params['mode'][:40]!r} is neither txt2img nor img2img")
    return params


def reproduce(path: str | Path, loaded=None, *, device: str | None = None, show_progress: bool = True) -> Generated:
    """Paint the image a generated PNG describes again, from its recorded parameters.

    The token files and the content photo must still be the same bytes (their SHA-256 is checked).
    """
    from styleprompt.diffusion.models import load_pipeline

    params = read_png_params(path)
    if loaded is None:
        precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(params.get("dtype", ""), None)
        if precision == "fp16" and (device == "cpu" or not torch.cuda.is_available()):
            precision = None  # made on a GPU, repainted on a CPU: close, not bit-identical
        loaded = load_pipeline(params["model"], device=device, precision=precision)
    tokens: list[str] = []
    for source in params.get("embeddings", []):
        files = source.get("files") or []
        if not files:
            raise UserError(f"{path}: token {source['token']} was not loaded from a file; it cannot be reloaded")
        for file, digest in zip(files, source.get("sha256", [])):
            if not Path(file).is_file():
                raise UserError(f"{path} was made with {file}, which no longer exists")
            if file_sha256(file, length=64) != digest:
                raise UserError(
                    f"{file} changed since {path} was made (its SHA-256 differs); the image cannot be reproduced"
                )
        tokens += load_embeddings(loaded, [files[0]], source.get("scale") or 1.0)
    for record in params.get("loras", []):
        if not Path(record["file"]).is_file():
            raise UserError(f"{path} was made with the LoRA {record['file']}, which no longer exists")
        if file_sha256(record["file"], length=64) != record["sha256"]:
            raise UserError(
                f"{record['file']} changed since {path} was made (its SHA-256 differs); the image cannot be reproduced"
            )
    load_loras(loaded, [(r["file"], float(r["scale"])) for r in params.get("loras", [])])
    image = None
    if params.get("mode") == "img2img":
        content = params.get("content", "")
        if not Path(content).is_file() or file_sha256(content, length=64) != params.get("content_sha256"):
            raise UserError(f"{path} was made from the content image {content}, which is missing or changed")
        image = content
    cfg = GenerateConfig(
        prompt=params["prompt_template"],
        negative_prompt=params.get("negative_prompt", ""),
        classes=[params["class"]] if params.get("class") else [],
        steps=int(params["steps"]),
        guidance=float(params["guidance"]),
        scheduler=params["scheduler"],
        seed=int(params["seed"]),
        count=1,
        width=int(params["width"]),
        height=int(params["height"]),
        image=image,
        strength=float(params.get("strength", 0.6)),
    )
    return generate(loaded, cfg, tokens, show_progress=show_progress)[0]
