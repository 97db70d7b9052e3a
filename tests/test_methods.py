"""The method contract: one tile-size convention, and a fourth method registered in one line shows
up in `styleprompt transfer`, `styleprompt compare` and the app without touching them."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from styleprompt.evaluation import methods
from styleprompt.evaluation.compare import method_names, read_manifest
from styleprompt.evaluation.methods import Networks, Request, Sources, StyleResult
from tests.conftest import make_artwork
from tests.test_train_cli import run_cli

HAS_GHIASI = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


class FlatStylizer:
    """Paints the content in the styles' mean colour, by alpha: trivially checkable."""

    random_weights = False

    def describe(self) -> dict[str, str]:
        return {}

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from styleprompt.plumbing.images import resize_long_side

        image = resize_long_side(content, request.size) if request.size else content
        mean = np.mean(
            [np.asarray(s.convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) for s in request.styles], axis=0
        )
        out = (1 - request.alpha) * np.asarray(image, dtype=np.float64) + request.alpha * mean
        return StyleResult(
            Image.fromarray(np.round(out).astype(np.uint8)),
            random_weights=False,
            details={"flat_colour": ",".join(f"{v:.0f}" for v in mean)},
        )


class Flat:
    name, label = "flat", "Flat colour"
    options: frozenset[str] = frozenset()

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {}

    def load(self, sources: Sources, networks: Networks) -> FlatStylizer:
        return FlatStylizer()


@pytest.fixture
def flat(monkeypatch):
    """The fourth method, registered the way a new module would register itself."""
    monkeypatch.setattr(methods, "REGISTRY", dict(methods.REGISTRY))
    methods.register(Flat())
    return "flat"


@pytest.fixture
def pictures(tmp_path):
    return {
        "content": make_artwork(tmp_path / "photo.png", seed=7, size=(64, 48)),
        "style": make_artwork(tmp_path / "art.png", seed=3, size=(40, 40)),
    }


def _style_mean(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))


def test_a_fourth_method_runs_from_the_cli(flat, pictures, tmp_path, capsys):
    out = tmp_path / "flat.png"
    code, stdout, _ = run_cli(
        capsys,
        "transfer",
        "--method",
        flat,
        "--content",
        str(pictures["content"]),
        "--style",
        str(pictures["style"]),
        "--size",
        "32",
        "--output",
        str(out),
        "--no-progress",
    )
    assert code == 0 and f"wrote {out}" in stdout
    with Image.open(out) as img:
        assert img.size == (32, 24) and img.text["method"] == "flat" and img.text["random_weights"] == "False"
        assert "flat_colour" in img.text
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert np.abs(pixels - _style_mean(pictures["style"])).max() <= 1.0


def test_a_fourth_method_is_a_compare_column(flat, pictures, tmp_path, capsys):
    assert flat in method_names()
    out = tmp_path / "cmp"
    code, stdout, _ = run_cli(
        capsys,
        "compare",
        "--content",
        str(pictures["content"]),
        "--style-images",
        str(pictures["style"]),
        "--methods",
        f"{flat},adain",
        "--random-weights",
        "--no-metrics",
        "--size",
        "32",
        "--cell-size",
        "64",
        "--device",
        "cpu",
        "--output",
        str(out),
    )
    assert code == 0 and "flat" in stdout
    manifest = read_manifest(out)
    assert manifest["methods"] == ["flat", "adain"] and manifest["labels"]["flat"] == "Flat colour"
    assert manifest["status"]["flat"] == "ok"
    cell = next(c for c in manifest["cells"] if c["method"] == "flat")
    assert cell["method_weights"] == "real" and cell["seconds"] > 0
    with Image.open(out / cell["image"]) as img:
        assert max(img.size) == 32


@pytest.mark.slow
def test_a_fourth_method_is_offered_and_runs_in_the_app(flat, pictures, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    from tests.app_server import serve_app

    with serve_app(tmp_path / "app-out") as demo:
        radios = [c for c in demo.config["components"] if c["props"].get("elem_id") == "classic-method"]
        boxes = [c for c in demo.config["components"] if c["props"].get("elem_id") == "cmp-methods"]
        assert flat in [c[0] for c in radios[0]["props"]["choices"]]
        assert flat in [c[0] for c in boxes[0]["props"]["choices"]]
        client = Client(demo.url, verbose=False, download_files=False)
        args = [
            flat,
            handle_file(str(pictures["content"])),
            [handle_file(str(pictures["style"]))],
            "",
            None,
            1.0,
            False,
            64,
            3,
            False,
            "",
            "",
        ]
        status, output = client.predict(*args, api_name="/classic")
    assert 'data-state="done"' in status and "random weights" not in status
    with Image.open(output["path"]) as img:
        assert img.text["method"] == "flat" and max(img.size) == 64


@pytest.mark.skipif(not HAS_GHIASI, reason="the [ghiasi] extra is not installed")
def test_ghiasi_tile_size_zero_is_one_pass(pictures, tmp_path, capsys, monkeypatch):
    """--tile-size 0 means "never tile" for every method (it once meant "automatic" for Ghiasi)."""
    import classic.ghiasi as ghiasi

    # Make "automatic" tile this small picture, and count tiled runs.
    monkeypatch.setattr(ghiasi, "ONE_PASS_MAX_PIXELS", 16)
    monkeypatch.setattr(ghiasi, "DEFAULT_TILE", 64)
    tiled = []
    real = ghiasi.transform_tiled
    monkeypatch.setattr(ghiasi, "transform_tiled", lambda *a, **k: tiled.append(k["tile"]) or real(*a, **k))
    base = [
        "transfer",
        "--method",
        "ghiasi",
        "--content",
        str(pictures["content"]),
        "--style",
        str(pictures["style"]),
        "--size",
        "128",
        "--no-progress",
    ]
    code, _, err = run_cli(capsys, *base, "--tile-size", "0", "--output", str(tmp_path / "one.png"))
    assert code == 0, err
    assert tiled == []
    code, _, err = run_cli(capsys, *base, "--output", str(tmp_path / "auto.png"))
    assert code == 0, err
    assert tiled == [64]  # the automatic choice does tile here, so the first run really chose one pass
