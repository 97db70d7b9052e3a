"""The method contract: one tile-size convention, and a method registered in one line (with its own
flag, field and weight source) shows up in `styleprompt transfer`, `styleprompt compare` and both
app tabs without touching them."""

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
from styleprompt.evaluation.methods import Field, Method, Networks, Notes, Request, Sources, StyleResult, WeightSource
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
        mix = request.alpha * float(request.options.get("mix", 1.0))
        out = (1 - mix) * np.asarray(image, dtype=np.float64) + mix * mean
        return StyleResult(
            Image.fromarray(np.round(out).astype(np.uint8)),
            random_weights=False,
            notes=Notes(extra={"flat_colour": ",".join(f"{v:.0f}" for v in mean)}),
        )


MIX = Field("mix", "Mix (Flat colour)", 1.0, 0.0, 1.0, "flat-mix", integer=False, compare_flag="--flat-mix")
PALETTE = WeightSource(
    "flat_palette", "--flat-palette", "a palette file (unused)", app_label="Flat palette", elem="palette"
)


class Flat(Method):
    """Its own transfer flag (--flat-mix), field (mix) and weight source (--flat-palette)."""

    name, label = "flat", "Flat colour"
    options = frozenset({"mix"})
    fields = (MIX,)
    sources = (PALETTE,)

    def add_arguments(self, parser) -> None:
        parser.add_argument("--flat-mix", type=float, default=1.0, help="how much of the flat colour")

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {"mix": MIX.check(args.flat_mix, "--flat-mix")}

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


def test_a_fourth_method_and_its_flags_are_in_the_help(flat, capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "transfer", "--help")
    text = capsys.readouterr().out
    assert "--flat-mix" in text and "--flat-palette" in text and "{gatys,adain,ghiasi,wct,microast,flat}" in text
    assert "--iterations" in text and "--style-size" in text  # the classic methods' own flags, from them
    assert "token-txt2img" not in text  # the token methods are compare columns, not transfer methods
    with pytest.raises(SystemExit):
        run_cli(capsys, "compare", "--help")
    text = capsys.readouterr().out
    assert "--flat-mix" in text and "--flat-palette" in text and "flat" in text


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
    code, _, err = run_cli(
        capsys,
        "transfer",
        "--method",
        flat,
        "--content",
        str(pictures["content"]),
        "--style",
        str(pictures["style"]),
        "--flat-mix",
        "2",
        "--output",
        str(tmp_path / "no.png"),
    )
    assert code == 2 and "--flat-mix 2.0 is out of range" in err  # its own flag, checked by the method
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
        "--flat-mix",
        "0.5",
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
        assert max(img.size) == 32 and img.text["mix"] == "0.5"  # its compare flag reached it
    # By default it is a column too: it can run here (no weights needed), so it is chosen.
    code, stdout, _ = run_cli(
        capsys,
        "compare",
        "--content",
        str(pictures["content"]),
        "--style-images",
        str(pictures["style"]),
        "--no-metrics",
        "--size",
        "32",
        "--cell-size",
        "64",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "default"),
    )
    assert code == 0 and "flat" in read_manifest(tmp_path / "default")["methods"]


@pytest.mark.slow
def test_a_fourth_method_is_offered_and_runs_in_the_app(flat, pictures, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    from tests.app_server import serve_app

    with serve_app(tmp_path / "app-out") as demo:
        radios = [c for c in demo.config["components"] if c["props"].get("elem_id") == "classic-method"]
        boxes = [c for c in demo.config["components"] if c["props"].get("elem_id") == "cmp-methods"]
        assert flat in [c[1] for c in radios[0]["props"]["choices"]]
        assert flat in [c[1] for c in boxes[0]["props"]["choices"]] and flat in boxes[0]["props"]["value"]
        by_elem = {c["props"].get("elem_id"): c for c in demo.config["components"]}
        for tab in ("classic", "cmp"):  # its field and its weight-file box, in both tabs
            assert by_elem[f"{tab}-flat-mix"]["props"]["label"] == "Mix (Flat colour)"
            assert by_elem[f"{tab}-palette"]["props"]["label"] == "Flat palette"
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
            3,  # Gatys' iterations
            0.5,  # its own field: half the flat colour
            False,
            "",
            "",
            "",  # its palette box
        ]
        status, output = client.predict(*args, api_name="/classic")
    assert 'data-state="done"' in status and "random weights" not in status
    with Image.open(output["path"]) as img:
        assert img.text["method"] == "flat" and max(img.size) == 64 and img.text["mix"] == "0.5"


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


def test_the_token_model_default_is_the_diffusion_default():
    from styleprompt.diffusion.models import DEFAULT_MODEL

    assert methods.DIFFUSION_MODEL.default == DEFAULT_MODEL  # spelled in methods.py so it imports no diffusers


def test_notes_are_typed_and_become_text_only_at_the_edge():
    image = Image.new("RGB", (4, 4))
    image.info.update({"loss_first": "2.5", "loss_last": "0.5", "evaluations": "3", "tiles": "1", "x": "y"})
    notes = methods._take_notes(image)
    assert notes.loss == (2.5, 0.5) and notes.evaluations == 3 and notes.tiles == 1 and notes.extra == {"x": "y"}
    assert image.info == {}  # taken off the picture: they travel no further as image metadata
    assert notes.as_text() == {"x": "y", "loss_first": "2.5", "loss_last": "0.5", "evaluations": "3", "tiles": "1"}


def test_survey_reads_the_compare_folder_through_compare_run():
    """CompareRun owns the folder; survey.py stands beside compare.py, not above it."""
    import ast

    from styleprompt.evaluation import survey
    from styleprompt.evaluation.compare_run import CompareRun

    tree = ast.parse(Path(survey.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "styleprompt.evaluation.compare" not in imported and "styleprompt.evaluation.compare_run" in imported
    run = CompareRun("/r")
    assert run.output_image(0, "photo", "adain") == Path("/r/images/01-photo/adain.png")
    assert {survey.PAGE_NAME, survey.KEY_NAME, "compare.json", "survey-results.json"} <= set(CompareRun.OWN)
