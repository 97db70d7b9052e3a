"""Library errors name settings, each front end names them its own way; one table of bounds.

Why: the library is called by the CLI (flags), the app (field labels) and scripts (keyword
arguments). A library message that says `--lr` reads wrong in the app, and two front ends that
check the same number against different bounds (the app once took 16 vectors and 32-bit seeds,
the CLI 75 and 64-bit) refuse and accept different things.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from classic import limits
from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.generate import GenerateConfig, check_config
from styleprompt.diffusion.training import check_config as check_train_config
from styleprompt.plumbing.errors import SettingError, UserError, cli_flag, cli_message

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "styleprompt" / "diffusion", ROOT / "styleprompt" / "evaluation", ROOT / "classic"]


def test_a_setting_error_names_the_setting_and_each_front_end_renames_it() -> None:
    error = SettingError("init_word", "{setting} 'x' gives no tokens; change {setting}")
    assert str(error) == "init_word 'x' gives no tokens; change init_word"
    assert error.named("Initializer word").startswith("Initializer word 'x'")
    assert cli_message(error) == "--init-word 'x' gives no tokens; change --init-word"
    assert cli_message(SettingError("fmt", "{setting} sdxl holds two"), {"fmt": "--to"}) == "--to sdxl holds two"
    assert cli_flag("--size") == "--size"  # a caller that only had a flag keeps it
    assert cli_message(UserError("plain")) == "plain"


def test_training_checks_name_settings_and_the_cli_shows_the_flags(tmp_path: Path) -> None:
    base = dict(images=str(tmp_path), output=str(tmp_path / "run"), model="tiny")
    cases = {
        "lr": (dict(lr=0.0), "lr must be a positive number (got 0.0)"),
        "vectors": (dict(vectors=100), "vectors 100 is out of range: use 1 to 75 (a CLIP prompt holds 75 tokens)"),
        "grad_accum": (dict(grad_accum=0), "grad_accum must be at least 1 (got 0)"),
        "resolution": (dict(resolution=-8), "resolution -8 is out of range: use 64 to 1024"),
        "seed": (dict(seed=-1), "seed -1 is out of range"),
    }
    for setting, (values, library_text) in cases.items():
        with pytest.raises(SettingError) as caught:
            check_train_config(TrainConfig(**base, **values))
        assert caught.value.setting == setting
        assert str(caught.value).startswith(library_text)
        assert cli_message(caught.value).startswith("--" + library_text.replace("grad_accum", "grad-accum"))


def test_generation_checks_read_the_bounds_table() -> None:
    for setting, value in (("guidance", 50.5), ("strength", -0.1), ("style_scale", 10.5), ("steps", 0)):
        with pytest.raises(SettingError) as caught:
            check_config(GenerateConfig(prompt="x", **{setting: value}))
        bound = limits.BOUNDS[setting]
        assert caught.value.setting == setting
        assert str(caught.value) == f"{setting} must be between {bound.low:g} and {bound.high:g} (got {value})"
    with pytest.raises(SettingError, match=r"^count 101 is out of range: use 1 to 100"):
        check_config(GenerateConfig(prompt="x", count=101))
    with pytest.raises(SettingError, match=r"^width 100 is not a multiple of 8: use 96"):
        check_config(GenerateConfig(prompt="x", width=100, height=96))


def test_the_cli_shows_flags_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from styleprompt.cli import main

    art = tmp_path / "art"
    art.mkdir()
    code = main(["train", "--images", str(art), "--model", "tiny", "--output", str(tmp_path / "r"), "--lr", "0"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: --lr must be a positive number (got 0.0)"


@pytest.mark.slow  # imports gradio
def test_the_app_shows_field_labels() -> None:
    from styleprompt.ui.common import user_message

    error = SettingError("lr", "{setting} must be a positive number (got 0.0)")
    assert user_message(error) == "Learning rate must be a positive number (got 0.0)"
    assert user_message(SettingError("some_setting", "{setting} is odd")) == "some_setting is odd"


def _raised_messages(path: Path) -> list[tuple[int, str]]:
    """The leading text of every message a `raise X(...)` in `path` builds from a string."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            args = node.exc.args
            first = (
                args[1]
                if len(args) > 1 and isinstance(node.exc.func, ast.Name) and node.exc.func.id == "SettingError"
                else args[0]
            )
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
            elif isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
                found.append((node.lineno, str(first.values[0].value)))
    return found


def test_no_library_error_opens_with_a_flag() -> None:
    """`--lr must be ...` in the library is the CLI's wording leaking into the app and scripts."""
    opening = []
    for folder in LIBRARY:
        for path in sorted(folder.glob("*.py")):
            if path.name == "train_adain.py":  # classic.train_adain's own argparse main lives in it
                continue
            opening += [
                f"{path.relative_to(ROOT)}:{line}: {text[:50]}"
                for line, text in _raised_messages(path)
                if re.match(r"-{2}\w", text)
            ]
    assert not opening, (
        "library errors that open with a flag (raise SettingError(setting, '{setting} ...')):\n" + "\n".join(opening)
    )


@pytest.mark.slow  # imports gradio, builds every tab
def test_the_app_fields_take_their_ranges_from_the_bounds_table(tmp_path: Path) -> None:
    """The app's sliders and number fields span the table's range (narrowed only by a server cap)."""
    pytest.importorskip("gradio")
    from styleprompt.ui import build_app
    from styleprompt.ui.serve import AppSettings

    settings = AppSettings(model="tiny", output_dir=tmp_path / "out")
    demo = build_app(settings)
    fields = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}

    def span(elem_id: str) -> tuple[float, float]:
        return fields[elem_id].minimum, fields[elem_id].maximum

    assert span("train-vectors") == limits.span("vectors")
    assert span("train-resolution")[1] == limits.BOUNDS["resolution"].high
    assert span("gen-guidance") == limits.span("guidance")
    assert span("gen-style-scale") == limits.span("style_scale")
    assert span("gen-strength") == limits.span("strength")
    assert span("gen-count") == limits.span("count", settings.max_batch)
    assert span("gen-steps") == limits.span("steps", settings.max_gen_steps)
    assert span("classic-alpha") == limits.span("alpha")
    assert span("classic-size") == limits.span("size")
    assert span("cmp-size") == limits.span("size")
    assert span("cmp-strength") == limits.span("strength")
