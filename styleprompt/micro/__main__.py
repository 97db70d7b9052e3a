"""`python -m styleprompt.micro build --output DIR`: rebuild the micro model from nothing (resumable)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from styleprompt.plumbing.errors import UserError, cli_message


def parser() -> argparse.ArgumentParser:
    from styleprompt.micro.build_config import BuildConfig

    root = argparse.ArgumentParser(prog="python -m styleprompt.micro")
    sub = root.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render the world, train VAE, text encoder + UNet and the judges (resumable)")
    BuildConfig.add_arguments(b)
    e = sub.add_parser("export", help="write the newest checkpoint's EMA weights as DIR/model (and the package's)")
    e.add_argument("--output", required=True, help="the build folder")
    e.add_argument("--install", action="store_true", help="also write the model and judges into the package")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from styleprompt.micro import build
    from styleprompt.micro.build_config import BuildConfig

    try:
        if args.command == "build":
            model = build.build(BuildConfig.from_args(args))
        else:
            model = build.export_build(Path(args.output), args.install)
    except UserError as exc:
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return 2
    if model is None:
        print(f"stopped by --max-minutes; run the same command again to continue the build in {args.output}")
    else:
        print(f"model in {model}" + (" (and installed into the package)" if args.install else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
