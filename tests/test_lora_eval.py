"""Pivotal tuning's token + LoRA pair where the token alone was evaluated: `compare`'s token columns
(through the method's own `--lora` source), `pick`'s (token, LoRA) pairs per step, and the A1111
embedding file written beside the kohya LoRA. Tiny random models, offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from styleprompt.diffusion.formats import read_embedding
from styleprompt.diffusion.training import train
from styleprompt.diffusion.training_run import TrainingRun
from tests.test_lora import lora_config


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> TrainingRun:
    """A 2-step pivotal run on tiny SD with a snapshot (token + LoRA) at each step; a large LoRA
    learning rate, so the LoRA visibly changes what the model paints."""
    from tests.conftest import make_artworks

    root = tmp_path_factory.mktemp("lora-eval")
    art = make_artworks(root / "art", 3)
    train(lora_config(art, root / "run", steps=2, save_every=1, validate_every=1, checkpoint_every=0, lora_lr=0.3))
    return TrainingRun(root / "run")


# -- the A1111 embedding beside the kohya LoRA --------------------------------------------------------


def _same_vectors(a, b) -> None:
    assert a.token == b.token
    assert len(a.parts()) == len(b.parts())
    for x, y in zip(a.parts(), b.parts()):
        assert torch.equal(x.float(), y.float())


def test_a_lora_run_writes_the_webui_embedding_beside_the_kohya_lora(lora_run):
    from safetensors.torch import load_file

    path = lora_run.webui_embedding
    assert path.is_file() and path.parent == lora_run.kohya_lora.parent
    assert list(load_file(str(path))) == ["emb_params"]  # A1111's own safetensors layout, one key
    _same_vectors(read_embedding(path), read_embedding(lora_run.embedding))


def test_an_sdxl_lora_run_writes_clip_l_and_clip_g(tmp_path):
    from safetensors.torch import load_file

    from tests.conftest import make_artworks

    art = make_artworks(tmp_path / "art", 2)
    train(lora_config(art, tmp_path / "run", model="tiny-sdxl", steps=1, save_every=0, checkpoint_every=0))
    run = TrainingRun(tmp_path / "run")
    assert sorted(load_file(str(run.webui_embedding))) == ["clip_g", "clip_l"]
    _same_vectors(read_embedding(run.webui_embedding), read_embedding(run.embedding))


def test_a_token_only_run_writes_no_webui_embedding(tmp_path):
    from tests.conftest import make_artworks

    art = make_artworks(tmp_path / "art", 2)
    train(lora_config(art, tmp_path / "run", adapter="none", steps=1, save_every=0, checkpoint_every=0))
    run = TrainingRun(tmp_path / "run")
    assert run.embedding.is_file() and not run.webui_embedding.exists()


# -- compare: the token methods with their LoRA ---------------------------------------------------------


def _compare(run: TrainingRun, out: Path, *extra: str) -> int:
    from styleprompt import cli
    from tests.conftest import make_artworks

    art = make_artworks(out.parent / f"{out.name}-art", 2, size=(96, 80))
    content = sorted(art.iterdir())[0]
    return cli.main(
        ["compare", "--model", "tiny", "--content", str(content), "--style-images", str(art)]
        + ["--embedding", str(run.embedding), "--class", "a city", "--output", str(out)]
        + ["--methods", "token-txt2img,token-img2img", "--size", "64", "--steps", "2", "--cell-size", "64"]
        + ["--no-metrics", "--device", "cpu", *extra]
    )


def _cells(out: Path) -> dict[str, np.ndarray]:
    from styleprompt.evaluation.compare import read_manifest

    manifest = read_manifest(out)
    return {c["method"]: np.asarray(Image.open(out / c["image"]).convert("RGB")).astype(int) for c in manifest["cells"]}


@pytest.mark.slow
def test_compare_paints_the_token_columns_with_the_lora_and_says_so(lora_run, tmp_path, capsys):
    """`--lora` is the token methods' own source: both columns are painted with it (a LoRA recorded
    but not applied would paint the token-only pixels), labelled token + LoRA, and the manifest,
    the report and each PNG record the file, its hash and its scale."""
    from styleprompt.diffusion.tokens import file_sha256
    from styleprompt.evaluation.compare import read_manifest

    assert _compare(lora_run, tmp_path / "plain") == 0
    assert _compare(lora_run, tmp_path / "lora", "--lora", f"{lora_run.lora}:0.8") == 0
    plain, with_lora = _cells(tmp_path / "plain"), _cells(tmp_path / "lora")
    assert set(plain) == set(with_lora) == {"token-txt2img", "token-img2img"}
    for method in plain:
        assert np.abs(plain[method] - with_lora[method]).max() > 8, method  # more than rounding: the LoRA painted

    manifest = read_manifest(tmp_path / "lora")
    assert manifest["labels"] == {
        "token-txt2img": "token text\u2192image + LoRA",
        "token-img2img": "token image\u2192image + LoRA",
    }
    assert set(manifest["status"].values()) == {"ok"}
    for method in plain:
        networks = manifest["networks"][method]
        assert networks["lora"] == str(lora_run.lora.resolve()) and networks["lora_scale"] == "0.8"
        assert networks["lora_sha256"] == file_sha256(lora_run.lora, length=64)
    plain_manifest = read_manifest(tmp_path / "plain")
    assert "LoRA" not in "".join(plain_manifest["labels"].values())
    assert not any("lora" in n for n in plain_manifest["networks"]["token-txt2img"])
    assert "+ LoRA" in (tmp_path / "lora" / "metrics.md").read_text() + (tmp_path / "lora" / "report.html").read_text()
    png = next(c["image"] for c in manifest["cells"] if c["method"] == "token-txt2img")
    assert Image.open(tmp_path / "lora" / png).text["lora_sha256"] == networks["lora_sha256"]


def test_a_bad_lora_for_compare_is_one_line_and_exit_2(lora_run, tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"some.other.weight": torch.zeros(2)}, str(tmp_path / "unknown.safetensors"))
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    for bad, says in [
        (tmp_path / "missing.safetensors", "no such file"),
        (tmp_path / "unknown.safetensors", "not a kohya LoRA"),
        (tmp_path / "text.safetensors", "not a readable safetensors file"),
    ]:
        capsys.readouterr()
        assert _compare(lora_run, tmp_path / f"out-{bad.stem}", "--lora", str(bad)) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and "--lora" in err[0], err
        assert not (tmp_path / f"out-{bad.stem}" / "compare.json").exists()  # refused before anything ran


# -- pick: (token, LoRA) pairs --------------------------------------------------------------------------


def _tokens_only(run: TrainingRun, dest: Path) -> TrainingRun:
    """The same run with its LoRA files removed: what pick scored before pairs (the tokens alone)."""
    import shutil

    shutil.copytree(run.folder, dest)
    copy = TrainingRun(dest)
    for step, _ in copy.step_embeddings():
        copy.step_lora(step).unlink()
    copy.lora.unlink()
    return copy


def test_pick_scores_each_step_with_its_lora_and_recommends_the_pair(lora_run, tmp_path):
    from styleprompt.diffusion.models import load_pipeline
    from styleprompt.evaluation.pick import pick_checkpoint, run_pairs
    from tests.test_app import lora_layers

    assert run_pairs(lora_run.folder) == [(s, p, lora_run.step_lora(s)) for s, p in lora_run.step_embeddings()]
    common = dict(classes=["lighthouse", "dog"], seeds=[0], steps=2, device="cpu", show_progress=False)
    model = load_pipeline("tiny", device="cpu")  # lent by the caller: its UNet must come back without a LoRA
    pairs = pick_checkpoint(lora_run.folder, model=model, output=tmp_path / "pairs", **common)
    alone = pick_checkpoint(_tokens_only(lora_run, tmp_path / "alone").folder, output=tmp_path / "alone-pick", **common)
    assert lora_layers(model.pipe.unet) == 0
    assert [s.step for s in pairs.scores] == [s.step for s in alone.scores] == [1, 2]
    for paired, token in zip(pairs.scores, alone.scores):
        assert paired.lora == str(lora_run.step_lora(paired.step)) and token.lora is None
        assert paired.style != token.style  # the LoRA painted: a LoRA named but not applied scores as the token
        first = np.asarray(Image.open(paired.images[0]).convert("RGB")).astype(int)
        assert np.abs(first - np.asarray(Image.open(token.images[0]).convert("RGB")).astype(int)).max() > 8
        assert Image.open(paired.images[0]).text["lora"] == paired.lora
    best = pairs.recommended
    assert best.lora == str(lora_run.step_lora(best.step))
    doc = json.loads(pairs.json.read_text())
    assert doc["recommended"] == best.path and doc["recommended_lora"] == best.lora and "LoRA" in doc["candidates"]
    with open(pairs.csv, newline="") as handle:
        assert [r["lora"] for r in csv.DictReader(handle)] == [s.lora for s in pairs.scores]
    assert json.loads(alone.json.read_text())["recommended_lora"] is None


@pytest.mark.slow
def test_quick_pick_scores_the_pairs_training_validated(lora_run, tmp_path, capsys):
    """Each pair's validation loss is the one training logged at that step with its LoRA in the
    model; the tokens alone score otherwise. The CLI names the pair, the token file last."""
    from styleprompt import cli
    from styleprompt.evaluation.pick import quick_pick

    with open(lora_run.loss_log, newline="") as handle:
        logged = {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(handle) if r["val_loss"]}
    result = quick_pick(lora_run.folder, output=tmp_path / "quick", device="cpu", show_progress=False)
    alone = quick_pick(_tokens_only(lora_run, tmp_path / "alone").folder, device="cpu", show_progress=False)
    assert [r.step for r in result.rows] == sorted(logged) == [1, 2]
    for paired, token in zip(result.rows, alone.rows):
        assert paired.seen == pytest.approx(logged[paired.step], rel=1e-5, abs=1e-6)
        assert paired.lora == str(lora_run.step_lora(paired.step)) and token.lora is None
        assert abs(paired.seen - token.seen) > 1e-6
    assert json.loads(result.json.read_text())["recommended_lora"] == result.recommended.lora
    assert cli.main(["pick", "--run", str(lora_run.folder), "--quick", "--output", str(tmp_path / "cli")]) == 0
    *_, lora_line, token_line = capsys.readouterr().out.strip().splitlines()
    assert token_line == f"recommended: {result.recommended.path}"
    assert lora_line.endswith(f": {result.recommended.lora}") and lora_line.startswith("recommended LoRA")


def test_a_lora_of_another_family_skips_the_token_columns_with_the_reason(lora_run, tmp_path, capsys):
    """Which family a LoRA fits is known once the model is loaded: the token columns are skipped
    with that reason, in words that name no flag, and the comparison goes on."""
    from styleprompt.evaluation.compare import read_manifest
    from tests.conftest import make_artworks

    art = make_artworks(tmp_path / "art", 2)
    train(lora_config(art, tmp_path / "sdxl", model="tiny-sdxl", steps=1, save_every=0, checkpoint_every=0))
    sdxl_lora = TrainingRun(tmp_path / "sdxl").lora
    assert _compare(lora_run, tmp_path / "out", "--lora", str(sdxl_lora)) == 0
    status = read_manifest(tmp_path / "out")["status"]
    for method in ("token-txt2img", "token-img2img"):
        assert status[method].startswith("skipped") and "the LoRA" in status[method], status
