"""`styleprompt inspect`: what an embedding file holds and which models it fits, without loading a model."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show an embedding's token, vectors, widths and the models it fits (or a LoRA's format, rank, targets, family)",
    )
    parser.add_argument("file", metavar="FILE", help="embedding file (.safetensors, .pt, .bin, or an A1111 .png)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.set_defaults(func=run)


def describe(emb) -> dict:
    from styleprompt.diffusion.families import describe_family, fits_description

    parts = emb.parts()
    names = ["clip_l", "clip_g"] if emb.is_sdxl else ["text_encoder"]
    return {
        "files": [str(f) for f in emb.files],
        "format": emb.format,
        "token": emb.token,
        "vectors": emb.num_vectors,
        "widths": {name: int(p.shape[1]) for name, p in zip(names, parts)},
        "family": emb.family,
        "family_description": describe_family(emb.widths),
        "fits": fits_description(emb.widths),
        "step": emb.step,
        "norms": {name: [round(float(v), 4) for v in p.norm(dim=1)] for name, p in zip(names, parts)},
    }


def run(args: argparse.Namespace) -> int:
    from styleprompt.diffusion import lora
    from styleprompt.diffusion.formats import read_embedding

    if str(args.file).endswith(".safetensors") and lora.is_lora_file(args.file):
        shown = lora.describe(lora.read_lora_file(args.file)[0])
        print(json.dumps(shown, indent=2) if args.json else "\n".join(f"{k + ':':8} {v}" for k, v in shown.items()))
        return 0

    info = describe(read_embedding(args.file))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file:    {' + '.join(info['files'])}")
    print(f"format:  {info['format']}")
    print(f"token:   {info['token']}")
    print(f"vectors: {info['vectors']}")
    print("widths:  " + ", ".join(f"{k} {v}" for k, v in info["widths"].items()))
    print(f"family:  {info['family_description']}")
    print(f"fits:    {info['fits']}")
    if info["step"] is not None:
        print(f"step:    {info['step']}")
    for name, norms in info["norms"].items():
        print(f"norms:   {name} " + " ".join(f"{n:g}" for n in norms))
    return 0
