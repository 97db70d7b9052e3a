"""The hostile cases through the app: one line on the page, never a path of the server (an uploaded
embedding it cannot read is named by its file name, not by its place in Gradio's cache), and the
server (held to a 6 GB address space) goes on serving. The weights-file fields follow the art
folders' rules: served on the network without --art-folder, no server file may be named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.robustness.hostile import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("app-out")
    files = build(tmp_path_factory.mktemp("hostile"))
    (files / "bad token.safetensors").write_text("not an embedding\n")  # Gradio stores it in the server's cache
    save_file({"{class}": torch.randn(1, 32)}, str(files / "slot.safetensors"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.robustness.app_child", str(out), "6"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http"), "the app did not start"
        yield Client(url, verbose=False, download_files=False), out, files
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def classic(client, method, content, style, size=64, vgg="", decoder=""):
    # method, content, styles, weights, mask, alpha, preserve colour, size, iterations, random, vgg, decoder
    return client.predict(
        method,
        handle_file(str(content)),
        [handle_file(str(style))],
        "",
        None,
        1.0,
        False,
        size,
        1,
        not (vgg or decoder),
        vgg,
        decoder,
        api_name="/classic",
    )


def train(client, art: Path, token="<x>", vectors=1, resolution=0):
    files = [handle_file(str(p)) for p in sorted(art.iterdir())]
    # files, folder, model, token, init word, vectors, steps, resolution, lr, preview every, preview steps, grad accum,
    # precision, seed
    return client.predict(
        files, "", "tiny", token, "painting", vectors, 1, resolution, 5e-3, 0, 2, 1, "no", 0, api_name="/train"
    )


def generate(client, embedding: Path):
    # model, uploads, recent, style scale, prompt, negative, steps, guidance, scheduler, seed, count, content,
    # strength, LoRA uploads, LoRA scale
    return client.predict(
        "tiny",
        [handle_file(str(embedding))],
        [],
        1.0,
        "a <x> style of a city",
        "",
        1,
        7.5,
        "ddim",
        0,
        1,
        None,
        0.5,
        [],
        1.0,
        api_name="/generate",
    )


def refused(call, out: Path) -> str:
    with pytest.raises(AppError) as info:
        call()
    message = str(info.value).strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert str(out) not in message and "gradio" not in message.lower(), message  # no path of the server
    return message


CASES = {
    "adain style 1x20000": (
        lambda c, f: classic(c, "adain", f / "content.png", f / "thin-1x20000.png"),
        "512x10240000",
    ),
    "gatys style 10x2000": (lambda c, f: classic(c, "gatys", f / "content.png", f / "thin-10x2000.png"), "thinner"),
    "ghiasi content 10x2000": (lambda c, f: classic(c, "ghiasi", f / "thin-10x2000.png", f / "style.png"), "thinner"),
    "classic size 100000": (
        lambda c, f: classic(c, "ghiasi", f / "content.png", f / "style.png", size=100000),
        "maximum value",
    ),
    "vgg weights /etc/passwd": (
        lambda c, f: classic(c, "adain", f / "content.png", f / "style.png", vgg="/etc/passwd"),
        "names no folders",
    ),
    "decoder weights ../x": (
        lambda c, f: classic(c, "adain", f / "content.png", f / "style.png", decoder="../x.pth"),
        "names no folders",
    ),
    "train token painting": (lambda c, f: train(c, f / "art", token="painting"), "'painting</w>'"),
    "train token the": (lambda c, f: train(c, f / "art", token="the"), "'the</w>'"),
    "train token {class}": (lambda c, f: train(c, f / "art", token="{class}"), "{class} is a slot"),
    "generate with an uploaded embedding that is text": (
        lambda c, f: generate(c, f / "bad token.safetensors"),
        "cannot read bad token.safetensors as safetensors",
    ),
    "generate with an uploaded embedding keyed {class}": (
        lambda c, f: generate(c, f / "slot.safetensors"),
        "{class} is a slot",
    ),
    "train resolution 100000": (lambda c, f: train(c, f / "art", resolution=100000), "maximum value"),
    "train vectors 10000": (lambda c, f: train(c, f / "art", vectors=10000), "maximum value"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_refused_on_the_page(name, served):
    client, out, files = served
    call, says = CASES[name]
    message = refused(lambda: call(client, files), out)
    assert says in message, message


@pytest.mark.slow
def test_compare_weights_field_follows_the_folder_rules(served):
    client, out, files = served
    # contents, styles, recent, upload, classes, methods, model, random, vgg, decoder, LoRA, size, seed,
    # then the methods' fields: Gatys' iterations, token steps, strength
    message = refused(
        lambda: client.predict(
            [handle_file(str(files / "content.png"))],
            [handle_file(str(files / "style.png"))],
            None,
            None,
            "a city",
            ["adain"],
            "tiny",
            False,
            "/etc/passwd",
            "",
            "",
            64,
            0,
            1,
            1,
            0.5,
            api_name="/compare",
        ),
        out,
    )
    assert "names no folders" in message


@pytest.mark.slow
def test_still_serving_after_the_cases(served):
    client, out, files = served
    status, output = classic(client, "ghiasi", files / "content.png", files / "style.png")
    assert 'data-state="done"' in status and output["path"].endswith(".png")
