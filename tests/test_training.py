"""Textual inversion on the tiny model: learning, frozen rows, diffusers loading, resume, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from styleprompt.diffusion.checkpoints import list_checkpoints, load_checkpoint
from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.models import load_pipeline
from styleprompt.diffusion.tiny import build_tiny_pipeline
from styleprompt.diffusion.training import StyleTokenTrainer, TrainCallbacks, TrainingDiverged, train
from styleprompt.diffusion.training_run import TrainingRun
from styleprompt.plumbing.files import is_temporary
from styleprompt.plumbing.folder_lock import is_lock_file


def tiny_config(images: Path, output: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        images=str(images),
        token="<s1>",
        model="tiny",
        output=str(output),
        steps=4,
        vectors=2,
        grad_accum=1,
        save_every=0,
        checkpoint_every=0,
        preview_every=0,
        preview_steps=2,
        device="cpu",
    )
    return replace(base, **overrides)


@pytest.mark.slow
def test_loss_falls_on_a_fixed_batch(artworks_dir, tmp_path):
    trainer = StyleTokenTrainer(tiny_config(artworks_dir, tmp_path / "run", lr=5e-2, batch_size=2))
    torch.manual_seed(0)
    batch = trainer.draw_batch()
    with torch.no_grad():
        before = float(trainer.loss_on(batch))
    for _ in range(30):
        loss = trainer.loss_on(batch)
        trainer.accelerator.backward(loss)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    with torch.no_grad():
        after = float(trainer.loss_on(batch))
    assert after < before - 1e-3, (before, after)  # deterministic batch: any fall is learning


@pytest.mark.slow
def test_only_placeholder_rows_change(artworks_dir, tmp_path):
    result = train(tiny_config(artworks_dir, tmp_path / "run", steps=5, lr=5e-2))
    pipe = result.loaded.pipe
    fresh = build_tiny_pipeline()
    trained_table = pipe.text_encoder.get_input_embeddings().weight
    original = fresh.text_encoder.get_input_embeddings().weight
    n = original.shape[0]
    assert torch.equal(trained_table[:n], original)  # every pre-existing row bit-identical
    ids = pipe.tokenizer.convert_tokens_to_ids(["<s1>", "<s1>_1"])
    assert ids == [n, n + 1]
    init = original[pipe.tokenizer.encode("painting", add_special_tokens=False)].mean(0)
    assert not torch.allclose(trained_table[n], init)  # the placeholder did learn
    for name, param in pipe.unet.state_dict().items():
        assert torch.equal(param, fresh.unet.state_dict()[name]), name


@pytest.mark.slow
def test_saved_file_loads_in_plain_diffusers_and_changes_the_image(artworks_dir, tmp_path):
    result = train(tiny_config(artworks_dir, tmp_path / "run", steps=6, lr=5e-2))
    saved = load_file(result.embedding_path)
    assert list(saved) == ["<s1>"] and saved["<s1>"].shape == (2, 32)

    def render(embedding_path: Path | None) -> torch.Tensor:
        pipe = build_tiny_pipeline()
        if embedding_path is not None:
            pipe.load_textual_inversion(str(embedding_path))
        out = pipe(
            "a <s1> style of a lighthouse",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(1),
            output_type="pt",
        )
        return out.images

    fresh = build_tiny_pipeline()
    init = (
        fresh.text_encoder.get_input_embeddings()
        .weight[fresh.tokenizer.encode("painting", add_special_tokens=False)]
        .mean(0)
    )
    from styleprompt.diffusion.tokens import save_diffusers_embedding

    untrained = save_diffusers_embedding(tmp_path / "init.safetensors", "<s1>", init.repeat(2, 1))
    trained_image, untrained_image = render(result.embedding_path), render(untrained)
    assert (trained_image - untrained_image).abs().max() > 1e-3
    pipe = build_tiny_pipeline()
    pipe.load_textual_inversion(str(result.embedding_path))
    assert pipe.maybe_convert_prompt("a <s1> style", pipe.tokenizer) == "a <s1> <s1>_1 style"


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_checkpoint(artworks_dir, tmp_path):
    cfg = dict(steps=6, checkpoint_every=3, checkpoints_total_limit=5, lr=2e-2, lr_scheduler="linear", grad_accum=2)
    straight = train(tiny_config(artworks_dir, tmp_path / "straight", **cfg))

    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    stopped = train(
        tiny_config(artworks_dir, tmp_path / "resumed", **cfg), callbacks=TrainCallbacks(should_stop=stop_after_three)
    )
    assert stopped.stopped_early and stopped.steps_done == 3
    at_stop = load_checkpoint(list_checkpoints(tmp_path / "resumed" / "checkpoints")[-1][1])
    reference = load_checkpoint(tmp_path / "straight" / "checkpoints" / "checkpoint-3")
    assert at_stop.step == 3
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(at_stop.optimizer["state"][0][key], reference.optimizer["state"][0][key])
    assert at_stop.lr_scheduler["last_epoch"] == reference.lr_scheduler["last_epoch"] == 3

    resumed = train(tiny_config(artworks_dir, tmp_path / "resumed", resume="latest", **cfg))
    assert resumed.steps_done == 6
    torch.testing.assert_close(load_file(resumed.embedding_path)["<s1>"], load_file(straight.embedding_path)["<s1>"])
    rows = (tmp_path / "resumed" / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_a_resumed_run_keeps_the_cpu_threads_it_started_with(artworks_dir, tmp_path, monkeypatch):
    """The load may differ at resume; the recorded count wins, or the resumed run would not be
    bit-identical to a straight one (float rounding depends on the thread count)."""
    from styleprompt.plumbing import cpu_threads

    before = torch.get_num_threads()
    first, later = (2, 1) if before == 1 else (1, 2)  # both differ from the process's own count
    chosen = {"n": first}

    monkeypatch.setattr(cpu_threads, "threads_for_new_run", lambda: chosen["n"])
    seen: list[int] = []
    cfg = dict(steps=4, checkpoint_every=1, checkpoints_total_limit=5)
    train(
        tiny_config(artworks_dir, tmp_path / "run", **cfg),
        callbacks=TrainCallbacks(on_step=lambda *_: seen.append(torch.get_num_threads()), should_stop=lambda: True),
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cpu_threads"] == first
    chosen["n"] = later  # the load changed: a fresh run would now choose another count
    train(
        tiny_config(artworks_dir, tmp_path / "run", resume="latest", **cfg),
        callbacks=TrainCallbacks(on_step=lambda *_: seen.append(torch.get_num_threads())),
    )
    assert seen == [first] * 4
    assert torch.get_num_threads() == before  # the process gets its own count back


@pytest.mark.slow
def test_outputs_of_a_run(artworks_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(artworks_dir, out, steps=4, save_every=2, preview_every=2, checkpoint_every=2))
    assert (out / "learned_embeds.safetensors").is_file() and (out / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "previews").iterdir()) == [
        "step-000000.png",
        "step-000002.png",
        "step-000004.png",
    ]
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == [
        "step-000002.safetensors",
        "step-000004.safetensors",
    ]
    assert len((out / "loss.csv").read_text().splitlines()) == 5
    assert not [p for p in out.rglob("*") if is_temporary(p)] and not list(out.rglob(".tmp-*"))
    # --overwrite removes TrainingRun.OWN: every name a run writes must be there.
    assert {p.name for p in out.iterdir() if not is_lock_file(p)} <= set(TrainingRun.OWN)


def test_multi_vector_token_and_v_prediction(artworks_dir, tmp_path):
    loaded = load_pipeline("tiny", device="cpu", prediction_type="v_prediction")
    result = train(tiny_config(artworks_dir, tmp_path / "run", vectors=3, steps=2), loaded=loaded)
    assert result.final_loss is not None and result.final_loss == result.final_loss
    assert load_file(result.embedding_path)["<s1>"].shape == (3, 32)
    pipe = build_tiny_pipeline()
    pipe.load_textual_inversion(str(result.embedding_path))
    assert all(t in pipe.tokenizer.get_vocab() for t in ["<s1>", "<s1>_1", "<s1>_2"])


def test_divergence_stops_and_keeps_the_last_good_embedding(artworks_dir, tmp_path, monkeypatch):
    real_loss = StyleTokenTrainer.loss_on
    calls = {"n": 0}

    def loss_turning_nan(self, batch):
        calls["n"] += 1
        loss = real_loss(self, batch)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(StyleTokenTrainer, "loss_on", loss_turning_nan)
    with pytest.raises(TrainingDiverged, match="diverged at step 4.*last good embedding"):
        # validate_every 0: the validation loss calls loss_on too, and the count is of training calls
        train(tiny_config(artworks_dir, tmp_path / "run", steps=20, checkpoint_every=2, lr=5e-2, validate_every=0))
    saved = load_file(tmp_path / "run" / "learned_embeds.safetensors")["<s1>"]
    step3 = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint-2")
    assert torch.isfinite(saved).all()
    assert not torch.equal(saved, step3.vectors)  # the embedding after step 3, not an older one


def test_bf16_mixed_precision_keeps_the_embedding_fp32(artworks_dir, tmp_path):
    result = train(tiny_config(artworks_dir, tmp_path / "run", steps=2, mixed_precision="bf16"))
    assert result.loaded.pipe.unet.dtype == torch.bfloat16
    saved = load_file(result.embedding_path)["<s1>"]
    assert saved.dtype == torch.float32
    # Saving casts to fp32 anyway; what shows the rows were *trained* in fp32 is that they start as
    # bf16 values (copied from the bf16 table) and end off bf16's grid: bf16 rows would stay on it.
    assert not torch.equal(saved, saved.to(torch.bfloat16).float())


def test_vectors_and_norm_cap_default_to_the_models_own():
    import argparse

    from styleprompt.commands.train import add_arguments, config_from_args

    assert TrainConfig(images="x").vectors == 4  # SD's style recipe
    assert TrainConfig(images="x", model="micro").vectors == 1  # micro's 2-layer text encoder (docs/micro.md)
    assert TrainConfig(images="x", model="micro", vectors=3).vectors == 3  # a given count is kept
    assert TrainConfig(images="x").norm_cap == 0.0 and TrainConfig(images="x", model="micro").norm_cap == 1.0
    assert TrainConfig(images="x", model="micro", norm_cap=0.0).norm_cap == 0.0
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--images", "x", "--model", "micro"])).vectors == 1
    assert config_from_args(parser.parse_args(["--images", "x"])).vectors == 4


def test_lora_settings_default_to_the_models_own():
    """Pivotal tuning's defaults: diffusers' advanced script's, and micro's own from figure e; a
    LoRA-alone run (`--ti-fraction 0`) needs no `--lora-start` beside it."""
    import argparse

    from styleprompt.commands.train import add_arguments, config_from_args

    sd, micro = TrainConfig(images="x"), TrainConfig(images="x", model="micro")
    assert (sd.lora_lr, sd.ti_fraction, sd.lora_start, sd.lora_conv) == (1e-4, 0.5, 0.0, False)
    assert (micro.lora_lr, micro.ti_fraction, micro.lora_start, micro.lora_conv) == (3e-3, 2 / 3, 2 / 3, True)
    assert TrainConfig(images="x", model="micro", ti_fraction=0.0).lora_start == 0.0
    assert TrainConfig(images="x", model="micro", lora_conv=False, lora_lr=1e-4).lora_conv is False
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parsed = config_from_args(parser.parse_args(["--images", "x", "--model", "micro", "--no-lora-conv"]))
    assert parsed.lora_conv is False and parsed.lora_lr == 3e-3
    assert config_from_args(parser.parse_args(["--images", "x", "--lora-conv"])).lora_conv is True


def test_norm_cap_keeps_learned_vectors_within_the_longest_word(artworks_dir, tmp_path):
    """With a cap, no step leaves a vector longer than the model's longest word embedding (x the cap);
    without one, the same run at a high lr grows past it, so the assertion can fail."""
    loaded = load_pipeline("tiny", device="cpu")
    longest = float(loaded.pipe.text_encoder.get_input_embeddings().weight.detach().norm(dim=-1).max())
    norms = {}
    for cap in (0.0, 0.5):
        cfg = tiny_config(artworks_dir, tmp_path / f"run-{cap}", steps=6, lr=0.5, norm_cap=cap)
        result = train(cfg, loaded=load_pipeline("tiny", device="cpu"))
        vectors = load_file(str(result.embedding_path))[cfg.token]
        norms[cap] = float(vectors.norm(dim=-1).max())
    assert norms[0.5] <= 0.5 * longest * (1 + 1e-5)
    assert norms[0.0] > 0.5 * longest  # uncapped, lr 0.5 carries it past the cap


def _validation_column(run: Path) -> list[tuple[str, str, str]]:
    """(step, val_loss, val_heldout) of the rows of loss.csv where a validation loss was logged."""
    import csv

    with open(run / "loss.csv", newline="") as handle:
        return [(r["step"], r["val_loss"], r["val_heldout"]) for r in csv.DictReader(handle) if r["val_loss"]]


@pytest.mark.slow
def test_micro_validation_loss_is_identical_across_runs_and_falls(tmp_path, shared_data):
    """The done-when of issue 27: a micro token run logs a validation column that two runs write
    byte-identical and that falls while the token learns (40 steps on 8 world pictures of
    starry_night; measured 0.178281 at step 10 to 0.177870 at step 40; 60 s for both runs on the
    shared 2-core CPU under load)."""
    from styleprompt.micro import world
    from styleprompt.plumbing.images import load_image

    style = load_image(shared_data / "style" / "starry_night.jpg")
    world.write_pictures(
        world.make_pictures(style, ["lighthouse", "house", "city", "tree"], 8, seed=31_337), tmp_path / "art"
    )
    columns = []
    for name in ("first", "second"):
        cfg = TrainConfig(
            images=str(tmp_path / "art"),
            token="<t>",
            model="micro",
            output=str(tmp_path / name),
            steps=40,
            save_every=0,
            checkpoint_every=0,
            preview_every=0,
            validate_every=10,
            device="cpu",
        )
        train(cfg)
        columns.append(_validation_column(tmp_path / name))
    assert columns[0] == columns[1]
    assert [step for step, _, _ in columns[0]] == ["10", "20", "30", "40"]
    values = [float(v) for _, v, _ in columns[0]]
    assert values[-1] < values[0] - 1e-4, values  # deterministic: any fall is the token learning
    assert all(held == "" for _, _, held in columns[0])  # 8 pictures: too few to hold one out


@pytest.mark.slow
def test_validation_does_not_disturb_a_resumed_run(artworks_dir, tmp_path):
    """Stopped at step 3 and resumed, a run logs the validation losses and ends on the embedding
    of a straight run; and the straight run's embedding is the one a run without validation ends on."""
    cfg = dict(steps=6, checkpoint_every=3, checkpoints_total_limit=5, lr=2e-2, validate_every=2)
    straight = train(tiny_config(artworks_dir, tmp_path / "straight", **cfg))
    stopped = train(
        tiny_config(artworks_dir, tmp_path / "resumed", **cfg), callbacks=TrainCallbacks(should_stop=lambda: True)
    )
    assert stopped.steps_done == 1
    train(tiny_config(artworks_dir, tmp_path / "resumed", resume="latest", **cfg))
    assert _validation_column(tmp_path / "resumed") == _validation_column(tmp_path / "straight")
    assert [step for step, _, _ in _validation_column(tmp_path / "straight")] == ["2", "4", "6"]
    unvalidated = train(tiny_config(artworks_dir, tmp_path / "off", **dict(cfg, validate_every=0)))
    assert _validation_column(tmp_path / "off") == []
    for result in (tmp_path / "resumed" / "learned_embeds.safetensors", unvalidated.embedding_path):
        assert torch.equal(load_file(result)["<s1>"], load_file(straight.embedding_path)["<s1>"])


