"""The Gradio app: Train · Generate · Compare · Classic, one module per tab.

`build_app` only lays out the tabs; every action calls the same library functions as the CLI.
`queue_options` and `launch_options` carry the serving rules (concurrency, upload size, the one
served folder, no share link) so `app.py` and the tests launch the app the same way.
"""

from __future__ import annotations

import os
from typing import Any

from styleprompt.ui.common import CSS, AppContext, model_notice
from styleprompt.ui.serve import AppSettings, ModelCache

__all__ = ["build_app", "queue_options", "launch_options", "AppSettings", "AppContext"]


def build_app(settings: AppSettings | None = None, *, models: ModelCache | None = None):
    """The app's Blocks; `ctx` is attached as `.styleprompt` (tests read its model cache).

    Gradio copies every file it hands out into its cache folder, GRADIO_TEMP_DIR, read from the
    environment whenever a component is built; `app.py` points it into the output folder
    before anything is built, so the app serves that one folder tree.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from styleprompt.ui import classic_tab, compare_tab, generate_tab, train_tab

    settings = settings or AppSettings()
    ctx = AppContext.create(settings, models)
    with gr.Blocks(title="styleprompt", analytics_enabled=False) as demo:
        gr.Markdown(
            "# styleprompt\nTeach the model a style word from a few artworks, paint with it, and compare it "
            f"with classic style transfer. Model: `{settings.model}` · outputs: `{settings.output_dir}`"
        )
        notice = model_notice(ctx)
        warning = gr.Markdown(notice, visible=bool(notice), elem_id="model-notice")
        with gr.Tabs():
            with gr.Tab("Train", id="train"):
                train = train_tab.build(ctx)
            with gr.Tab("Generate", id="generate"):
                generate = generate_tab.build(ctx)
            with gr.Tab("Compare", id="compare"):
                compare_recent = compare_tab.build(ctx)
            with gr.Tab("Classic", id="classic"):
                classic_tab.build(ctx)
        # The lists of trained tokens follow new training runs and are fresh on every page load.
        for dropdown in (generate.recent, compare_recent):
            refresh = generate_tab.refresher(ctx)
            train.start_event.then(refresh, None, [dropdown], queue=False, api_visibility="private")
            demo.load(refresh, None, [dropdown], queue=False, api_visibility="private")
        # Again on every page load: the model may have arrived meanwhile, or failed to preload.
        demo.load(
            lambda: gr.update(value=model_notice(ctx), visible=bool(model_notice(ctx))),
            None,
            [warning],
            queue=False,
            api_visibility="private",
        )
    demo.styleprompt = ctx
    return demo


def queue_options(settings: AppSettings) -> dict[str, Any]:
    return {"default_concurrency_limit": settings.heavy_concurrency, "max_size": settings.queue_size}


def launch_options(settings: AppSettings) -> dict[str, Any]:
    """Serve the output folder and nothing else; refuse oversized uploads before they land."""
    return {
        "allowed_paths": [str(settings.output_dir)],
        "max_file_size": int(settings.max_upload_mb * 2**20),
        "share": False,
        "show_error": True,
        "css": CSS,
        "footer_links": ["api"],
    }
