"""The world and the micro model: deterministic pictures, an offline model, and a token that learns.

The learning test is the product's core claim in miniature: a token trained on the micro model
for a known style, in under a minute, makes pictures of classes it never saw in that style (as
the Ghiasi style judge sees it), while the init word alone does not, so the test fails if the
token stops mattering.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from styleprompt.cli import main as cli
from styleprompt.micro import HELD_OUT, STYLE_WORDS, is_available, world

needs_model = pytest.mark.skipif(not is_available(), reason="the micro model is not built into this checkout")


def _pixels(pictures) -> list[np.ndarray]:
    return [np.asarray(p.image) for p in pictures]


def test_world_is_deterministic_per_seed_and_varied():
    a = world.make_pictures(None, ["boat", "house"], 4, seed=3)
    b = world.make_pictures(None, ["boat", "house"], 4, seed=3)
    c = world.make_pictures(None, ["boat", "house"], 4, seed=4)
    assert [p.cls for p in a] == ["boat", "house", "boat", "house"]
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b)))
    assert not any(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(c)))
    assert not np.array_equal(_pixels(a)[0], _pixels(a)[2])  # no two pictures of a class alike
    assert a[0].image.size == (world.WORLD_SIZE, world.WORLD_SIZE)


def test_every_class_draws_something_distinct():
    pictures = [world.render(cls, 1, 64) for cls in world.CLASSES]
    means = np.stack([np.asarray(p, dtype=np.float32) for p in pictures])
    # each class's picture differs from every other class's (not a blank or a copy)
    diffs = np.abs(means[:, None] - means[None]).mean(axis=(2, 3, 4))
    off_diagonal = diffs[~np.eye(len(pictures), dtype=bool)]
    assert off_diagonal.min() > 5.0
    assert len(world.CLASSES) >= 12 and {"lighthouse", "house", "city"} <= set(world.CLASSES)


def test_painted_world_is_deterministic(shared_data):
    from styleprompt.plumbing.images import load_image

    style = load_image(shared_data / "style" / "starry_night.jpg")
    a = world.make_pictures(style, ["fish"], 2, seed=0)
    b = world.make_pictures(style, ["fish"], 2, seed=0)
    plain = world.make_pictures(None, ["fish"], 2, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b)))
    assert not np.array_equal(_pixels(a)[0], _pixels(plain)[0])  # the painting changed the picture


def test_world_command_lists_and_writes(tmp_path, capsys, shared_data):
    assert cli(["world", "--list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == world.CLASSES
    assert {w: p for w, p in info["styles"].items() if p} == STYLE_WORDS
    assert info["held_out"] == HELD_OUT and len(HELD_OUT) >= 4
    assert not set(HELD_OUT) & set(STYLE_WORDS.values())
    out = tmp_path / "w"
    assert (
        cli(
            [
                "world",
                "--style",
                str(shared_data / "style" / "mondrian.jpg"),
                "--count",
                "3",
                "--class",
                "cup",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(p.with_suffix(".txt").read_text().strip() == "cup" for p in pngs)
    assert cli(["world", "--count", "2", "--output", str(out)]) == 2  # not an empty folder: nothing overwritten
    assert cli(["world", "--class", "unicorn", "--output", str(tmp_path / "u")]) == 2
    assert "unknown world class 'unicorn'" in capsys.readouterr().err


@needs_model
def test_micro_loads_offline(monkeypatch):
    from styleprompt.diffusion.models import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_pipeline("micro", device="cpu")
    pipe = loaded.pipe
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert int(pipe.unet.config.sample_size) * pipe.vae_scale_factor >= 64
    for word in [*STYLE_WORDS, world.PLAIN_STYLE, *world.CLASSES]:  # every world word is one token
        assert len(pipe.tokenizer.tokenize(word)) == 1, word


def test_wide_decoder_keeps_the_trained_encoders_latents():
    """The wide decoder must not move a single latent: the UNet was trained on the old encoder's."""
    from styleprompt.micro import arch

    torch.manual_seed(0)
    trained = arch.build_vae().eval()
    for p in trained.parameters():  # a trained-looking encoder, not a fresh init's zero biases
        p.data += 0.05 * torch.randn_like(p)
    wide = arch.build_wide_decoder_vae(trained).eval()
    assert tuple(wide.config.block_out_channels) == arch.DECODER_CHANNELS  # the pipeline's vae_scale_factor
    assert wide.config.scaling_factor == trained.config.scaling_factor
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        before = trained.encode(x).latent_dist
        after = wide.encode(x).latent_dist
        assert torch.allclose(after.mean, before.mean, rtol=1e-4, atol=1e-5)
        assert torch.allclose(after.std, before.std, rtol=1e-4, atol=1e-5)
        assert wide.decode(after.mean).sample.shape == x.shape


