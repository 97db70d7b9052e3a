"""`python -m styleprompt.micro build --output DIR`: rebuild the micro model from nothing (resumable)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from styleprompt.plumbing.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m styleprompt.micro")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="render the world, train VAE, text encoder + UNet and the judges (resumable)")
    b.add_argument("--output", required=True, help="build folder (run again with the same folder to resume)")
    b.add_argument("--styles", default=None, help="folder of the 19 paintings (default ../shared/data/style)")
    b.add_argument("--per-class", type=int, default=16, help="pictures per class and style word")
    b.add_argument("--vae-steps", type=int, default=700)
    b.add_argument("--unet-steps", type=int, default=6400)
    b.add_argument("--batch", type=int, default=48)
    b.add_argument("--lr", type=float, default=1e-3)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint-every", type=int, default=100)
    b.add_argument("--classifier-steps", type=int, default=400)
    b.add_argument("--decoder-steps", type=int, default=1500, help="wide-decoder steps (encoder frozen)")
    b.add_argument(
        "--blend-steps",
        type=int,
        default=0,
        help="style-blend steps after the UNet stage (default 0: none; an experiment, see docs/micro.md)",
    )
    b.add_argument("--blend-lr", type=float, default=2e-4)
    b.add_argument("--blend-fraction", type=float, default=0.5, help="share of each blend-stage batch from blends")
    b.add_argument("--blend-ema", type=float, default=0.998, help="EMA decay of the blend stage")
    b.add_argument("--blend-combos", type=int, default=70, help="blends of two paintings, each over every class")
    b.add_argument("--max-minutes", type=float, default=None, help="stop the UNet stage after this long (resume later)")
    b.add_argument(
        "--install", action="store_true", help="also write the model into the package (styleprompt/micro/model)"
    )
    e = sub.add_parser("export", help="write the newest checkpoint's EMA weights as the packaged model")
    e.add_argument("--output", required=True)
    e.add_argument("--install", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from styleprompt.micro import MODEL_DIR, build

    try:
        if args.command == "build":
            build.build(
                Path(args.output),
                styles=args.styles,
                per_class=args.per_class,
                vae_steps=args.vae_steps,
                unet_steps=args.unet_steps,
                batch=args.batch,
                lr=args.lr,
                seed=args.seed,
                checkpoint_every=args.checkpoint_every,
                classifier_steps=args.classifier_steps,
                install=args.install,
                max_minutes=args.max_minutes,
                decoder_steps=args.decoder_steps,
                blend_steps=args.blend_steps,
                blend_lr=args.blend_lr,
                blend_fraction=args.blend_fraction,
                blend_combos=args.blend_combos,
                blend_ema=args.blend_ema,
            )
        else:
            build.export_pipeline(Path(args.output), MODEL_DIR if args.install else Path(args.output) / "model")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
