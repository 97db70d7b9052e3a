"""`styleprompt pick --run TRAIN_OUTPUT`: score a run's saved embeddings and name the one to use."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from styleprompt.diffusion.models import MODEL_CHOICES_HELP
    from styleprompt.evaluation.pick import MICRO_PICK_CLASSES, PICK_CLASSES

    parser = subparsers.add_parser(
        "pick",
        help="score every saved embedding of a training run (style vs prompt fidelity) and recommend one",
        description="Generates a fixed prompt grid with each embeddings/step-*.safetensors of a run (a pivotal "
        "run's with the LoRA of the same step, step-*.lora.safetensors, applied), scores style "
        "similarity to the training artworks against prompt fidelity, plots the trade-off (pick.png) and "
        "names the recommended file (and its LoRA).",
    )
    parser.add_argument("--run", required=True, help="the --output folder of `styleprompt train`")
    parser.add_argument(
        "--model", default=None, help=f"diffusion model: {MODEL_CHOICES_HELP} (default: the one config.json names)"
    )
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="paint nothing: rank the saved embeddings by the validation loss on the run's fixed set (seconds)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from classic import limits
    from styleprompt.evaluation.pick import default_classes, pick_checkpoint

    if args.steps is not None:  # 0 read as "unset" and ran with generate's default
        limits.check_bound("steps", args.steps)
    if args.quick:
        return _quick(args)
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
    print(f"{'step':>8}  {'style':>8}  {'fidelity':>8}  pareto  {'val_loss':>8}  file")
    for s in result.scores:
        mark = "  <- recommended" if s is result.recommended else ""
        val = "-" if s.validation is None else f"{s.validation:.6f}"
        pareto = "yes" if s.pareto else "no"
        pair = f" + {s.lora}" if s.lora else ""
        print(f"{s.step:>8}  {s.style:>8.4f}  {s.fidelity:>8.4f}  {pareto:>6}  {val:>8}  {s.path}{pair}{mark}")
    print(
        f"fidelity: {result.fidelity_kind}; without the token: "
        + ("n/a" if result.baseline_fidelity is None else f"{result.baseline_fidelity:.4f}")
    )
    print(f"wrote {result.plot}, {result.csv}, {result.json}, {result.sheet}")
    _recommend(result.recommended.path, result.recommended.lora)
    return 0


def _recommend(token: str, lora: str | None) -> None:
    """The last line names the token file; a pivotal run's pair names its LoRA on the line before."""
    if lora:
        print(f"recommended LoRA (scored with the token below): {lora}")
    print(f"recommended: {token}")


def _quick(args: argparse.Namespace) -> int:
    from styleprompt.evaluation.pick import quick_pick

    result = quick_pick(args.run, model=args.model, images=args.images, device=args.device, output=args.output)
    print(f"{'step':>8}  {'val_loss':>8}  {'held_out':>8}  file")
    for row in result.rows:
        mark = "  <- recommended (the loss stops falling here)" if row is result.recommended else ""
        held = "-" if row.held_out is None else f"{row.held_out:.6f}"
        pair = f" + {row.lora}" if row.lora else ""
        print(f"{row.step:>8}  {row.seen:>8.6f}  {held:>8}  {row.path}{pair}{mark}")
    print(f"ranked by {result.ranked_by}; wrote {result.csv}, {result.json}, {result.plot}")
    print("a first pass: `styleprompt pick` without --quick paints the prompt grid to check style and fidelity")
    _recommend(result.recommended.path, result.recommended.lora)
    return 0
