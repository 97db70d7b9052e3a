"""Generation with style tokens on the tiny model: loading tokens, prompt templates, seeds,
PNG parameters that reproduce an image bit for bit, image->image strength, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from styleprompt.cli import main
from styleprompt.diffusion.formats import Embedding, write_embedding
from styleprompt.diffusion.generate import (
    GenerateConfig,
    generate,
    load_embeddings,
    make_scheduler,
    read_png_params,
    reproduce,
    runner_for,
    save_generated,
)
from styleprompt.diffusion.models import load_pipeline
from styleprompt.diffusion.tokens import file_sha256
from styleprompt.plumbing.errors import UserError

SMALL = dict(steps=2, width=64, height=64)  # the tiny model paints 64 px in a fraction of a second


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def rows(loaded, token: str, n: int) -> torch.Tensor:
    names = [token] + [f"{token}_{i}" for i in range(1, n)]
    ids = loaded.pipe.tokenizer.convert_tokens_to_ids(names)
    return loaded.pipe.text_encoder.get_input_embeddings().weight[ids].detach()


@pytest.fixture(scope="module")
def token_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    torch.manual_seed(11)
    s1 = Embedding("<s1>", torch.randn(2, 32) * 0.5)
    s2 = Embedding("<s2>", torch.randn(2, 32) * 0.5)
    return {
        "vectors": s1.vectors,
        "s1": write_embedding(s1, root / "s1.safetensors", "diffusers")[0],
        "s1_a1111": write_embedding(s1, root / "s1.pt", "a1111")[0],
        "s1_png": write_embedding(s1, root / "s1.png", "a1111-png")[0],
        "s2": write_embedding(s2, root / "s2.safetensors", "diffusers")[0],
        "other_s1": write_embedding(Embedding("<s1>", torch.randn(2, 32)), root / "other.safetensors", "diffusers")[0],
        "xl": write_embedding(Embedding("<x>", torch.randn(2, 32), torch.randn(2, 64)), root / "x.safetensors", "sdxl")[
            0
        ],
        "sd15": write_embedding(Embedding("<v>", torch.randn(1, 768)), root / "v.safetensors", "diffusers")[0],
    }


@pytest.fixture(scope="module")
def loaded(token_files):
    model = load_pipeline("tiny", device="cpu")
    load_embeddings(model, [str(token_files["s1"]), str(token_files["s2"])])
    return model


def test_tokens_load_from_any_format_once(token_files):
    model = load_pipeline("tiny", device="cpu")
    assert load_embeddings(model, [str(token_files["s1"])]) == ["<s1>"]
    size = len(model.pipe.tokenizer)
    # The same vectors again, from the same file or the A1111 .pt and PNG copies: a no-op.
    assert load_embeddings(model, [str(token_files[k]) for k in ("s1", "s1_a1111", "s1_png")]) == ["<s1>"]
    assert len(model.pipe.tokenizer) == size
    assert torch.equal(rows(model, "<s1>", 2), token_files["vectors"])
    assert model.pipe.maybe_convert_prompt("a <s1> style", model.pipe.tokenizer) == "a <s1> <s1>_1 style"
    with pytest.raises(UserError, match="already in the model with other vectors"):
        load_embeddings(model, [str(token_files["other_s1"])])
    with pytest.raises(UserError, match="already in the model with other vectors"):
        load_embeddings(model, [str(token_files["s1"])], style_scale=0.5)


def test_style_scale_scales_the_vectors(token_files):
    model = load_pipeline("tiny", device="cpu")
    load_embeddings(model, [str(token_files["s1"])], style_scale=0.5)
    assert torch.equal(rows(model, "<s1>", 2), token_files["vectors"] * 0.5)


def test_a_width_that_does_not_fit_names_both_families(token_files):
    model = load_pipeline("tiny", device="cpu")
    with pytest.raises(UserError) as info:
        load_embeddings(model, [str(token_files["xl"])])
    message = str(info.value)
    assert "custom SDXL-layout model (widths 32+64)" in message and "custom model (width 32)" in message
    assert "\n" not in message
    with pytest.raises(UserError, match=r"SD 1\.x \(width 768\)"):
        load_embeddings(model, [str(token_files["sd15"])])
    assert "<x>" not in model.pipe.tokenizer.get_vocab()  # nothing half-loaded


@pytest.mark.slow
def test_classes_counts_seeds_and_recorded_parameters(loaded, token_files):
    cfg = GenerateConfig(
        prompt="a {token} style of a {class}", classes=["lighthouse", "city"], count=2, seed=5, **SMALL
    )
    items = generate(loaded, cfg, ["<s1>"], show_progress=False)
    assert [(i.params["class"], i.seed) for i in items] == [
        ("lighthouse", 5),
        ("lighthouse", 6),
        ("city", 5),
        ("city", 6),
    ]
    assert items[0].params["prompt"] == "a <s1> style of a lighthouse"
    source = items[0].params["embeddings"][0]
    assert source["token"] == "<s1>" and source["sha256"] == [file_sha256(token_files["s1"], length=64)]
    assert {i.image.size for i in items} == {(64, 64)}
    assert np.abs(pixels(items[0].image) - pixels(items[1].image)).max() > 0  # seeds differ
    assert np.abs(pixels(items[0].image) - pixels(items[2].image)).max() > 0  # classes differ


def test_the_token_and_its_scale_change_the_picture(loaded, token_files):
    def paint(prompt, model=loaded, tokens=("<s1>",)):
        return pixels(
            generate(model, GenerateConfig(prompt=prompt, seed=3, **SMALL), list(tokens), show_progress=False)[0].image
        )

    with_s1, with_s2 = paint("a <s1> style of a city"), paint("a <s2> style of a city", tokens=("<s2>",))
    assert np.abs(with_s1 - with_s2).mean() > 0.5
    half = load_pipeline("tiny", device="cpu")
    load_embeddings(half, [str(token_files["s1"])], style_scale=0.0)
    assert np.abs(with_s1 - paint("a <s1> style of a city", model=half)).mean() > 0.5


def test_png_parameters_reproduce_the_image_bit_for_bit(loaded, tmp_path):
    cfg = GenerateConfig(
        prompt="a {token} style of a {class}",
        classes=["bridge"],
        negative_prompt="blurry",
        count=2,
        seed=40,
        scheduler="euler-a",
        guidance=6.0,
        **SMALL,
    )
    items = generate(loaded, cfg, ["<s1>", "<s2>"], show_progress=False)
    paths = save_generated(items, tmp_path)
    params = read_png_params(paths[1])
    assert params["seed"] == 41 and params["prompt"] == "a <s1> <s2> style of a bridge"
    assert [e["token"] for e in params["embeddings"]] == ["<s1>", "<s2>"]
    again = reproduce(paths[1], show_progress=False)  # a fresh model and fresh token loads, from the PNG alone
    assert np.array_equal(pixels(again.image), pixels(items[1].image))
    # Never written over: a second save continues the numbering.
    more = save_generated(items[:1], tmp_path)
    assert more[0].name.startswith("002-") and len(list(tmp_path.glob("*.png"))) == 3


def test_reproduce_refuses_a_changed_token_file(loaded, token_files, tmp_path):
    copy = tmp_path / "s9.safetensors"
    write_embedding(Embedding("<s9>", torch.ones(1, 32) * 0.1), copy, "diffusers")
    model = load_pipeline("tiny", device="cpu")
    tokens = load_embeddings(model, [str(copy)])
    path = save_generated(
        generate(model, GenerateConfig(prompt="a <s9> style", seed=1, **SMALL), tokens, show_progress=False), tmp_path
    )[0]
    write_embedding(Embedding("<s9>", torch.ones(1, 32) * 0.2), copy, "diffusers")
    with pytest.raises(UserError, match="changed since"):
        reproduce(path, model, show_progress=False)


def _content(inverted: bool = False) -> Image.Image:
    yy, xx = np.mgrid[0:48, 0:64]
    arr = np.stack([xx * 4, yy * 5, (xx + yy) % 256], -1).astype(np.uint8)
    return Image.fromarray(255 - arr if inverted else arr)


@torch.no_grad()
def _vae_reconstruction(pipe, img: Image.Image) -> np.ndarray:
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    decoded = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample
    return ((decoded[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)


@pytest.mark.slow
def test_image_to_image_strength_bounds(loaded):
    a, b = _content(), _content(inverted=True)
    size = dict(steps=4, width=64, height=48)

    def paint(content, strength, seed=2, prompt="a <s1> style of a city"):
        cfg = GenerateConfig(prompt=prompt, image=content, strength=strength, seed=seed, **size)
        return pixels(generate(loaded, cfg, ["<s1>"], show_progress=False)[0].image)

    # Strength 0: no denoising; the content through the VAE only (prompt and seed play no part).
    zero = paint(a, 0.0)
    assert zero.shape == (48, 64, 3)
    assert np.abs(zero - _vae_reconstruction(loaded.pipe, a)).max() <= 1
    assert np.array_equal(zero, paint(a, 0.0, seed=9, prompt="a <s2> style of a dog"))
    # Strength 1: the content is ignored, it is text->image at the content's size.
    one = paint(a, 1.0)
    assert np.array_equal(one, paint(b, 1.0))
    txt = generate(
        loaded, GenerateConfig(prompt="a <s1> style of a city", seed=2, **size), ["<s1>"], show_progress=False
    )[0]
    assert np.array_equal(one, pixels(txt.image))
    # In between, two opposite contents give pictures further apart the lower the strength.
    gaps = (
        [np.abs(zero - paint(b, 0.0)).mean()] + [np.abs(paint(a, s) - paint(b, s)).mean() for s in (0.25, 0.75)] + [0.0]
    )
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps


def test_image_to_image_shares_the_loaded_components(loaded):
    pipe = loaded.pipe
    runner = runner_for(pipe, True, make_scheduler("ddim", pipe.scheduler.config))
    assert type(runner).__name__ == "StableDiffusionImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(runner, name) is getattr(pipe, name), name
    assert runner.scheduler is not pipe.scheduler  # each call's own scheduler state
    assert pipe.unet.dtype == torch.float32


def test_schedulers_differ_and_bad_settings_are_one_line(loaded):
    images = {}
    for name in ("ddim", "euler", "dpm++"):
        cfg = GenerateConfig(prompt="a <s1> style of a tree", seed=1, scheduler=name, **SMALL)
        images[name] = pixels(generate(loaded, cfg, ["<s1>"], show_progress=False)[0].image)
    assert np.abs(images["ddim"] - images["euler"]).max() > 0 and np.abs(images["euler"] - images["dpm++"]).max() > 0
    bad = [
        (dict(prompt="a {token} style of a {class}"), ["<s1>"], "give one or more --class"),
        (dict(prompt="a <s1> style", classes=["cat"]), ["<s1>"], "needs a {class} slot"),
        (dict(prompt="a {token} style"), [], "no style token was loaded"),
        (dict(prompt="a <q> style"), ["<q>"], "not loaded in this model"),
        (dict(prompt="x", scheduler="warp"), [], "unknown scheduler"),
        (
            dict(prompt="x", strength=1.5, image=_content()),
            [],
            "^strength must be between 0 and 1",
        ),  # the setting, not a flag
        (dict(prompt="x", width=100), [], "multiple of 8"),
        (dict(prompt="  "), [], "prompt is empty"),
    ]
    for options, tokens, message in bad:
        with pytest.raises(UserError, match=message):
            generate(loaded, GenerateConfig(**{**SMALL, **options}), tokens, show_progress=False)


def test_cli_text_to_image_and_stylized_photo(token_files, shared_data, tmp_path, capsys):
    out = tmp_path / "g"
    base = [
        "generate",
        "--model",
        "tiny",
        "--embedding",
        str(token_files["s1"]),
        "--prompt",
        "a <s1> style of a lighthouse",
        "--seed",
        "1",
        "--steps",
        "2",
        "--output",
        str(out),
    ]
    assert main(base) == 0
    assert main(base + ["--image", str(shared_data / "content" / "chicago.jpg"), "--strength", "0.6"]) == 0
    first, second = sorted(out.glob("*.png"))
    text = Image.open(first).text
    assert text["prompt"] == "a <s1> style of a lighthouse" and text["seed"] == "1" and text["model"] == "tiny"
    assert "s1.safetensors" in text["embeddings"] and "Steps: 2" in text["parameters"]
    photo = read_png_params(second)
    assert photo["mode"] == "img2img" and photo["strength"] == 0.6 and photo["content"].endswith("chicago.jpg")
    w, h = Image.open(shared_data / "content" / "chicago.jpg").size
    assert abs(photo["width"] / photo["height"] - w / h) < 0.1  # the photo's shape is kept
    assert main(["generate", "--from-png", str(first), "--output", str(tmp_path / "again")]) == 0
    assert np.array_equal(pixels(Image.open(first)), pixels(Image.open(next((tmp_path / "again").glob("*.png")))))
    assert (
        main(
            [
                "generate",
                "--model",
                "tiny",
                "--embedding",
                str(token_files["xl"]),
                "--output",
                str(out),
                "--class",
                "cat",
            ]
        )
        == 2
    )
    assert "widths 32+64" in capsys.readouterr().err


def test_a_missing_embedding_is_told_before_any_model_loads(tmp_path, monkeypatch, capsys):
    import styleprompt.diffusion.models as models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the missing --embedding was reported")

    monkeypatch.setattr(models, "load_pipeline", no_loading)
    code = main(
        [
            "generate",
            "--embedding",
            str(tmp_path / "nope.safetensors"),
            "--prompt",
            "a <x>",
            "--output",
            str(tmp_path / "g"),
        ]
    )
    assert code == 2
    assert "embedding file not found" in capsys.readouterr().err
