"""The styleprompt web app: `python app.py` (SD 1.5), `python app.py --model tiny` (offline).

A thin entry: flags -> AppSettings -> styleprompt.ui.build_app -> queue -> launch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from styleprompt.diffusion.models import DEFAULT_MODEL, MODEL_CHOICES_HELP

    parser = argparse.ArgumentParser(
        description="styleprompt web app: train, generate, compare, classic style transfer"
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"default model: {MODEL_CHOICES_HELP} (default: %(default)s)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for the network)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument(
        "--output",
        default="outputs/app",
        help="the app's output folder, the only folder it serves (default: %(default)s)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "fp16", "bf16"],
        help="model precision for generation (default: fp16 on GPU, fp32 on CPU)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="jobs of one kind (train, generate, ...) running at once (default: %(default)s)",
    )
    parser.add_argument(
        "--queue-size", type=int, default=64, help="requests that may wait in the queue (default: %(default)s)"
    )
    parser.add_argument("--max-uploads", type=int, default=20, help="files per upload field (default: %(default)s)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=25.0, help="size limit per uploaded file in MB (default: %(default)s)"
    )
    parser.add_argument(
        "--art-folder",
        action="append",
        default=[],
        metavar="DIR",
        help="a server folder the Train tab may read artworks from (repeatable; default: your home folder on localhost, none on the network)",
    )
    parser.add_argument(
        "--allow-model",
        action="append",
        default=[],
        metavar="MODEL",
        help="another model the page may name besides --model (repeatable)",
    )
    parser.add_argument(
        "--any-model",
        action="store_true",
        help="let the page name any hub id or local path (the default on localhost; on the network only --model and --allow-model)",
    )
    parser.add_argument(
        "--no-preload", action="store_true", help="load the default model on the first request, not at start"
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off unless asked)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = Path(args.output).expanduser().resolve()
    # Uploads and Gradio's copies of outputs live in the output folder: it is the one folder served.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(output / "cache"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    from styleprompt.plumbing.errors import UserError, cli_message
    from styleprompt.ui import build_app, launch_options, queue_options
    from styleprompt.ui.serve import AppSettings, access_for_host

    try:
        settings = AppSettings(
            model=args.model,
            output_dir=output,
            device=args.device,
            precision=args.precision,
            max_uploads=args.max_uploads,
            max_upload_mb=args.max_upload_mb,
            heavy_concurrency=max(1, args.concurrency),
            queue_size=args.queue_size,
            allowed_models=tuple(args.allow_model),
            **access_for_host(args.host, args.art_folder, args.any_model),
        )
        demo = build_app(settings)
    except UserError as exc:
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return 2
    if not args.no_preload:  # warm the cache in the background; a failure shows on first use
        ctx = demo.styleprompt

        def preload() -> None:
            from styleprompt.ui.common import user_message

            try:
                ctx.models.get(settings.model, settings.precision)
            except Exception as exc:  # noqa: BLE001 - reported here and on the page; the app still serves
                ctx.load_error = user_message(exc)
                logging.warning("could not preload %s: %s", settings.model, exc)

        threading.Thread(target=preload, daemon=True, name="preload").start()
    options = launch_options(settings)
    options["share"] = bool(args.share)
    # Without --share, Gradio's own banner ends "To create a public link, set `share=True` in
    # `launch()`", which is not how this app is asked; say it in the app's own words instead.
    demo.queue(**queue_options(settings)).launch(
        server_name=args.host, server_port=args.port, quiet=not args.share, prevent_thread_lock=True, **options
    )
    if not args.share:
        print(f"styleprompt app on {demo.local_url} (add --share for a public gradio.live link)", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
