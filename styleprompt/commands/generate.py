"""`styleprompt generate`: style tokens + a prompt (and optionally a content photo) -> PNGs with their parameters."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from styleprompt.diffusion.models import DEFAULT_MODEL, MODEL_CHOICES_HELP

if TYPE_CHECKING:
    from styleprompt.diffusion.generate import GenerateConfig

DEFAULT_PROMPT = "a {token} style of a {class}"


def add_parser(subparsers) -> None:
    from styleprompt.diffusion.generate import SCHEDULERS, GenerateConfig

    d = GenerateConfig(prompt="")
    parser = subparsers.add_parser(
        "generate",
        help="paint with one or more style tokens (text to image, or image to image from a content photo)",
        description="Paint with learned style tokens. {token} in the prompt becomes the loaded tokens and {class} each "
        "--class value (one image set per class). Every PNG carries its parameters; --from-png paints one again.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"{MODEL_CHOICES_HELP}, or tiny-sdxl (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--embedding",
        action="append",
        default=[],
        metavar="FILE",
        help="a style token file in any supported format (repeat for several tokens)",
    )
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:SCALE]",
        help="a LoRA (diffusers or kohya format; a run's pytorch_lora_weights.safetensors) and its weight "
        "(default 1; repeat for several)",
    )
    parser.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help="the prompt; {token} and {class} are filled in (default: %(default)r)"
    )
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="C",
        help="a subject for {class} (repeat: one image set per class)",
    )
    parser.add_argument("--negative-prompt", default=d.negative_prompt, help="what to keep out of the picture")
    parser.add_argument("--steps", type=int, default=d.steps, help="sampling steps (default: %(default)s)")
    parser.add_argument(
        "--guidance", type=float, default=d.guidance, help="classifier-free guidance scale (default: %(default)s)"
    )
    parser.add_argument("--scheduler", default=d.scheduler, choices=SCHEDULERS, help="sampler (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the first image; image i uses seed+i (default: random)"
    )
    parser.add_argument("--count", type=int, default=d.count, help="images per class (default: %(default)s)")
    parser.add_argument(
        "--width", type=int, default=None, help="image width (default: the model's own, or the content's)"
    )
    parser.add_argument(
        "--height", type=int, default=None, help="image height (default: the model's own, or the content's)"
    )
    parser.add_argument(
        "--image", default=None, metavar="CONTENT", help="a content photo: paint it in the style (image to image)"
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=d.strength,
        help="image to image: 0 keeps the content, 1 ignores it (default: %(default)s)",
    )
    parser.add_argument(
        "--style-scale", type=float, default=d.style_scale, help="multiply the token vectors (default: %(default)s)"
    )
    parser.add_argument("--output", default="outputs/generate", help="folder for the PNGs (default: %(default)s)")
    parser.add_argument(
        "--from-png", default=None, metavar="PNG", help="paint again the image this generated PNG describes"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "fp16", "bf16"],
        help="weights dtype (default: fp16 on GPU, fp32 on CPU)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from styleprompt.diffusion.generate import GenerateConfig, check_config
    from styleprompt.diffusion.models import pick_device
    from styleprompt.plumbing.errors import UserError
    from styleprompt.plumbing.files import check_output_folder
    from styleprompt.plumbing.run_folder import run_folder_lock

    check_output_folder(args.output)  # before any model loads: a bad folder would lose the painted images
    if args.device:
        pick_device(args.device)
    cfg: GenerateConfig | None = None
    if args.from_png:
        if args.embedding or args.image or args.lora:
            raise UserError(
                "--from-png takes the tokens, LoRAs and the content image from the PNG; drop --embedding, --lora and --image"
            )
    else:
        cfg = GenerateConfig(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            classes=args.classes,
            steps=args.steps,
            guidance=args.guidance,
            scheduler=args.scheduler,
            seed=args.seed,
            count=args.count,
            width=args.width,
            height=args.height,
            image=args.image,
            strength=args.strength,
            style_scale=args.style_scale,
        )
        check_config(cfg)
        from styleprompt.diffusion.formats import read_embedding

        for path in args.embedding or []:  # a missing or unreadable token file is told before a model loads
            read_embedding(path)
    with run_folder_lock(args.output, "generate"):  # one process at a time writes the folder's numbered PNGs
        return _paint(args, cfg)


def _paint(args: argparse.Namespace, cfg: GenerateConfig | None) -> int:
    from styleprompt.diffusion.generate import generate, load_embeddings, reproduce, save_generated
    from styleprompt.diffusion.lora import load_loras
    from styleprompt.diffusion.models import load_pipeline

    if cfg is None:
        loaded = load_pipeline(args.model, device=args.device, precision=args.precision) if args.model else None
        items = [reproduce(args.from_png, loaded, device=args.device)]
    else:
        loaded = load_pipeline(args.model or DEFAULT_MODEL, device=args.device, precision=args.precision)
        tokens = load_embeddings(loaded, args.embedding, args.style_scale)
        load_loras(loaded, args.lora)
        items = generate(loaded, cfg, tokens)
    for path in save_generated(items, args.output):
        print(path)
    return 0
