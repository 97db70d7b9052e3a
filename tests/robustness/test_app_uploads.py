"""The corpus uploaded to the app: each file is read correctly, or its user gets one line that
names it, and the app goes on serving.

The permissions entry is left out here on purpose: an upload carries a file's bytes, not its
mode bits, so what the server receives is an ordinary readable PNG (the local-read refusal is
tested in test_corpus.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.app_server import serve_app
from tests.conftest import make_artwork
from tests.robustness.corpus import CORPUS, Entry, as_params, build

UPLOADED = [e for e in CORPUS if e.filename != "noperm.png"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with serve_app(tmp_path_factory.mktemp("app-out"), max_uploads=20) as demo:
        yield demo


@pytest.fixture
def client(app):
    return Client(app.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def style(tmp_path_factory):
    return make_artwork(tmp_path_factory.mktemp("style") / "style.png", seed=1)


def classic(client: Client, content, style):
    # method, content, styles, weights, mask, alpha, preserve colour, size, iterations, random, vgg, decoder
    return client.predict(
        "adain",
        handle_file(str(content)),
        [handle_file(str(style))],
        "",
        None,
        1.0,
        False,
        64,
        1,
        True,
        "",
        "",
        api_name="/classic",
    )


@pytest.mark.parametrize("entry", as_params(UPLOADED))
def test_classic_upload(entry: Entry, corpus, client, style):
    if entry.expect == "ok":
        status, output = classic(client, corpus[entry.name], style)
        assert 'data-state="done"' in status and output["path"].endswith(".png")
    else:
        with pytest.raises(AppError) as refused:
            classic(client, corpus[entry.name], style)
        message = str(refused.value).strip()
        assert "\n" not in message and "Traceback" not in message and entry.filename in message, message


@pytest.mark.slow
def test_train_upload_of_the_whole_corpus_uses_the_readable_ones(corpus, app, client, tmp_path):
    folder = tmp_path / "everything"
    folder.mkdir()
    files = [shutil.copy(corpus[e.name], folder / e.filename) for e in UPLOADED]
    # files, folder, model, token, init word, vectors, steps, resolution, lr, preview every, preview steps, grad accum,
    # precision, seed
    args = [[handle_file(str(f)) for f in files], "", "tiny", "<corpus>", "painting", 1, 1, 0, 5e-3, 0, 2, 1, "no", 0]
    status = client.predict(*args, api_name="/train")[0]
    assert 'data-state="done"' in status, status
    (run,) = (Path(app.styleprompt.settings.output_dir) / "train").glob("*corpus*")
    used = json.loads((run / "config.json").read_text())["images_used"]
    assert used == sum(e.expect == "ok" for e in UPLOADED)


def test_train_upload_of_only_unreadable_files_is_one_line(corpus, client):
    bad = [e for e in UPLOADED if e.expect == "refused"]
    args = [
        [handle_file(str(corpus[e.name])) for e in bad],
        "",
        "tiny",
        "<bad>",
        "painting",
        1,
        1,
        0,
        5e-3,
        0,
        2,
        1,
        "no",
        0,
    ]
    with pytest.raises(AppError) as refused:
        client.predict(*args, api_name="/train")
    message = str(refused.value).strip()
    assert "\n" not in message and "could be read" in message, message
