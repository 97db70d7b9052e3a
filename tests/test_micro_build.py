"""The micro build on the library's parts (issue 23 item 5) and its crash-safe state (issue 26 item 4).

The first test is the proof that the shipped model needs no rebuild: the UNet stage continued for
a few steps from the same checkpoint by the build's previous code and by this one ends in the same
tensors, bit for bit (weights, EMA, AdamW's moments), and both export the same model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from styleprompt.micro import arch, style_words, unet, world
from styleprompt.micro.build_config import BuildConfig
from styleprompt.plumbing.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# The last commit with the build's own checkpoint format, loss log and writes (the shipped model's code).
OLD_REVISION = "0380d49"


def build_folder(tmp_path: Path, name: str, vae_weights: bool = False) -> Path:
    """A build folder at the UNet stage: a VAE config (or a whole random VAE) and six pictures' latents."""
    out = tmp_path / name
    (out / "vae").mkdir(parents=True)
    torch.manual_seed(0)
    vae = arch.build_vae()
    vae.save_pretrained(str(out / "vae")) if vae_weights else vae.save_config(str(out / "vae"))
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


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint under one naming, whichever layout wrote it."""
    if checkpoint.name.startswith("step-"):
        tensors = {}
        for name in unet.MODULES:
            tensors.update({f"{name}.{k}": v for k, v in load_file(str(checkpoint / f"{name}.safetensors")).items()})
            ema = load_file(str(checkpoint / f"{name}.ema.safetensors"))
            tensors.update({f"ema.{name}.{k}": v for k, v in ema.items()})
        moments = load_file(str(checkpoint / "optimizer.safetensors"))
        tensors.update({f"optimizer.{k}": v.reshape(()) if k.endswith(".step") else v for k, v in moments.items()})
        return tensors
    return load_file(str(checkpoint / "state.safetensors"))


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture
def one_thread(monkeypatch):
    """Bit-identity needs one float rounding: the same thread count for every run compared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(unet, "set_threads", lambda *a, **k: None)
    yield
    torch.set_num_threads(threads)


def _old_build(tmp_path: Path, monkeypatch):
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_REVISION}:styleprompt/micro/build.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"the build's previous code ({OLD_REVISION}) is not in this checkout's history")
    path = tmp_path / "old_micro_build.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_micro_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "set_threads", lambda *a, **k: None)
    return module


