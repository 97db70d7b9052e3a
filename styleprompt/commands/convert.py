"""`styleprompt convert`: one embedding file -> the same vectors in another tool's format; one LoRA
file -> the same weights and alphas in the other layout (diffusers <-> kohya)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    from styleprompt.diffusion.formats import FORMATS
    from styleprompt.diffusion.lora import LORA_FORMATS

    parser = subparsers.add_parser(
        "convert",
        help="rewrite an embedding for diffusers, AUTOMATIC1111 or ComfyUI, or a LoRA file diffusers <-> kohya",
        description="Read an embedding in any supported format and write it in another; the vectors are copied exactly, "
        "in their stored precision (float16, bfloat16, float32 or float64). A LoRA file (.safetensors, either layout) "
        "converts with --to lora-diffusers or --to lora-kohya, each module's alpha carried.",
    )
    parser.add_argument(
        "input", metavar="IN", help="embedding file (.safetensors, .pt, .bin, or an A1111 .png) or LoRA file"
    )
    parser.add_argument(
        "--to", required=True, choices=FORMATS + LORA_FORMATS, help="output format (see docs/formats.md)"
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT",
        help="output file, or a folder (the format's usual file name is used; sdxl-pair writes X and X_2)",
    )
    parser.add_argument("--token", default=None, help="rename the token (A1111 triggers on the file name instead)")
    parser.set_defaults(func=run)


def output_path(out: str, emb, fmt: str) -> Path:
    """A folder (existing, or named without an extension) gets the format's conventional file name."""
    from styleprompt.diffusion.formats import default_file_name

    path = Path(out).expanduser()
    if path.is_dir() or (not path.suffix and not path.exists()):
        return path / default_file_name(emb, fmt)
    return path


def run(args: argparse.Namespace) -> int:
    from styleprompt.diffusion import lora
    from styleprompt.diffusion.formats import check_not_an_input, read_embedding, write_embedding
    from styleprompt.plumbing.errors import UserError

    is_lora = str(args.input).endswith(".safetensors") and lora.is_lora_file(args.input)
    if is_lora or args.to in lora.LORA_FORMATS:
        if not is_lora:
            raise UserError(f"{args.input} is not a LoRA file; --to {args.to} converts LoRA files only")
        if args.to not in lora.LORA_FORMATS:
            raise UserError(f"{args.input} is a LoRA file; convert it with --to {' or --to '.join(lora.LORA_FORMATS)}")
        if args.token is not None:
            raise UserError("--token renames an embedding's token; a LoRA file has none, drop it")
        path = Path(args.output).expanduser()
        if path.is_dir() or (not path.suffix and not path.exists()):
            path = path / lora.LORA_FILE_NAMES[args.to]
        check_not_an_input(path, args.to, [args.input])
        written, info = lora.convert_lora_file(args.input, path, args.to)
        print(f"{written}  ({args.to}, rank {info.rank}, {info.modules} layers: {', '.join(info.parts)})")
        return 0

    emb = read_embedding(args.input, token=args.token)
    target = output_path(args.output, emb, args.to)
    check_not_an_input(target, args.to, emb.files)
    for path in write_embedding(emb, target, args.to):
        print(f"{path}  ({args.to}, token {emb.token}, {emb.num_vectors} vector{'s' if emb.num_vectors != 1 else ''})")
    return 0
