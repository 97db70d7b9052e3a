"""`styleprompt transfer`: classic style transfer (every standalone method of the registry) from the command line.

One content and several styles with --style-weights (or --mask) blend into one image; several
contents and/or styles without them write every (content, style) pair into the --output folder.
Every PNG carries the parameters that made it, so a result can be reproduced from the file.
Each method brings its own flags and weight files (`methods.StyleMethod.add_arguments`, `sources`);
this module names none of them.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from PIL import Image

from styleprompt.evaluation import methods
from styleprompt.plumbing.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "transfer", help=f"classic neural style transfer: {', '.join(methods.names(standalone=True))}"
    )
    p = parser.add_argument
    p(
        "--method",
        required=True,
        choices=methods.names(standalone=True),
        help=", ".join(f"{n} ({methods.get(n).label})" for n in methods.names(standalone=True)),
    )
    p("--content", action="append", required=True, help="content image (repeat for several)")
    p("--style", action="append", required=True, help="style image (repeat for several)")
    p("--style-weights", default=None, help="blend several styles into one output, e.g. 0.7,0.3")
    p("--alpha", type=float, default=1.0, help="degree of stylisation in [0, 1] (default: %(default)s)")
    p("--preserve-color", action="store_true", help="keep the content's colours")
    p(
        "--color-mode",
        choices=["luminance", "histogram"],
        default=None,
        help="how colours are kept (default: the method's own)",
    )
    p("--mask", default=None, help="two-region mask: white gets the first --style, black the second")
    p("--fit-mask", action="store_true", help="stretch a --mask of other proportions to each content image")
    p(
        "--size",
        type=int,
        default=512,
        help="long side of the output in pixels, up to 3840 and beyond (default: %(default)s)",
    )
    p(
        "--tile-size",
        type=int,
        default=None,
        help="tile size in pixels for large images (default: automatic; 0: never tile)",
    )
    p(
        "--output",
        default=None,
        help="output .png (one image) or folder (several pairs); default: output.png / outputs/",
    )
    p("--device", default="cpu", help="cpu, cuda, mps (default: %(default)s)")
    p("--seed", type=int, default=0, help="seed for random init and random weights (default: %(default)s)")
    p("--no-progress", action="store_true", help="no progress bar")
    standalone = methods.names(standalone=True)
    g = parser.add_argument_group("weights")
    for source in methods.sources_of(standalone):  # each method's own files, a shared one once
        g.add_argument(source.flag, default=source.default, help=source.help)
    g.add_argument(
        "--random-weights",
        action="store_true",
        help="random network weights: a demo of the machinery, not of the method",
    )
    for name in standalone:  # each method's own flags, in a group of its name
        methods.get(name).add_arguments(parser.add_argument_group(name))
    parser.set_defaults(func=run)


def _jobs(args: argparse.Namespace) -> tuple[list[tuple[Path, list[Path], Path]], bool]:
    """(content, styles, output path) for every image to make, and whether styles are blended."""
    contents = [Path(c) for c in args.content]
    styles = [Path(s) for s in args.style]
    blend = args.style_weights is not None or args.mask is not None
    if blend or (len(contents) == 1 and len(styles) == 1):
        output = Path(args.output or "output.png")
        if len(contents) > 1:
            folder = Path(args.output or "outputs")
            if folder.suffix:
                raise UserError("several --content images need --output to be a folder")
            return [(c, styles, folder / f"{c.stem}__blend.png") for c in contents], blend
        if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            output = output / f"{contents[0].stem}__{styles[0].stem}.png"
        return [(contents[0], styles, output)], blend
    folder = Path(args.output or "outputs")
    if folder.suffix:
        raise UserError(
            f"{len(contents)} content x {len(styles)} style images make several outputs: give --output a folder, "
            "or --style-weights to blend the styles into one image"
        )
    return [(c, [s], folder / f"{c.stem}__{s.stem}.png") for c in contents for s in styles], False


def run(args: argparse.Namespace) -> int:
    import torch

    from classic import limits
    from classic.inputs import parse_weights
    from styleprompt.diffusion.models import pick_device
    from styleprompt.plumbing.files import check_output_file
    from styleprompt.plumbing.images import load_image, save_image

    start = time.perf_counter()
    pick_device(args.device)  # an unknown or absent device: one line, before anything is read
    # Size-like flags first, before any file is read; what an image implies is checked per method.
    limits.check_seed(args.seed)
    limits.check_side_flag("--size", args.size)
    limits.check_tile_flag(args.tile_size)
    method = methods.get(args.method)
    method.options_from_args(args, Path("."))  # its own flags checked too, before any file is read
    torch.manual_seed(args.seed)
    weights = parse_weights(args.style_weights) if args.style_weights is not None else None
    jobs, _ = _jobs(args)
    for output in {job[2] for job in jobs}:  # before any image is read or network loaded
        check_output_file(output)
    mask = load_image(args.mask) if args.mask else None
    sources = methods.Sources(
        device=args.device,
        random_weights=args.random_weights,
        seed=args.seed,
        files={s.key: getattr(args, s.flag.lstrip("-").replace("-", "_")) for s in method.sources},
    )
    stylizer = method.load(sources, methods.LocalNetworks())
    cache: dict[Path, Image.Image] = {}

    def image(path: Path) -> Image.Image:
        if path not in cache:
            cache[path] = load_image(path)
        return cache[path]

    for content_path, style_paths, output in jobs:
        request = methods.Request(
            styles=[image(p) for p in style_paths],
            style_weights=weights,
            alpha=args.alpha,
            preserve_color=args.preserve_color,
            color_mode=args.color_mode,
            mask=mask.resize(image(content_path).size, Image.Resampling.BILINEAR) if mask and args.fit_mask else mask,
            size=args.size,
            tile_size="auto" if args.tile_size is None else args.tile_size,
            seed=args.seed,
            show_progress=not args.no_progress,
            options=method.options_from_args(args, output.parent / f"{output.stem}_steps"),
        )
        result = stylizer.stylize(image(content_path), request)
        text = {
            "method": args.method,
            "content": str(content_path),
            "styles": ",".join(str(p) for p in style_paths),
            "style_weights": args.style_weights or "",
            "alpha": str(args.alpha),
            "preserve_color": str(args.preserve_color),
            "mask": args.mask or "",
            "size": str(args.size),
            "seed": str(args.seed),
            "command": " ".join(["styleprompt", *sys.argv[1:]]) if sys.argv[0].endswith("styleprompt") else "",
            **result.details,
            "random_weights": str(result.random_weights),
        }
        save_image(result.image, output, text=text)
        note = f", loss {result.loss[0]:.6g} -> {result.loss[1]:.6g}" if result.loss else ""
        if result.random_weights:
            note += " (random weights: a demo of the machinery, not of the method)"
        print(f"wrote {output} ({result.image.width}x{result.image.height}{note})")
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = ""
    if args.device.startswith("cuda"):
        gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    print(f"time {seconds:.1f} s, peak memory {peak_mib:.0f} MiB (RSS){gpu}")
    return 0
