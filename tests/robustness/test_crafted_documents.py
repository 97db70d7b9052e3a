"""Crafted documents read as data: generated PNGs' parameter chunks, embedding metadata and dtypes,
compare.json read by `survey` (pictures only from inside its own run folder), rater answer
files and survey keys, pick's config.json. Each is validated once where it is read: a one-line
error with exit code 2, never a traceback, and a survey page never embeds an outside file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from styleprompt.cli import main
from styleprompt.diffusion.generate import PARAMS_KEY
from styleprompt.evaluation.survey import ANSWERS_FORMAT
from tests.test_survey import fake_compare_run


def one_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]


# -- generate --from-png ----------------------------------------------------------------------------

GOOD = {
    "model": "tiny",
    "prompt_template": "a <t>",
    "steps": 1,
    "guidance": 7.5,
    "scheduler": "ddim",
    "seed": 1,
    "width": 64,
    "height": 64,
}
CHUNKS = {
    "null": ("null", "NoneType, not an object"),
    "a list": ("[1, 2]", "list, not an object"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "nests 100000 levels deep"),
    "missing keys": (json.dumps({"model": "tiny"}), "lacks 'prompt_template'"),
    "steps a string": (json.dumps(dict(GOOD, steps="abc")), "'steps' is str"),
    "seed a bool": (json.dumps(dict(GOOD, seed=True)), "'seed' is bool"),
    "embeddings of numbers": (json.dumps(dict(GOOD, embeddings=[5])), "a token entry"),
    "token files not text": (json.dumps(dict(GOOD, embeddings=[{"token": "<t>", "files": [1]}])), "'files'"),
    "unknown mode": (json.dumps(dict(GOOD, mode="x" * 500)), "neither txt2img nor img2img"),
    "huge seed": (json.dumps(dict(GOOD, seed=2**70)), "--seed"),
}


@pytest.mark.parametrize("name", list(CHUNKS))
def test_from_png_chunks(name, tmp_path, capsys, monkeypatch):
    import styleprompt.diffusion.models as models

    chunk, says = CHUNKS[name]
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMS_KEY, chunk)
    png = tmp_path / "g.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    if name != "huge seed":  # every other chunk is refused before a model loads
        monkeypatch.setattr(models, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model first"))
    line = one_line(capsys, ["generate", "--from-png", str(png), "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert says in line, line


# -- embedding files ------------------------------------------------------------------------------


def test_odd_step_metadata_is_ignored(tmp_path, capsys):
    for value in ("²", "9" * 5000, "-3", " 12"):
        path = tmp_path / "odd.safetensors"
        save_file({"<t>": torch.randn(2, 32)}, str(path), metadata={"styleprompt.step": value})
        assert main(["inspect", str(path)]) == 0
        assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.int8, torch.bool])
def test_vectors_of_other_dtypes_are_refused(dtype, tmp_path, capsys):
    path = tmp_path / "f8.safetensors"
    save_file({"<t>": torch.randn(2, 32).to(dtype)}, str(path))
    line = one_line(capsys, ["inspect", str(path)])
    assert str(dtype).replace("torch.", "") in line and "float32" in line


def test_float8_in_generate(tmp_path, capsys):
    path = tmp_path / "f8.safetensors"
    save_file({"<t>": torch.randn(2, 32).to(torch.float8_e4m3fn)}, str(path))
    line = one_line(
        capsys,
        [
            "generate",
            "--model",
            "tiny",
            "--embedding",
            str(path),
            "--prompt",
            "a <t>",
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
    )
    assert "float8_e4m3fn" in line


# -- survey: compare.json may name only the run's own pictures ----------------------------------------


def _secret(path: Path) -> Path:
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path)
    return path


def _point_first_cell(run: Path, name: str) -> None:
    manifest = json.loads((run / "compare.json").read_text())
    manifest["cells"][0]["image"] = name
    (run / "compare.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", ["absolute", "dot-dot", "link inside", "style absolute"])
def test_survey_reads_only_its_own_folder(how, tmp_path, capsys):
    secret = _secret(tmp_path / "private.png")
    run = fake_compare_run(tmp_path / "cmp")
    if how == "absolute":
        _point_first_cell(run, str(secret))
    elif how == "dot-dot":
        _point_first_cell(run, "../private.png")
    elif how == "link inside":
        os.symlink(secret, run / "images" / "link.png")
        _point_first_cell(run, "images/link.png")
    else:
        manifest = json.loads((run / "compare.json").read_text())
        manifest["styles"] = [str(secret)]
        (run / "compare.json").write_text(json.dumps(manifest))
    line = one_line(capsys, ["survey", str(run)])
    assert "outside its run folder" in line
    assert not (run / "survey.html").exists()


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: m.update(cells={"a": 1}), "'cells'"),
        (lambda m: m["cells"][0].update(content_index=[1]), "content_index"),
        (lambda m: m.update(styles=[1]), "'styles'"),
        (lambda m: m.update(labels=[1]), "'labels'"),
        (lambda m: m["cells"][0].update(image="images/none.png"), "not in"),
    ],
)
def test_survey_manifest_shapes(change, says, tmp_path, capsys):
    run = fake_compare_run(tmp_path / "cmp")
    manifest = json.loads((run / "compare.json").read_text())
    change(manifest)
    (run / "compare.json").write_text(json.dumps(manifest))
    assert says in one_line(capsys, ["survey", str(run)])


@pytest.mark.parametrize(
    "answers, says",
    [
        ("not a list", "damaged survey answers"),
        ([1, 2], "damaged survey answers"),
        ([{"pair": "p001", "style": ["A"]}], "expected A, B or tie"),
    ],
)
def test_rater_answer_files(answers, says, tmp_path, capsys):
    run = fake_compare_run(tmp_path / "cmp")
    assert main(["survey", str(run)]) == 0
    capsys.readouterr()
    key = json.loads((run / "survey-key.json").read_text())
    path = tmp_path / "answers.json"
    path.write_text(
        json.dumps(
            {
                "format": ANSWERS_FORMAT,
                "survey_id": key["survey_id"],
                "response_id": "r",
                "saved": "x",
                "answers": answers,
            }
        )
    )
    assert says in one_line(capsys, ["survey-results", str(run / "survey-key.json"), str(path)])


def test_damaged_survey_key(tmp_path, capsys):
    run = fake_compare_run(tmp_path / "cmp")
    assert main(["survey", str(run)]) == 0
    capsys.readouterr()
    key = json.loads((run / "survey-key.json").read_text())
    key["pairs"] = [{"id": 1}]
    (run / "survey-key.json").write_text(json.dumps(key))
    (tmp_path / "a.json").write_text("{}")
    assert "damaged survey key" in one_line(capsys, ["survey-results", str(run), str(tmp_path / "a.json")])


# -- pick's config.json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, says",
    [
        (b"[1, 2]", "holds a list"),
        (b'{"model": 5}', "'model' is 5, not text"),
        (b'{"images": ["a"]}', "'images' is ['a'], not text"),
        (b"\xff\xfe{}", "cannot read"),
    ],
)
def test_pick_config(content, says, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "embeddings").mkdir(parents=True)
    save_file({"<t>": torch.randn(2, 32)}, str(run / "embeddings" / "step-000002.safetensors"))
    (run / "config.json").write_bytes(content)
    line = one_line(capsys, ["pick", "--run", str(run), "--device", "cpu"])
    assert says in line and "config.json" in line