@pytest.mark.slow
def test_the_new_code_continues_the_old_codes_checkpoint_bit_identically(tmp_path, monkeypatch, one_thread):
    from styleprompt.micro import export

    old = _old_build(tmp_path, monkeypatch)
    base = build_folder(tmp_path, "base", vae_weights=True)
    assert old.stage_unet(base, 4, 2, 1e-3, 0, checkpoint_every=2)
    for name in ("by-old", "by-new"):
        shutil.copytree(base, tmp_path / name)
        (tmp_path / name / "unet_done.json").unlink()
        shutil.rmtree(tmp_path / name / "checkpoints" / "step-000004")  # as if killed after step 2
    by_old, by_new = tmp_path / "by-old", tmp_path / "by-new"
    assert old.stage_unet(by_old, 4, 2, 1e-3, 0, checkpoint_every=2)
    assert unet.stage_unet(by_new, 4, 2, 1e-3, 0, checkpoint_every=2)  # reads the old layout's step-000002
    old_final, new_final = by_old / "checkpoints" / "step-000004", by_new / "checkpoints" / "checkpoint-4"
    _assert_identical(_state(old_final), _state(new_final))
    _assert_identical(_state(old_final), _state(base / "checkpoints" / "step-000004"))  # resuming changed nothing

    # A straight run of the new code, and a resume from its own layout, end there too.
    straight = build_folder(tmp_path, "straight")
    assert unet.stage_unet(straight, 4, 2, 1e-3, 0, checkpoint_every=2)
    _assert_identical(_state(old_final), _state(straight / "checkpoints" / "checkpoint-4"))
    shutil.rmtree(straight / "checkpoints" / "checkpoint-4")
    (straight / "unet_done.json").unlink()
    assert unet.stage_unet(straight, 4, 2, 1e-3, 0, checkpoint_every=2)
    _assert_identical(_state(old_final), _state(straight / "checkpoints" / "checkpoint-4"))
    rows = (by_new / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,elapsed_s" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]

    # Both export the same model files.
    old.export_pipeline(by_old, by_old / "model", old_final)
    export.export_pipeline(by_new, by_new / "model", new_final)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        _assert_identical(load_file(str(by_old / "model" / part)), load_file(str(by_new / "model" / part)))
    assert json.loads((by_new / "model" / "build.json").read_text())["checkpoint"] == "checkpoints/checkpoint-4"


@pytest.mark.slow
def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, one_thread, caplog):
    """A torn newest checkpoint is moved aside and the stage redoes its steps from the previous one,
    ending where a straight run does; a finished stage whose final checkpoint is torn is redone too."""
    straight, damaged = build_folder(tmp_path, "straight"), build_folder(tmp_path, "damaged")
    assert unet.stage_unet(straight, 3, 2, 1e-3, 0, checkpoint_every=1)
    assert unet.stage_unet(damaged, 3, 2, 1e-3, 0, checkpoint_every=1)
    newest = damaged / "checkpoints" / "checkpoint-3" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # the done marker stays: a finished build, torn
    assert unet.stage_unet(damaged, 3, 2, 1e-3, 0, checkpoint_every=1)
    _assert_identical(
        _state(straight / "checkpoints" / "checkpoint-3"), _state(damaged / "checkpoints" / "checkpoint-3")
    )
    assert any(p.name.startswith("checkpoint-3.damaged-") for p in (damaged / "checkpoints").iterdir())
    # A checkpoint whose state.json is unreadable (not only torn tensors) is skipped the same way.
    (damaged / "unet_done.json").unlink()
    (damaged / "checkpoints" / "checkpoint-3" / "state.json").write_text("{not json")
    assert unet.stage_unet(damaged, 3, 2, 1e-3, 0, checkpoint_every=1)
    _assert_identical(
        _state(straight / "checkpoints" / "checkpoint-3"), _state(damaged / "checkpoints" / "checkpoint-3")
    )


@pytest.mark.slow
def test_a_torn_stage_result_is_rebuilt(tmp_path):
    """A truncated latents file is not taken as done: moved aside, the latents stage encodes again."""
    from styleprompt.micro import autoencoder

    out = build_folder(tmp_path, "out", vae_weights=True)
    (out / "data").mkdir()
    g = torch.Generator().manual_seed(1)
    for word in style_words():
        images = torch.randint(0, 256, (2, 64, 64, 3), generator=g, dtype=torch.uint8)
        save_file({"images": images, "classes": torch.tensor([0, 1])}, str(out / "data" / f"{word}.safetensors"))
    latents = out / "latents.safetensors"
    latents.unlink()
    autoencoder.stage_latents(out)
    whole = {k: v.clone() for k, v in load_file(str(latents)).items()}  # not a view of the file torn below
    latents.write_bytes(latents.read_bytes()[:-100])
    autoencoder.stage_latents(out)
    again = load_file(str(latents))
    assert sorted(again) == sorted(whole)
    for key in whole:
        assert torch.equal(again[key], whole[key]), key
    assert [p.name.split(".damaged-")[0] for p in out.glob("*.damaged-*")] == ["latents.safetensors"]
    assert len(whole["means"]) == 2 * 2 * len(style_words())


# -- the settings --------------------------------------------------------------------------------------------


def _parsed(*argv: str) -> BuildConfig:
    from styleprompt.micro.__main__ import parser

    return BuildConfig.from_args(parser().parse_args(["build", *argv]))


def test_one_config_behind_the_flags_with_the_shipped_recipe_as_defaults():
    assert _parsed("--output", "x") == BuildConfig(output="x")
    shipped = {"per_class": 16, "vae_steps": 700, "decoder_steps": 1500, "unet_steps": 6400}
    assert {k: getattr(BuildConfig(), k) for k in shipped} == shipped
    assert (BuildConfig().classifier_steps, BuildConfig().batch, BuildConfig().seed) == (400, 48, 0)
    cfg = _parsed("--output", "x", "--per-class", "3", "--blend-fraction", "0.25", "--install")
    assert (cfg.per_class, cfg.blend_fraction, cfg.install) == (3, 0.25, True)


