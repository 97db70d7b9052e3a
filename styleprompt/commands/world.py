"""`styleprompt world`: pictures of the procedural world painted in any style, for training a token.

Why a command: the offline face of the product (`--model micro`) needs training pictures whose
truth is known; any image can be the style, and `--style photo` (or no --style) gives the plain
renderings the micro model calls "photo".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from styleprompt.plumbing.errors import UserError

MAX_COUNT = 5000
MAX_SIZE = 512


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "world", help="make pictures of the micro model's world in a style (or list its words)"
    )
    parser.add_argument("--style", default=None, help="style image (any painting); 'photo' or none: plain renderings")
    parser.add_argument("--count", type=int, default=8, help="how many pictures (default 8)")
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME",
        help="a world class to draw (repeatable; default: all of them, in turn)",
    )
    parser.add_argument("--size", type=int, default=64, help="picture size in pixels (default 64, the micro model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the layouts (default 0)")
    parser.add_argument("--output", default=None, help="new folder for the pictures and their caption files")
    parser.add_argument(
        "--list", action="store_true", help="print the classes, the micro model's style words and held-out paintings"
    )
    parser.add_argument("--json", action="store_true", help="with --list: one JSON object")
    parser.set_defaults(func=run)


def listing() -> dict:
    from styleprompt.micro import HELD_OUT, STYLE_WORDS
    from styleprompt.micro.world import CLASSES, PLAIN_STYLE

    return {"classes": list(CLASSES), "styles": {**STYLE_WORDS, PLAIN_STYLE: None}, "held_out": list(HELD_OUT)}


def run(args: argparse.Namespace) -> int:
    if args.list:
        info = listing()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print("classes:  " + ", ".join(info["classes"]))
            print("styles:   " + ", ".join(f"{w} ({p or 'plain renderings'})" for w, p in info["styles"].items()))
            print("held out: " + ", ".join(info["held_out"]))
        return 0
    from styleprompt.micro import world
    from styleprompt.plumbing.files import check_output_folder
    from styleprompt.plumbing.folder_lock import locked_folder
    from styleprompt.plumbing.images import load_image

    if not args.output:
        raise UserError("world needs --output DIR (a new folder for the pictures), or --list")
    if not 1 <= args.count <= MAX_COUNT:
        raise UserError(f"--count must be between 1 and {MAX_COUNT} (got {args.count})")
    if not 16 <= args.size <= MAX_SIZE:
        raise UserError(f"--size must be between 16 and {MAX_SIZE} pixels (got {args.size}); the micro model uses 64")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be between 0 and 2^63-1 (got {args.seed})")
    classes = args.classes or world.CLASSES
    unknown = [c for c in classes if c not in world.CLASSES]
    if unknown:
        raise UserError(f"unknown world class {unknown[0]!r}; choose from {', '.join(world.CLASSES)}")
    out = check_output_folder(args.output)
    _check_empty(out)
    painted = bool(args.style) and args.style != world.PLAIN_STYLE
    check_memory(args.count, args.size, painted)
    style = load_image(args.style) if painted else None
    with locked_folder(out, "world"):
        _check_empty(out)  # again: another world may have filled it before this one held the lock
        pictures = world.make_pictures(style, classes, args.count, seed=args.seed, size=args.size)
        paths = world.write_pictures(pictures, out)
    label = "plain renderings" if style is None else f"painted in the style of {Path(args.style).name}"
    print(f"wrote {len(paths)} pictures ({label}) with caption files to {out}")
    return 0


def _check_empty(out: Path) -> None:
    from styleprompt.plumbing.folder_lock import is_lock_file

    if out.exists() and any(p for p in out.iterdir() if not is_lock_file(p)):
        raise UserError(f"{out} already exists and is not an empty folder; give a new folder for --output")


def check_memory(count: int, size: int, painted: bool) -> None:
    """Refuse a count x size whose pictures the memory budget cannot hold (before any is drawn)."""
    from classic.limits import MEMORY_BUDGET_MIB
    from styleprompt.micro.world import memory_mib

    need = memory_mib(count, size, painted)
    if need <= MEMORY_BUDGET_MIB:
        return
    most = max((n for n in range(1, count) if memory_mib(n, size, painted) <= MEMORY_BUDGET_MIB), default=0)
    advice = f"use --count {most} or fewer at --size {size}" if most else "use a smaller --size"
    raise UserError(
        f"--count {count} at --size {size} needs about {need / 1024:.1f} GiB of memory for the pictures; "
        f"the world holds in {MEMORY_BUDGET_MIB // 1024} GiB: {advice}"
    )
