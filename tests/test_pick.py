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
    assert [s.validation for s in result.scores] == [float(r["val_loss"]) for r in rows]  # loss.csv's, shown


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


def _logged_validation(run: Path) -> dict[int, float]:
    with open(run / "loss.csv", newline="") as handle:
        return {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(handle) if r["val_loss"]}


@pytest.mark.slow
def test_quick_pick_ranks_by_the_validation_loss_training_logged(tiny_run, tmp_path, capsys):
    """--quick paints nothing: it rebuilds the run's validation set and scores each saved
    embedding on it, and the numbers are the ones training wrote into loss.csv at those steps."""
    from styleprompt.evaluation.pick import quick_pick

    logged = _logged_validation(tiny_run)
    assert sorted(logged) == [2, 4, 6]  # validation follows --save-every by default
    result = quick_pick(tiny_run, output=tmp_path / "quick", device="cpu", show_progress=False)
    assert [r.step for r in result.rows] == [2, 4, 6]
    for row in result.rows:
        assert row.seen == pytest.approx(logged[row.step], rel=1e-5, abs=1e-6)
        assert row.held_out is None  # 3 artworks: none held out
    assert result.recommended in result.rows and result.csv.is_file() and result.plot.is_file()
    assert json.loads(result.json.read_text())["recommended_step"] == result.recommended.step
    code = cli.main(["pick", "--run", str(tiny_run), "--quick", "--output", str(tmp_path / "cli"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and out.strip().splitlines()[-1] == f"recommended: {result.recommended.path}"
    assert not (tmp_path / "cli" / "images").exists()  # nothing painted


def test_plateau_start_is_the_earliest_step_near_the_minimum():
    from styleprompt.evaluation.pick import QuickRow, plateau_start

    rows = [QuickRow(step, f"{step}", 0.0, None) for step in (10, 20, 30, 40)]
    assert plateau_start(rows, [1.0, 0.6, 0.49, 0.4901]).step == 30  # within 5% of the fall of 0.51
    assert plateau_start(rows, [1.0, 0.9, 0.8, 0.7]).step == 40  # still falling: the last
    assert plateau_start(rows, [0.5, 0.5, 0.5, 0.5]).step == 10  # flat: the earliest


@pytest.mark.slow
def test_batched_pictures_are_the_pictures_generate_paints(tiny_run):
    """pick paints many candidates' pictures in one UNet call; each is still generate's picture
    for its prompt and seed (batched arithmetic may differ in the last bits)."""
    from styleprompt.diffusion.generate import GenerateConfig, generate
    from styleprompt.diffusion.models import load_pipeline
    from styleprompt.evaluation.pick import _Job, _Painter

    loaded = load_pipeline("tiny", device="cpu")
    painter = _Painter(loaded, 3)
    prompts = ["a painting of a dog", "a painting of a city", "a painting of a tree"]
    jobs = [_Job(-1, "x", seed, p, e) for seed, p, e in zip((0, 5, 9), prompts, painter.encode(loaded, prompts))]
    ticks: list[float] = []
    batched = painter.paint(jobs, ticks.append)
    assert sum(ticks) == pytest.approx(3.0)  # the bar counts whole pictures
    for job, picture in zip(jobs, batched):
        alone = generate(loaded, GenerateConfig(prompt=job.prompt, seed=job.seed, steps=3), show_progress=False)[0]
        diff = np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(alone.image, dtype=np.int16))
        assert diff.max() <= 2, diff.max()


def test_full_pick_shows_the_logged_validation_loss(tiny_run, tmp_path):
    from styleprompt.evaluation.pick import validation_by_step

    assert validation_by_step(tiny_run) == _logged_validation(tiny_run)
    assert validation_by_step(tmp_path) == {}  # no loss.csv: an older or copied run