@needs_model
def test_text_encoder_builder_matches_the_shipped_model():
    """micro/arch.py builds its text encoder with the tiny model's builder: the shipped weights
    must still fit it exactly (same config), and give the shipped encoder's outputs."""
    from safetensors.torch import load_file

    from styleprompt.micro import MODEL_DIR, arch, load_micro_pipeline

    pipe = load_micro_pipeline()
    tokenizer = arch.build_tokenizer()
    assert tokenizer.get_vocab() == pipe.tokenizer.get_vocab()
    built = arch.build_text_encoder(len(tokenizer))
    shipped = json.loads((MODEL_DIR / "text_encoder" / "config.json").read_text())
    ignored = {"dtype", "transformers_version", "architectures"}
    assert {k: v for k, v in built.config.to_dict().items() if k in shipped and k not in ignored} == {
        k: v for k, v in shipped.items() if k not in ignored
    }
    weights = load_file(str(MODEL_DIR / "text_encoder" / "model.safetensors"))
    built.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    ids = pipe.tokenizer(["a painting of a boat", "a boat"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(built.eval()(ids)[0], pipe.text_encoder(ids)[0])


@needs_model
@pytest.mark.slow
def test_token_learns_a_known_style_on_unseen_classes(tmp_path, shared_data):
    """Trained on 8 world pictures of four classes (150 steps, about 27 s on the 2-core CPU), the
    token paints four other classes in the painting's style: the style judge puts the painting
    first among the 19 for at least 70% of a fixed sample, where the init word alone never does,
    and every picture but at most one moves towards the style against the init word's picture
    of the same class and seed. Measured on the shipped model (wide decoder): 7 of 8 first (ranks
    1,1,1,3,1,1,1,1; 6 of 8 with the previous narrow decoder), init word 0 of 8 (ranks 15-17).
    """
    from styleprompt.diffusion.config import TrainConfig
    from styleprompt.diffusion.generate import load_embeddings
    from styleprompt.diffusion.models import load_pipeline
    from styleprompt.diffusion.training import train
    from styleprompt.micro.judges import StyleJudge
    from styleprompt.plumbing.images import load_image

    painting = "starry_night.jpg"
    pictures = world.make_pictures(
        load_image(shared_data / "style" / painting), ["lighthouse", "house", "city", "tree"], 8, seed=31_337
    )
    world.write_pictures(pictures, tmp_path / "art")
    torch.manual_seed(0)
    result = train(
        TrainConfig(
            images=str(tmp_path / "art"),
            token="<t>",
            model="micro",
            output=str(tmp_path / "run"),
            steps=150,
            save_every=0,
            checkpoint_every=0,
            preview_every=0,
        )
    )
    loaded = load_pipeline("micro", device="cpu")
    load_embeddings(loaded, [str(result.embedding_path)])
    classes, seeds = ["boat", "fish", "flower", "bird"], [0, 1]

    def paint(word: str):
        prompts = [f"a {word} style of a {c}" for c in classes for _ in seeds]
        gens = [torch.Generator().manual_seed(s) for _ in classes for s in seeds]
        with torch.no_grad():
            return loaded.pipe(prompt=prompts, generator=gens, num_inference_steps=20).images

    judge = StyleJudge()
    with_token, init_word = judge.vectors_of(paint("<t>")), judge.vectors_of(paint("painting"))
    token_r1 = float((judge.ranks(with_token, painting) == 1).float().mean())
    init_r1 = float((judge.ranks(init_word, painting) == 1).float().mean())
    assert token_r1 >= 0.7, judge.ranks(with_token, painting)
    assert init_r1 < 0.7, judge.ranks(init_word, painting)  # the token, not the prompt, carries the style
    target = judge.names.index(painting)
    gain = judge.similarities(with_token)[:, target] - judge.similarities(init_word)[:, target]
    assert int((gain > 0).sum()) >= 7, gain


def test_set_threads_does_not_count_its_own_load(monkeypatch):
    """A lone job must not see its own load and drop to one thread; another job's load must count."""
    from styleprompt.plumbing import cpu_threads

    monkeypatch.setattr(cpu_threads, "_THREADS_IN_USE", 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "runnable_now", lambda: 1)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.0, 0.0))
        assert cpu_threads.set_threads() == 2  # idle machine: all cores
        monkeypatch.setattr("os.getloadavg", lambda: (2.0, 0.0, 0.0))
        assert cpu_threads.set_threads() == 2  # that load is this job's own two threads
        monkeypatch.setattr("os.getloadavg", lambda: (3.1, 0.0, 0.0))
        assert cpu_threads.set_threads() == 1  # another job is running beside it
        monkeypatch.setattr("os.getloadavg", lambda: (1.1, 0.0, 0.0))
        assert cpu_threads.set_threads() == 2  # the other job ended
        monkeypatch.setattr(cpu_threads, "runnable_now", lambda: 4)
        assert cpu_threads.set_threads() == 1  # two jobs just started: the one-minute average has not seen them yet
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_a_new_run_takes_all_cores_unless_another_job_is_running_now(monkeypatch):
    """A training run chooses by the threads runnable now, not by the load average, which counts
    this process's own earlier work (a test session, the app) as another job's."""
    from styleprompt.plumbing import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (2.0, 2.0, 2.0))  # this process has been busy
    readings = iter([1, 1, 3, 1, 1])  # one instant catches a short-lived thread: the median ignores it
    monkeypatch.setattr(cpu_threads, "runnable_now", lambda: next(readings))
    assert cpu_threads.threads_for_new_run(samples=5, interval_s=0) == 2
    monkeypatch.setattr(cpu_threads, "runnable_now", lambda: 3)  # another job's two threads run beside it
    assert cpu_threads.threads_for_new_run(samples=5, interval_s=0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads.threads_for_new_run(samples=5, interval_s=0) == torch.get_num_threads()


def test_extending_a_finished_build_matches_a_straight_run(tmp_path):
    """A finished 4-step UNet stage asked for 6 resumes from its half point (step 2), keeps the old
    plan's later checkpoints aside, and ends with the weights of a straight 6-step run."""
    from safetensors.torch import save_file

    from styleprompt.micro import arch, style_words, unet

    def folder(name):
        out = tmp_path / name
        (out / "vae").mkdir(parents=True)
        arch.build_vae().save_config(str(out / "vae"))
        g = torch.Generator().manual_seed(0)
        save_file(
            {
                "means": torch.randn(6, arch.LATENT_CHANNELS, 16, 16, generator=g),
                "stds": torch.full((6, arch.LATENT_CHANNELS, 16, 16), 0.1),
                "classes": torch.arange(6) % len(world.CLASSES),
                "words": torch.arange(6) % len(style_words()),
            },
            str(out / "latents.safetensors"),
        )
        return out

    extended, straight = folder("extended"), folder("straight")
    assert unet.stage_unet(extended, 4, 2, 1e-3, 0, checkpoint_every=1)
    assert [c.name for c in unet.checkpoints(extended)] == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert unet.stage_unet(extended, 6, 2, 1e-3, 0, checkpoint_every=1)
    assert sorted(p.name for p in (extended / "checkpoints" / "superseded-4").iterdir()) == [
        "checkpoint-3",
        "checkpoint-4",
    ]
    assert unet.stage_unet(straight, 6, 2, 1e-3, 0, checkpoint_every=1)
    a = unet.ema_weights(unet.checkpoints(extended)[-1])
    b = unet.ema_weights(unet.checkpoints(straight)[-1])
    for name in unet.MODULES:
        assert all(torch.allclose(a[name][k], b[name][k], atol=1e-6) for k in a[name]), name
    losses = (extended / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in losses[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_embedding_blend_mixes_two_words_and_trains_both_rows():
    """The blend stage's prompt "a <w1> style of a boat" reads lam*E[w1] + (1-lam)*E[w2] at w1's place."""
    from styleprompt.micro import arch, unet

    tokenizer = arch.build_tokenizer()
    torch.manual_seed(0)
    encoder = arch.build_text_encoder(len(tokenizer))
    ids = tokenizer(["a starry style of a boat", "a starry style of a boat"], return_tensors="pt").input_ids
    starry, muse = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("starry", "muse"))
    table = encoder.get_input_embeddings().weight
    with torch.no_grad():
        plain = encoder(ids)[0]
        expected = table.detach().clone()
        expected[starry] = 0.3 * table[starry] + 0.7 * table[muse]
        encoder.get_input_embeddings().weight.data, saved = expected, table.data.clone()
        by_hand = encoder(ids)[0]
        encoder.get_input_embeddings().weight.data = saved
    blend = unet.EmbeddingBlend(encoder)
    blend.mixes = [(1, starry, muse, 0.3)]  # only the second prompt
    mixed = encoder(ids)[0]
    torch.testing.assert_close(mixed[0], plain[0])
    torch.testing.assert_close(mixed[1], by_hand[1], atol=1e-5, rtol=1e-5)
    mixed[1].sum().backward()
    grad = encoder.get_input_embeddings().weight.grad
    assert grad[starry].abs().sum() > 0 and grad[muse].abs().sum() > 0
    blend.handle.remove()


def test_blend_stage_resumes_exactly_and_is_what_gets_exported(tmp_path):
    """A blend stage killed after its first checkpoint ends where a straight run does; the UNet
    stage's checkpoints stay untouched; export reads the blend stage's last checkpoint."""
    from safetensors.torch import save_file

    from styleprompt.micro import STYLE_WORDS, arch, style_words, unet

    def folder(name):
        out = tmp_path / name
        (out / "vae").mkdir(parents=True)
        arch.build_vae().save_config(str(out / "vae"))
        g = torch.Generator().manual_seed(0)
        latent = (arch.LATENT_CHANNELS, 16, 16)
        save_file(
            {
                "means": torch.randn(6, *latent, generator=g),
                "stds": torch.full((6, *latent), 0.1),
                "classes": torch.arange(6) % len(world.CLASSES),
                "words": torch.arange(6) % len(style_words()),
            },
            str(out / "latents.safetensors"),
        )
        save_file(
            {
                "means": torch.randn(4, *latent, generator=g),
                "stds": torch.full((4, *latent), 0.1),
                "classes": torch.arange(4),
                "first": torch.tensor([0, 1, 2, 3]),
                "second": torch.tensor([4, 5, 6, 7]) % len(STYLE_WORDS),
                "mix": torch.tensor([0.2, 0.4, 0.6, 0.8]),
            },
            str(out / "blend_latents.safetensors"),
        )
        assert unet.stage_unet(out, 2, 2, 1e-3, 0, checkpoint_every=1)
        return out

    killed, straight = folder("killed"), folder("straight")
    unet_checkpoints = [c.name for c in unet.checkpoints(killed)]
    unet.stage_blend(killed, 2, 2, 4, 1e-3, 0.5, 0, checkpoint_every=1)
    (killed / "blend_done.json").unlink()  # as if killed after step 2 of 4
    shutil.rmtree(killed / "blend-checkpoints" / "checkpoint-1")
    unet_final = killed / "checkpoints" / "checkpoint-2"
    unet_final.rename(unet_final.with_name("aside"))  # a resume needs only the blend stage's own checkpoint
    unet.stage_blend(killed, 2, 4, 4, 1e-3, 0.5, 0, checkpoint_every=1)
    unet_final.with_name("aside").rename(unet_final)
    unet.stage_blend(straight, 2, 4, 4, 1e-3, 0.5, 0, checkpoint_every=1)
    assert [c.name for c in unet.checkpoints(killed)] == unet_checkpoints
    final = unet.final_checkpoint(killed)
    assert final == killed / "blend-checkpoints" / "checkpoint-4"
    unet_ema = unet.ema_weights(unet.checkpoints(killed)[-1])["unet"]
    a, b = unet.ema_weights(final), unet.ema_weights(unet.final_checkpoint(straight))
    for name in unet.MODULES:
        assert all(torch.allclose(a[name][k], b[name][k], atol=1e-6) for k in a[name]), name
    blended = a["unet"]
    assert any(not torch.equal(unet_ema[k], blended[k]) for k in unet_ema)  # the blend steps did train
    rows = (killed / "blend_loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
