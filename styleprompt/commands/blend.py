"""`styleprompt blend`: several style tokens, weighted, summed into one new token."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from styleprompt.diffusion.formats import FORMATS

    parser = subparsers.add_parser(
        "blend",
        help="mix style tokens with weights into a new token (a.safetensors:0.7 b.safetensors:0.3)",
        description="The new token's vectors are the weighted sum of the inputs' (same model family, same vector "
        "count). Weights are used as given; make them sum to 1 to keep the vectors' scale.",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="FILE[:WEIGHT]", help="embedding files with weights (default: equal weights)"
    )
    parser.add_argument("--token", required=True, help="the new token, e.g. <mix>")
    parser.add_argument("--output", required=True, metavar="OUT", help="output file or folder")
    parser.add_argument(
        "--to", default=None, choices=FORMATS, help="output format (default: diffusers, or sdxl for SDXL tokens)"
    )
    parser.set_defaults(func=run)


def parse_weighted(items: list[str]) -> list[tuple[str, float | None]]:
    """ "a.safetensors:0.7" -> ("a.safetensors", 0.7); a path without a numeric suffix keeps its colons."""
    out = []
    for item in items:
        path, sep, weight = item.rpartition(":")
        if sep:
            try:
                out.append((path, float(weight)))
                continue
            except ValueError:
                pass
        out.append((item, None))
    return out


def run(args: argparse.Namespace) -> int:
    from styleprompt.commands.convert import output_path
    from styleprompt.diffusion.formats import blend_embeddings, check_not_an_input, read_weighted, write_embedding

    parts = read_weighted(parse_weighted(args.inputs))
    emb = blend_embeddings(parts, args.token)
    fmt = args.to or ("sdxl" if emb.is_sdxl else "diffusers")
    target = output_path(args.output, emb, fmt)
    check_not_an_input(target, fmt, [f for part, _ in parts for f in part.files])  # as convert does
    for path in write_embedding(emb, target, fmt):
        print(f"{path}  ({fmt}, token {emb.token}, {emb.num_vectors} vector{'s' if emb.num_vectors != 1 else ''})")
    return 0