def test_the_config_is_written_once_with_every_setting_of_the_recipe(tmp_path):
    cfg = BuildConfig(output=str(tmp_path), per_class=3)
    written = json.loads(cfg.write(tmp_path).read_text())
    assert written == {**cfg.recipe(), "styles": str(Path(cfg.styles).resolve())}
    assert written["per_class"] == 3 and "blend_ema" in written and "gallery_per_class" in written


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--per-class", "0", "--per-class 0 is out of range"),
        ("--per-class", "-3", "--per-class -3 is out of range"),
        ("--batch", "0", "--batch 0 is out of range"),
        ("--checkpoint-every", "0", "--checkpoint-every 0 is out of range"),
        ("--lr", "nan", "--lr nan is out of range"),
        ("--lr", "inf", "--lr inf is out of range"),
        ("--max-minutes", "-1", "--max-minutes -1.0 is out of range"),
        ("--blend-fraction", "5", "--blend-fraction 5.0 is out of range"),
        ("--seed", "-1", "--seed -1 is out of range"),
        ("--unet-steps", "0", "--unet-steps 0 is out of range"),
        ("--blend-ema", "1", "--blend-ema 1.0 is out of range"),
    ],
)
def test_every_setting_is_checked(flag, value, says):
    with pytest.raises(UserError, match=says.replace("+", r"\+")):
        _parsed("--output", "x", flag, value).check()


def test_settings_the_memory_cannot_hold_are_refused_with_the_largest_that_fits():
    from styleprompt.micro.build import check_memory, estimate_mib

    check_memory(BuildConfig(output="x"))  # the shipped recipe fits
    assert estimate_mib(BuildConfig(output="x")) < 2048
    with pytest.raises(UserError, match=r"--per-class 400 with --batch 48 needs about .* use --per-class at most \d+"):
        check_memory(BuildConfig(output="x", per_class=400))
    with pytest.raises(UserError, match="use a smaller --batch"):
        check_memory(BuildConfig(output="x", batch=1024))


# -- the whole build -------------------------------------------------------------------------------------------


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "styleprompt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _package_files() -> dict[str, bytes]:
    from styleprompt.micro import JUDGE_DIR, MODEL_DIR

    return {str(p): p.read_bytes() for root in (MODEL_DIR, JUDGE_DIR) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_complete_tiny_build_writes_only_under_its_output(tmp_path, shared_data):
    """Every stage with the smallest settings, through the command line: a model and both judges under
    --output, the package (shipped model and judges) byte for byte as it was, `git status` unchanged."""
    from styleprompt.micro.__main__ import main

    styles = shared_data / "style"
    if not styles.is_dir():
        pytest.skip(f"the world's paintings are not in {styles}")
    status, package = _git_status(), _package_files()
    out = tmp_path / "build"
    argv = ["build", "--output", str(out), "--styles", str(styles), "--per-class", "1", "--vae-steps", "1"]
    argv += ["--decoder-steps", "1", "--unet-steps", "2", "--batch", "2", "--checkpoint-every", "1"]
    argv += ["--classifier-steps", "1", "--blend-combos", "1", "--gallery-per-class", "1"]
    argv += ["--judge-test-per-class", "1"]
    assert main(argv) == 0
    for made in ("model/model_index.json", "judge/classifier.safetensors", "judge/style_gallery.safetensors"):
        assert (out / made).is_file(), made
    assert json.loads((out / "build_config.json").read_text())["per_class"] == 1
    assert (out / "loss.png").is_file() and (out / "classifier.json").is_file()
    assert _git_status() == status
    assert _package_files() == package
    # Run again: every stage is found done, nothing is redone, the package still untouched.
    before = {p: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "data").iterdir()} == before
    assert _package_files() == package
