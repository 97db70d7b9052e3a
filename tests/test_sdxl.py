"""SDXL on the tiny SDXL pipeline: both text encoders learn their rows, micro-conditioning is fed,
the files A1111/ComfyUI and diffusers load are written, resume works, and tokens paint."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from styleprompt.diffusion.checkpoints import list_checkpoints
from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.formats import read_embedding
from styleprompt.diffusion.generate import GenerateConfig, generate, load_embeddings, make_scheduler, runner_for
from styleprompt.diffusion.models import load_pipeline
from styleprompt.diffusion.tiny import build_tiny_sdxl_pipeline
from styleprompt.diffusion.training import StyleTokenTrainer, TrainCallbacks, train

PROMPT = "a <s1> style of a lighthouse"


def xl_config(images, output, **overrides) -> TrainConfig:
    base = TrainConfig(
        images=str(images),
        token="<s1>",
        model="tiny-sdxl",
        output=str(output),
        steps=3,
        vectors=2,
        grad_accum=1,
        resolution=64,
        lr=5e-2,
        save_every=0,
        checkpoint_every=0,
        preview_every=0,
        preview_steps=2,
        device="cpu",
    )
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import make_artworks

    root = tmp_path_factory.mktemp("xl")
    art = make_artworks(root / "art")
    result = train(xl_config(art, root / "run", save_every=3, preview_every=3))
    return result, art


def test_tiny_sdxl_is_deterministic_with_two_widths():
    a, b = build_tiny_sdxl_pipeline(), build_tiny_sdxl_pipeline()
    assert (a.text_encoder.config.hidden_size, a.text_encoder_2.config.hidden_size) == (32, 64)
    assert a.unet.config.addition_embed_type == "text_time"
    for name, value in a.unet.state_dict().items():
        assert torch.equal(value, b.unet.state_dict()[name]), name
    assert load_pipeline("tiny-sdxl", device="cpu").family == "sdxl"


@pytest.mark.slow
def test_both_encoders_learn_only_their_placeholder_rows(trained):
    result, _ = trained
    pipe, fresh = result.loaded.pipe, build_tiny_sdxl_pipeline()
    for tok, te, te_fresh in (
        (pipe.tokenizer, pipe.text_encoder, fresh.text_encoder),
        (pipe.tokenizer_2, pipe.text_encoder_2, fresh.text_encoder_2),
    ):
        table, original = te.get_input_embeddings().weight, te_fresh.get_input_embeddings().weight
        n = original.shape[0]
        assert torch.equal(table[:n], original)  # every pre-existing row bit-identical
        init = original[tok.encode("painting", add_special_tokens=False)].mean(0)
        learned = table[tok.convert_tokens_to_ids(["<s1>", "<s1>_1"])]
        assert (learned - init).abs().max() > 1e-3  # this encoder's rows did learn


@pytest.mark.slow
def test_run_folder_holds_the_a1111_file_and_diffusers_pair(trained):
    result, _ = trained
    out = result.output_dir
    single = load_file(out / "learned_embeds.safetensors")
    assert {k: tuple(v.shape) for k, v in single.items()} == {"clip_l": (2, 32), "clip_g": (2, 64)}
    pair = [
        load_file(out / "diffusers" / name) for name in ("learned_embeds.safetensors", "learned_embeds_2.safetensors")
    ]
    assert torch.equal(pair[0]["<s1>"], single["clip_l"]) and torch.equal(pair[1]["<s1>"], single["clip_g"])
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == ["step-000003.safetensors"]
    assert read_embedding(out / "embeddings" / "step-000003.safetensors").format == "sdxl"
    assert (out / "previews" / "step-000003.png").is_file()
    pipe = result.loaded.pipe  # the saved vectors are the ones in the trained pipeline
    rows = pipe.text_encoder_2.get_input_embeddings().weight[pipe.tokenizer_2.convert_tokens_to_ids(["<s1>", "<s1>_1"])]
    assert torch.equal(rows.detach(), single["clip_g"])


@pytest.mark.slow
def test_diffusers_two_call_load_encodes_prompts_like_the_trained_model(trained):
    result, _ = trained
    state = load_file(result.output_dir / "learned_embeds.safetensors")
    plain = build_tiny_sdxl_pipeline()
    names = ["<s1>", "<s1>_1"]
    plain.load_textual_inversion(
        state["clip_l"], token=names, text_encoder=plain.text_encoder, tokenizer=plain.tokenizer
    )
    plain.load_textual_inversion(
        state["clip_g"], token=names, text_encoder=plain.text_encoder_2, tokenizer=plain.tokenizer_2
    )
    ours = result.loaded.pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    theirs = plain.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    for a, b in zip(ours, theirs):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_micro_conditioning_reaches_the_unet(trained, tmp_path):
    _, art = trained
    trainer = StyleTokenTrainer(xl_config(art, tmp_path / "run", batch_size=2))
    seen = {}

    def capture(module, args, kwargs):
        seen.update(kwargs["added_cond_kwargs"])

    handle = trainer.pipe.unet.register_forward_pre_hook(capture, with_kwargs=True)
    batch = trainer.draw_batch()
    try:
        trainer.loss_on(batch)
    finally:
        handle.remove()
    time_ids = seen["time_ids"]
    assert tuple(time_ids.shape) == (2, 6) and tuple(seen["text_embeds"].shape) == (2, 64)
    for row, (entry, top, left) in zip(time_ids.tolist(), batch.windows):
        width, height = trainer.original_sizes[entry // 2]
        assert row == [height, width, top * 8, left * 8, 64, 64]
    assert trainer.original_sizes[0] == (160, 128)  # the artworks' own size, not the training crop's


@pytest.mark.slow
def test_sdxl_resume_matches_an_uninterrupted_run(trained, tmp_path):
    _, art = trained
    cfg = dict(steps=2, checkpoint_every=1, checkpoints_total_limit=5)
    straight = train(xl_config(art, tmp_path / "straight", **cfg))
    calls = {"n": 0}

    def stop_after_one() -> bool:
        calls["n"] += 1
        return calls["n"] >= 1

    stopped = train(xl_config(art, tmp_path / "resumed", **cfg), callbacks=TrainCallbacks(should_stop=stop_after_one))
    assert stopped.steps_done == 1 and list_checkpoints(tmp_path / "resumed" / "checkpoints")
    resumed = train(xl_config(art, tmp_path / "resumed", resume="latest", **cfg))
    a, b = load_file(straight.embedding_path), load_file(resumed.embedding_path)
    for key in ("clip_l", "clip_g"):
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.slow
def test_sdxl_tokens_paint_text_and_image_to_image(trained):
    result, _ = trained
    model = load_pipeline("tiny-sdxl", device="cpu")
    assert load_embeddings(model, [str(result.output_dir / "diffusers" / "learned_embeds.safetensors")]) == ["<s1>"]
    assert load_embeddings(model, [str(result.embedding_path)]) == ["<s1>"]  # the same vectors: a no-op
    runner = runner_for(model.pipe, True, make_scheduler("euler", model.pipe.scheduler.config))
    assert (
        type(runner).__name__ == "StableDiffusionXLImg2ImgPipeline"
        and runner.text_encoder_2 is model.pipe.text_encoder_2
    )
    text = generate(
        model, GenerateConfig(prompt=PROMPT, seed=1, steps=2, width=64, height=64), ["<s1>"], show_progress=False
    )[0]
    assert text.image.size == (64, 64) and text.params["family"] == "sdxl"
    photo = generate(
        model,
        GenerateConfig(prompt=PROMPT, seed=1, steps=2, image=text.image, strength=0.5, width=64, height=48),
        ["<s1>"],
        show_progress=False,
    )[0]
    assert photo.image.size == (64, 48) and photo.params["denoising_steps"] == 1
    plain = generate(
        model,
        GenerateConfig(prompt="a painting style of a lighthouse", seed=1, steps=2, width=64, height=64),
        show_progress=False,
    )[0]
    assert np.abs(np.asarray(text.image, dtype=np.int16) - np.asarray(plain.image, dtype=np.int16)).max() > 0


@pytest.mark.slow
def test_bf16_training_with_previews(trained, tmp_path):
    """Previews sample through the plain tables: the fp32 learned rows must not set the pipeline's dtype."""
    _, art = trained
    result = train(xl_config(art, tmp_path / "run", steps=1, preview_every=1, mixed_precision="bf16"))
    assert result.loaded.pipe.unet.dtype == torch.bfloat16
    assert sorted(p.name for p in (result.output_dir / "previews").iterdir()) == ["step-000000.png", "step-000001.png"]
    assert load_file(result.embedding_path)["clip_g"].dtype == torch.float32
