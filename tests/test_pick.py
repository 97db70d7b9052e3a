"""The best-checkpoint picker: scores every saved embedding of a tiny training run, plots the
trade-off, and recommends a Pareto-optimal file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleprompt import cli
from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.training import train
from styleprompt.evaluation.pick import (
    CheckpointScore,
    leak_fidelity,
    mark_recommendation,
    pick_checkpoint,
    run_embeddings,
)
from styleprompt.plumbing.errors import UserError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 6-step tiny run that saves its embedding at steps 2, 4 and 6."""
    from tests.conftest import make_artworks

    root = tmp_path_factory.mktemp("pick")
    art = make_artworks(root / "art")
    cfg = TrainConfig(
        images=str(art),
        token="<pk>",
        model="tiny",
        output=str(root / "run"),
        steps=6,
        vectors=2,
        grad_accum=1,
        lr=5e-2,
        save_every=2,
        checkpoint_every=0,
        preview_every=0,
        device="cpu",
    )
    result = train(cfg)
    return result.output_dir


def score(step, style, fidelity):
    return CheckpointScore(step, f"step-{step}.safetensors", style, fidelity)


def test_recommendation_is_pareto_optimal_and_balanced():
    scores = [score(100, 0.10, 0.90), score(200, 0.50, 0.80), score(300, 0.90, 0.10), score(400, 0.40, 0.70)]
    best = mark_recommendation(scores)
    assert best.step == 200  # normalised sums: 1.0, 1.375, 1.0, 1.1
    assert [s.pareto for s in scores] == [True, True, True, False]  # 400 is dominated by 200


def test_ties_go_to_the_earlier_step():
    scores = [score(10, 0.5, 0.5), score(20, 0.5, 0.5)]
    assert mark_recommendation(scores).step == 10
    flat = [score(5, 0.3, 0.4)]
    assert mark_recommendation(flat).step == 5


def test_leak_proxy_is_low_when_every_subject_gives_the_same_picture():
    rng = np.random.default_rng(0)
    one = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    others = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    leaked = leak_fidelity({0: [one, one.copy(), one.copy()]})
    varied = leak_fidelity({0: others})
    assert leaked == pytest.approx(0.0, abs=1e-4)
    assert varied > 0.5 > leaked


@pytest.mark.slow
def test_lists_the_intermediate_embeddings(tiny_run):
    found = run_embeddings(tiny_run)
    assert [step for step, _ in found] == [2, 4, 6]  # the final file is step 6, already listed
    assert all(path.parent.name == "embeddings" for _, path in found)


@pytest.mark.slow
def test_pick_scores_every_checkpoint_and_writes_the_plot(tiny_run, tmp_path):
    result = pick_checkpoint(
        tiny_run,
        classes=["lighthouse", "dog"],
        seeds=[0],
        steps=2,
        output=tmp_path / "pick",
        device="cpu",
        show_progress=False,
    )
    assert result.plot.parent == tmp_path / "pick"
    assert [s.step for s in result.scores] == [2, 4, 6]
    assert result.recommended in result.scores and result.recommended.pareto
    for s in result.scores:
        assert -1.0 <= s.style <= 1.0 and 0.0 <= s.fidelity <= 2.0
        assert len(s.images) == 2 and all(Path(p).is_file() for p in s.images)
    assert len({round(s.style, 9) for s in result.scores}) > 1  # the checkpoints differ, so do their scores
    plot = Image.open(result.plot)
    assert plot.format == "PNG" and plot.width > 600
    with open(result.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["recommended"] for r in rows].count("True") == 1
    doc = json.loads(result.json.read_text())
    assert doc["recommended"] == result.recommended.path and "proxy" in doc["fidelity_metric"]
    assert result.baseline_fidelity is not None and Image.open(result.sheet).height > 3 * 100


def copy_run(run: Path, dest: Path, steps: list[int], **config_changes) -> Path:
    """A run folder with only some of the saved embeddings (and maybe a changed config.json)."""
    (dest / "embeddings").mkdir(parents=True)
    for step, path in run_embeddings(run):
        if step in steps:
            (dest / "embeddings" / path.name).write_bytes(path.read_bytes())
    config = json.loads((run / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(dict(config, **config_changes)))
    return dest


@pytest.mark.slow
def test_cli_pick_names_the_recommended_file(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run", [6])  # one checkpoint keeps the CLI check quick
    code = cli.main(["pick", "--run", str(run), "--class", "tree", "cat", "--steps", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    recommended = out.strip().splitlines()[-1]
    assert recommended == f"recommended: {run / 'embeddings' / 'step-000006.safetensors'}"
    assert (run / "pick" / "pick.png").is_file() and (run / "pick" / "pick.json").is_file()


@pytest.mark.slow
def test_errors_are_one_line(tiny_run, tmp_path, capsys):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no embeddings"):
        pick_checkpoint(empty)
    with pytest.raises(UserError, match="at least two --class"):
        pick_checkpoint(tiny_run, classes=["dog"])
    moved = copy_run(tiny_run, tmp_path / "moved", [2, 4, 6], images="/nowhere/art")
    assert cli.main(["pick", "--run", str(moved)]) == 2
    assert "--images" in capsys.readouterr().err
