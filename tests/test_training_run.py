"""TrainingRun: the one owner of a training run folder's names, config.json and recipe check."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.training_run import (
    RECIPE,
    TrainingRun,
    artworks_digest,
    recipe_differences,
    step_name,
    step_of,
)
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.run_folder import run_folder_lock
from tests.conftest import make_artworks


def test_one_function_writes_and_parses_the_step_names():
    assert step_name(250, ".safetensors") == "step-000250.safetensors"
    assert step_of(step_name(250, ".safetensors"), ".safetensors") == 250
    assert step_of(step_name(1234567), "") == 1234567  # past six digits the name just grows
    assert step_of("step-000250.png", ".safetensors") is None
    assert step_of("step-x.safetensors", ".safetensors") is None and step_of("notes.txt") is None
    run = TrainingRun("/r")
    assert run.step_embedding(2) == Path("/r/embeddings/step-000002.safetensors")
    assert run.preview(0) == Path("/r/previews/step-000000.png")
    assert TrainingRun.pick_image("/p", 6, "dog-seed0.png") == Path("/p/images/step-000006/dog-seed0.png")


def test_own_lists_every_name_the_class_declares():
    """--overwrite removes what OWN lists; a new constant (a LoRA file) is in it with no other edit."""
    declared = {v for k, v in vars(TrainingRun).items() if k.isupper() and isinstance(v, str)}
    assert set(TrainingRun.OWN) == declared
    assert {"learned_embeds.safetensors", "config.json", "checkpoints", "pick"} <= declared
    assert "images" not in declared  # a name users give their artworks' folder: never removed


def test_step_embeddings_ignores_other_files(tmp_path):
    run = TrainingRun(tmp_path)
    (tmp_path / "embeddings").mkdir()
    for name in ("step-000004.safetensors", "step-000002.safetensors", "notes.safetensors", "step-000003.png"):
        (tmp_path / "embeddings" / name).write_bytes(b"")
    assert [s for s, _ in run.step_embeddings()] == [2, 4]


def _config(tmp_path: Path, **changes) -> TrainConfig:
    base = dict(images=str(tmp_path / "art"), model="tiny", output=str(tmp_path / "run"), steps=4)
    return TrainConfig(**{**base, **changes})


def test_config_json_records_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = TrainingRun("run")
    run.folder.mkdir()
    run.write_config(TrainConfig(images="art", model="tiny", output="run"), resolution=32)
    recorded = run.read_config()
    assert recorded["images"] == str(tmp_path / "art") and recorded["resolution"] == 32
    (tmp_path / "art").mkdir()
    monkeypatch.chdir("/")  # pick from elsewhere finds the artworks by the recorded path alone
    assert TrainingRun(tmp_path / "run").artworks_folder(recorded) == tmp_path / "art"


@pytest.mark.parametrize(
    "text, says",
    [
        ("[1, 2]", "holds a list"),
        ("{", "cannot read"),
        ('{"lr": "0.1"}', "'lr' is \"0.1\", not a number"),
        ('{"seed": true}', "'seed' is True, not a whole number"),
        ('{"model": 5}', "'model' is 5, not text"),
        ('{"lr": NaN}', "not a finite number"),
        ('{"cpu_threads": -1}', "'cpu_threads' is -1, not a whole number of at least 1"),
        ('{"cpu_threads": "4096"}', "'cpu_threads' is \"4096\""),
        ("[" * 100000 + "]" * 100000, "cannot read"),
    ],
)
def test_a_damaged_config_is_refused_in_one_line(tmp_path, text, says):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(UserError) as caught:
        TrainingRun(tmp_path).read_config()
    message = str(caught.value)
    assert says in message and "config.json" in message and "\n" not in message, message


def test_an_oversized_config_is_refused_unread(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"notes": "x" * (2 << 20)}))
    with pytest.raises(UserError, match="bytes, not a run's settings"):
        TrainingRun(tmp_path).read_config()


def test_unknown_keys_are_left_alone_and_a_missing_file_is_empty(tmp_path):
    assert TrainingRun(tmp_path).read_config() == {}
    (tmp_path / "config.json").write_text('{"validation_every": 5, "cpu_threads": 4096}')
    assert TrainingRun(tmp_path).read_config()["cpu_threads"] == 4096  # bounded by the machine at resume


def test_recipe_differences_name_each_setting(tmp_path):
    recorded = _config(tmp_path).to_dict()
    asked = _config(tmp_path, seed=1, lr=1e-2, grad_accum=2)
    assert recipe_differences(recorded, asked) == ["grad_accum 4 -> 2", "lr 0.005 -> 0.01", "seed 0 -> 1"]
    assert recipe_differences(recorded, _config(tmp_path, save_every=1, device="cpu", preview_every=0)) == []
    with pytest.raises(UserError) as caught:
        TrainingRun(tmp_path / "run").check_resume(asked, recorded)
    message = str(caught.value)
    assert "seed 0 -> 1" in message and "--overwrite" in message and "new run" in message and "\n" not in message


def test_every_recipe_setting_is_compared(tmp_path):
    recorded = _config(tmp_path).to_dict()
    for key in RECIPE:
        value = recorded[key]
        other = (
            (not value)
            if isinstance(value, bool)
            else value + 1
            if isinstance(value, (int, float))
            else ("constant_with_warmup" if key == "lr_scheduler" else f"{value}-other")
        )
        assert [d.split(" ")[0] for d in recipe_differences(recorded, _config(tmp_path, **{key: other}))] == [key]


def test_more_steps_continue_a_constant_schedule_but_not_a_linear_one(tmp_path):
    constant = _config(tmp_path).to_dict()
    assert recipe_differences(constant, _config(tmp_path, steps=8)) == []
    linear = _config(tmp_path, lr_scheduler="linear").to_dict()
    assert recipe_differences(linear, _config(tmp_path, lr_scheduler="linear", steps=8)) == [
        "steps 4 -> 8 (the linear schedule's length)"
    ]


def test_resolution_and_artworks(tmp_path):
    art = make_artworks(tmp_path / "art", 2)
    digest = artworks_digest(sorted(art.iterdir()))
    recorded = dict(_config(tmp_path).to_dict(), resolution=32, images_digest=digest)
    assert recipe_differences(recorded, _config(tmp_path), images_digest=digest, resolution=32) == []
    assert recipe_differences(recorded, _config(tmp_path), resolution=64) == ["resolution 32 -> 64"]
    assert recipe_differences(recorded, _config(tmp_path, resolution=64)) == ["resolution 32 -> 64"]
    moved = tmp_path / "moved"
    art.rename(moved)  # the same pictures elsewhere: the same recipe
    same = artworks_digest(sorted(moved.iterdir()))
    assert recipe_differences(recorded, _config(tmp_path, images=str(moved)), images_digest=same) == []
    (moved / "a0.png").write_bytes((moved / "a1.png").read_bytes())
    changed = recipe_differences(recorded, _config(tmp_path), images_digest=artworks_digest(sorted(moved.iterdir())))
    assert len(changed) == 1 and changed[0].startswith("images: the artworks in")


def test_overwrite_never_removes_the_artworks_it_is_about_to_read(tmp_path):
    run = TrainingRun(tmp_path / "run")
    make_artworks(run.artworks, 2)
    run.loss_log.write_text("old")
    run.claim(overwrite=True, resume=False, images=run.artworks)
    assert not run.loss_log.exists() and len(list(run.artworks.iterdir())) == 2
    run.claim(overwrite=True, resume=False)
    assert not run.artworks.exists()


def test_the_run_folder_lock_is_reentrant_in_a_thread_but_not_across_threads(tmp_path):
    refused: list[str] = []

    def other_thread() -> None:
        try:
            with run_folder_lock(tmp_path / "run", "training"):
                pass
        except UserError as exc:
            refused.append(str(exc))

    with TrainingRun(tmp_path / "run").locked():
        with TrainingRun(tmp_path / "run").locked():  # the command, then train() inside it
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
    assert len(refused) == 1 and "in use by process" in refused[0]
    with run_folder_lock(tmp_path / "run"):  # released for good
        pass


def test_only_rank_0_of_a_distributed_launch_holds_the_lock(tmp_path, monkeypatch):
    """`accelerate launch` starts one process per GPU on the same --output: they are one run."""
    with TrainingRun(tmp_path / "run").locked():
        monkeypatch.setenv("RANK", "1")
        with TrainingRun(tmp_path / "run").locked():  # not refused, and takes nothing
            pass
        monkeypatch.setenv("RANK", "0")
        refused = []
        thread = threading.Thread(target=lambda: _try_lock(tmp_path / "run", refused))
        thread.start()
        thread.join()
        assert len(refused) == 1  # rank 0 of another run is refused


def _try_lock(folder: Path, refused: list) -> None:
    try:
        with TrainingRun(folder).locked():
            pass
    except UserError as exc:
        refused.append(str(exc))


# The modules that read or write training run folders; each goes through TrainingRun for every name.
RUN_FOLDER_USERS = (
    "styleprompt/diffusion/training.py",
    "styleprompt/commands/train.py",
    "styleprompt/evaluation/pick.py",
    "styleprompt/ui/train_tab.py",
    "styleprompt/ui/serve.py",
)


def test_no_other_module_spells_a_run_files_name():
    import ast

    root = Path(__file__).resolve().parents[1]
    names = {name for name in TrainingRun.OWN if "." in name}  # file names; folder names are common words
    spelled = {}
    for module in RUN_FOLDER_USERS:
        tree = ast.parse((root / module).read_text())
        found = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and (node.value in names or node.value.startswith("step-"))
        ]
        if found:
            spelled[module] = found
    assert not spelled, f"spell these through styleprompt.diffusion.training_run.TrainingRun: {spelled}"


def test_validation_switched_on_or_off_is_a_recipe_change_but_its_cadence_is_not(tmp_path):
    """From 10 artworks on, validation holds one out of training: turning it on or off changes the data."""
    recorded = _config(tmp_path, validate_every=5).to_dict()
    assert recipe_differences(recorded, _config(tmp_path, validate_every=2)) == []
    assert recipe_differences(recorded, _config(tmp_path, validate_every=0)) == ["validate_every 5 -> 0"]