@pytest.mark.slow
def test_enough_artworks_hold_one_out_for_validation(tmp_path):
    from styleprompt.diffusion import validation
    from tests.conftest import make_artworks

    art = make_artworks(tmp_path / "art", validation.HOLD_OUT_FROM)
    out = tmp_path / "run"
    train(tiny_config(art, out, steps=2, validate_every=1))
    settings = json.loads((out / "config.json").read_text())
    assert settings["validation_held_out"] == f"a{validation.HOLD_OUT_FROM - 1}.png"  # the last by name
    assert settings["images_used"] == validation.HOLD_OUT_FROM - 1
    assert all(held for _, _, held in _validation_column(out)) and len(_validation_column(out)) == 2


def test_validation_timesteps_spread_over_the_schedule():
    from styleprompt.diffusion.validation import spread_timesteps

    assert spread_timesteps(4, 1000).tolist() == [125, 375, 625, 875]
    assert spread_timesteps(16, 1000).min() < 50 and spread_timesteps(16, 1000).max() > 950


def test_loss_png_draws_the_validation_loss_and_old_logs_still_plot(tmp_path):
    from styleprompt.diffusion.training import plot_loss, validation_points

    rows = [{"step": str(s), "loss": "0.5", "val_loss": "0.4" if s % 2 == 0 else ""} for s in range(1, 7)]
    assert validation_points(rows) == ([2, 4, 6], [0.4, 0.4, 0.4])
    plot_loss(rows, tmp_path / "with.png", "t")
    plot_loss(
        [{"step": "1", "loss": "0.5", "lr": "1", "elapsed_s": "1"}], tmp_path / "old.png", "t"
    )  # an older loss.csv
    assert (tmp_path / "with.png").stat().st_size > 1000 and (tmp_path / "old.png").stat().st_size > 1000
