"""`styleprompt compare`: flags -> styleprompt.evaluation.compare.run_compare -> grid, CSV, Markdown, HTML.

The per-method flags (weight files, Gatys' iterations, the token's steps and strength, ...) come
from the methods' registry: each method declares its sources and fields, and they appear here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    from styleprompt.evaluation import methods as registry
    from styleprompt.evaluation.compare import DEFAULT_SIZE, method_names

    parser = subparsers.add_parser(
        "compare",
        help="style token vs Gatys, AdaIN and Ghiasi on the same inputs: grid, metrics, report",
        description="Run the style-transfer methods and the style token (text->image and image->image) on the "
        "same content images, and write grid.png, metrics.csv, metrics.md and a self-contained report.html.",
    )
    parser.add_argument("--content", nargs="+", required=True, help="content photos (one grid row each)")
    parser.add_argument("--style-images", nargs="+", required=True, help="style image(s) or folder(s): the artworks")
    parser.add_argument(
        "--class",
        dest="classes",
        nargs="+",
        action="extend",
        default=[],
        help='subject for the token prompt "a <S> style of a [class]": one, or one per content image',
    )
    parser.add_argument("--output", required=True, help="folder for the report (new or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output, removing the old comparison's files (others stay)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated subset of: {','.join(method_names())} "
        "(default: those that can run with the weights at hand, real-weight ones first)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random network weights for the methods that have none at hand (labelled as random everywhere)",
    )
    for source in registry.sources_of(method_names()):
        parser.add_argument(source.flag, dest=_dest(source.flag), default=source.default, help=source.help)
    for f in registry.fields_of(method_names()):
        if f.compare_flag:
            parser.add_argument(
                f.compare_flag,
                dest=_dest(f.compare_flag),
                type=int if f.integer else float,
                default=None,
                help=f.help.replace("%(default)s", str(f.compare_default)),
            )
    parser.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help="long side of the content images in px (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery", nargs="+", default=None, help="style images or folder for the style_rank metric")
    parser.add_argument("--clip-model", default=None, help="CLIP hub id or folder for the CLIP scores (optional)")
    parser.add_argument("--no-metrics", action="store_true", help="pictures and timings only (quicker)")
    parser.add_argument("--cell-size", type=int, default=256, help="px per grid cell (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.set_defaults(func=run)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def run(args: argparse.Namespace) -> int:
    from classic import limits
    from styleprompt.evaluation.compare_run import CompareRun
    from styleprompt.plumbing.files import check_output_folder

    limits.check_range(
        "--cell-size",
        args.cell_size,
        64,
        limits.MAX_CELL_SIZE,
        "the grid holds (methods + 1) x contents cells in one image",
    )
    contents = image_paths(args.content, "--content")
    styles = image_paths(args.style_images, "--style-images")
    gallery = image_paths(args.gallery, "--gallery") if args.gallery else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
    run = CompareRun(args.output)
    check_output_folder(run.root)  # before the lock, which creates the folder
    with run.locked():  # held from the --overwrite below to the run's end (run_compare re-enters it)
        run.claim(overwrite=args.overwrite)
        result = _compare(args, contents, styles, gallery, methods)
    _print(result)
    return 0


def _compare(args: argparse.Namespace, contents, styles, gallery, methods):
    from styleprompt.evaluation import methods as registry
    from styleprompt.evaluation.compare import method_names, run_compare

    sources = registry.sources_of(method_names())
    weights = {s.key: getattr(args, _dest(s.flag)) for s in sources}
    options = {
        f.option: getattr(args, _dest(f.compare_flag))
        for f in registry.fields_of(method_names())
        if f.compare_flag and getattr(args, _dest(f.compare_flag)) is not None
    }
    result = run_compare(
        contents,
        styles,
        embedding=weights.pop(registry.EMBEDDING.key, None),
        classes=args.classes,
        model=weights.pop(registry.DIFFUSION_MODEL.key, None),
        output=args.output,
        methods=methods,
        random_weights=args.random_weights,
        weights=weights,
        options=options,
        size=args.size,
        seed=args.seed,
        gallery=gallery,
        clip_model=args.clip_model,
        device=args.device,
        cell_size=args.cell_size,
        metrics=not args.no_metrics,
        notes=lambda text: print(f"note: {text}", file=sys.stderr),
    )
    return result


def _print(result) -> None:
    from styleprompt.evaluation.report import FIDELITY, STYLE_GAIN, front

    width = max(len(m) for m in [*result.status, *result.not_run])
    for method, state in result.status.items():
        print(f"{method:<{width}}  {state}")
    for method, why in result.not_run.items():
        print(f"{method:<{width}}  not run: {why}")
    best = front(result.cells)
    for cell in result.cells:
        gain, fidelity = cell.metrics.get(STYLE_GAIN), cell.metrics.get(FIDELITY)
        if gain is not None and fidelity is not None and gain.value is not None and fidelity.value is not None:
            mark = "  best" if (cell.content_index, cell.method) in best else ""
            print(
                f"{cell.content_name}: {cell.method:<{width}}  {STYLE_GAIN} {float(gain.value):+.3f}  "
                f"{FIDELITY} {float(fidelity.value):.3f}{mark}"
            )
    for path in (result.grid, result.csv, result.md, result.html):
        print(f"wrote {path}")
