"""The app served in-process on a free localhost port, for tests that talk to it over HTTP."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_app(out: Path, **settings) -> Iterator:
    """`build_app` on the tiny model with `settings`, Gradio's cache inside `out` as app.py sets it."""
    from styleprompt.ui import build_app, launch_options, queue_options
    from styleprompt.ui.serve import AppSettings

    old_cache = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(out / "cache")
    app_settings = AppSettings(model="tiny", output_dir=out, device="cpu", **settings)
    demo = build_app(app_settings)
    port = free_port()
    demo.queue(**queue_options(app_settings)).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(app_settings)
    )
    demo.url = f"http://127.0.0.1:{port}/"
    try:
        yield demo
    finally:
        demo.close()
        if old_cache is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_cache
