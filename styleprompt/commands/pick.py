"""`styleprompt pick --run TRAIN_OUTPUT`: score a run's saved embeddings and name the one to use."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from styleprompt.evaluation.pick import MICRO_PICK_CLASSES, PICK_CLASSES

    parser = subparsers.add_parser(
        "pick",
        help="score every saved embedding of a training run (style vs prompt fidelity) and recommend one",
        description="Generates a fixed prompt grid with each embeddings/step-*.safetensors of a run, scores style "
        "similarity to the training artworks against prompt fidelity, plots the trade-off (pick.png) and "
        "names the recommended file.",
    )
    parser.add_argument("--run", required=True, help="the --output folder of `styleprompt train`")
    parser.add_argument("--model", default=None, help="diffusion model (default: the one config.json names)")
    parser.add_argument("--images", default=None, help="the training artworks (default: the folder config.json names)")
    parser.add_argument(
        "--class",
        dest="classes",
        nargs="+",
        action="extend",
        default=None,
        help=f"subjects of the prompt grid (default: {' '.join(PICK_CLASSES)}; on micro: {' '.join(MICRO_PICK_CLASSES)})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the prompt grid (default: 0)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps per image (default: generate's)")
    parser.add_argument("--clip-model", default=None, help="CLIP hub id or folder: prompt fidelity by CLIP text score")
    parser.add_argument("--output", default=None, help="folder for pick.png, pick.csv, pick.json (default: RUN/pick)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from styleprompt.evaluation.pick import default_classes, pick_checkpoint

    result = pick_checkpoint(
        args.run,
        model=args.model,
        images=args.images,
        classes=args.classes or default_classes(Path(args.run), args.model),
        seeds=args.seeds,
        steps=args.steps,
        clip_model=args.clip_model,
        device=args.device,
        output=args.output,
    )
    print(f"{'step':>8}  {'style':>8}  {'fidelity':>8}  pareto  file")
    for s in result.scores:
        mark = "  <- recommended" if s is result.recommended else ""
        print(f"{s.step:>8}  {s.style:>8.4f}  {s.fidelity:>8.4f}  {'yes' if s.pareto else 'no':>6}  {s.path}{mark}")
    print(
        f"fidelity: {result.fidelity_kind}; without the token: "
        + ("n/a" if result.baseline_fidelity is None else f"{result.baseline_fidelity:.4f}")
    )
    print(f"wrote {result.plot}, {result.csv}, {result.json}, {result.sheet}")
    print(f"recommended: {result.recommended.path}")
    return 0
