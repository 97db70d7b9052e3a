"""`styleprompt convert`: one embedding file -> the same vectors in another tool's format."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    from styleprompt.diffusion.formats import FORMATS

    parser = subparsers.add_parser(
        "convert",
        help="rewrite an embedding for diffusers, AUTOMATIC1111 or ComfyUI (SD 1.x/2.x or SDXL)",
        description="Read an embedding in any supported format and write it in another; the vectors are copied exactly, "
        "in their stored precision (float16, bfloat16, float32 or float64).",
    )
    parser.add_argument("input", metavar="IN", help="embedding file (.safetensors, .pt, .bin, or an A1111 .png)")
    parser.add_argument("--to", required=True, choices=FORMATS, help="output format (see docs/formats.md)")
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
    from styleprompt.diffusion.formats import check_not_an_input, read_embedding, write_embedding

    emb = read_embedding(args.input, token=args.token)
    target = output_path(args.output, emb, args.to)
    check_not_an_input(target, args.to, emb.files)
    for path in write_embedding(emb, target, args.to):
        print(f"{path}  ({args.to}, token {emb.token}, {emb.num_vectors} vector{'s' if emb.num_vectors != 1 else ''})")
    return 0
