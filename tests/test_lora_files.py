"""LoRA files as files: `convert` between diffusers' and kohya's layouts (bit-exact round trip,
alpha carried, never over its input), and the one-line refusals of a file that cannot be applied
(a rank mismatch inside the file, a LoRA of another family)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from styleprompt.cli import main as cli
from styleprompt.diffusion import lora
from styleprompt.diffusion.models import load_pipeline
from styleprompt.plumbing.errors import SettingError

# file set -> (model, --lora-conv): a conv LoRA (kohya's LoCon) converts and loads as whole as an attention one
MODELS = {"tiny": ("tiny", False), "tiny-sdxl": ("tiny-sdxl", False), "tiny-conv": ("tiny", True)}


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory) -> dict[str, Path]:
    """A run's two files for tiny and tiny-sdxl, written by lora.py's savers (alpha 8, rank 4: not
    equal, so a lost alpha shows), with random weights (a fresh LoRA's up weights are all zero)."""
    root = tmp_path_factory.mktemp("lora-files")
    files = {}
    for name, (model, conv) in MODELS.items():
        pipe = load_pipeline(model, device="cpu").pipe
        attached = lora.attach(pipe, rank=4, alpha=8.0, blocks="all", text_encoder=True, conv=conv)
        torch.manual_seed(0)
        with torch.no_grad():
            for param in attached.parameters():
                param.normal_()
        folder = root / name
        folder.mkdir()
        files[name] = lora.save_lora(
            pipe, attached, folder / "pytorch_lora_weights.safetensors", {"styleprompt.step": "7"}
        )
        files[name + ":kohya"] = lora.save_kohya(attached, folder / "lora_kohya.safetensors")
    return files


def _same(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("name", list(MODELS))
def test_diffusers_kohya_diffusers_is_bit_exact_and_carries_alpha(lora_files, tmp_path, name):
    model = MODELS[name][0]
    source = lora_files[name]
    assert cli(["convert", str(source), "--to", "lora-kohya", "--output", str(tmp_path / "k.safetensors")]) == 0
    assert cli(["convert", str(tmp_path / "k.safetensors"), "--to", "lora-diffusers", "--output", str(tmp_path)]) == 0
    back = tmp_path / "pytorch_lora_weights.safetensors"  # a folder gets the layout's usual name
    assert _same(source, back)
    assert _same(lora_files[name + ":kohya"], tmp_path / "k.safetensors")  # the same file the run writes
    kohya = load_file(str(tmp_path / "k.safetensors"))
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {8.0}
    assert any(k.startswith("lora_te2_") for k in kohya) == (model == "tiny-sdxl")
    from safetensors import safe_open

    with safe_open(str(back), framework="pt") as handle:
        assert handle.metadata()["styleprompt.step"] == "7"  # our own metadata travels too
    # the alpha, carried in the converted file's metadata, gives diffusers' loader scale alpha/rank = 2
    pipe = load_pipeline(model, device="cpu").pipe
    pipe.load_lora_weights(str(back), adapter_name="back")
    scales = {m.scaling["back"] for m in pipe.unet.modules() if hasattr(m, "scaling") and "back" in m.scaling}
    assert scales == {2.0}
    # every layer of the file is on the UNet: none dropped by a loader that misreads the layout
    unet_layers = [k for k in load_file(str(back)) if k.startswith("unet.") and k.endswith(lora._DOWN)]
    adapted = [m for m in pipe.unet.modules() if hasattr(m, "scaling") and "back" in m.scaling]
    assert len(adapted) == len(unet_layers)
    assert any(isinstance(m.base_layer, torch.nn.Conv2d) for m in adapted) == MODELS[name][1]


def test_kohya_diffusers_kohya_is_bit_exact(lora_files, tmp_path):
    source = lora_files["tiny:kohya"]
    assert cli(["convert", str(source), "--to", "lora-diffusers", "--output", str(tmp_path / "d.safetensors")]) == 0
    assert cli(["convert", str(tmp_path / "d.safetensors"), "--to", "lora-kohya", "--output", str(tmp_path / "k")]) == 0
    assert _same(source, tmp_path / "k" / "lora_kohya.safetensors")


def test_per_module_alphas_survive_both_ways(lora_files, tmp_path):
    """A kohya file may give each module its own alpha (kohya's trainer can): diffusers' file carries
    them as peft's alpha_pattern, and back."""
    kohya = load_file(str(lora_files["tiny:kohya"]))
    first = sorted(k for k in kohya if k.endswith(".alpha"))[0]
    kohya[first] = torch.tensor(2.0)
    save_file(kohya, str(tmp_path / "mixed.safetensors"))
    assert (
        cli(
            [
                "convert",
                str(tmp_path / "mixed.safetensors"),
                "--to",
                "lora-diffusers",
                "--output",
                str(tmp_path / "d.safetensors"),
            ]
        )
        == 0
    )
    assert (
        cli(
            [
                "convert",
                str(tmp_path / "d.safetensors"),
                "--to",
                "lora-kohya",
                "--output",
                str(tmp_path / "k.safetensors"),
            ]
        )
        == 0
    )
    again = load_file(str(tmp_path / "k.safetensors"))
    assert float(again[first]) == 2.0 and sorted(float(v) for k, v in again.items() if k.endswith(".alpha"))[1:] == [
        8.0
    ] * (sum(k.endswith(".alpha") for k in again) - 1)


def _one_line_exit_2(args: list[str], capsys, says: str) -> str:
    capsys.readouterr()
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    return err[0]


def test_convert_refuses_to_write_over_its_input_and_the_wrong_kind(lora_files, tmp_path, capsys):
    copy = tmp_path / "pytorch_lora_weights.safetensors"
    copy.write_bytes(lora_files["tiny"].read_bytes())
    before = copy.read_bytes()
    for target in (str(copy), str(tmp_path)):  # the file itself, and a folder whose usual name is the input
        _one_line_exit_2(
            ["convert", str(copy), "--to", "lora-diffusers", "--output", target], capsys, "is the input file"
        )
    assert copy.read_bytes() == before
    _one_line_exit_2(
        ["convert", str(copy), "--to", "a1111", "--output", str(tmp_path / "x.pt")], capsys, "is a LoRA file"
    )


def test_a_rank_mismatch_inside_the_file_is_one_line_exit_2(lora_files, tmp_path, capsys):
    tensors = load_file(str(lora_files["tiny"]))
    up = next(k for k in tensors if k.startswith("unet.") and k.endswith("lora.up.weight"))
    tensors[up] = torch.zeros(tensors[up].shape[0], 8)  # the down weight beside it has rank 4
    bad = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(bad))
    generate = ["generate", "--model", "tiny", "--prompt", "a house", "--steps", "1", "--device", "cpu"]
    line = _one_line_exit_2(generate + ["--output", str(tmp_path / "out"), "--lora", str(bad)], capsys, "rank mismatch")
    assert line.startswith("error: --lora ") and "down rank 4, up rank 8" in line
    _one_line_exit_2(["inspect", str(bad)], capsys, "rank mismatch")
    _one_line_exit_2(
        ["convert", str(bad), "--to", "lora-kohya", "--output", str(tmp_path / "k.safetensors")],
        capsys,
        "rank mismatch",
    )
    assert not list((tmp_path / "out").glob("*.png"))  # nothing painted with a damaged LoRA


def test_a_lora_of_another_family_is_one_line_exit_2(lora_files, tmp_path, capsys):
    """A LoRA trained on tiny-sdxl, into tiny: named as the setting by the library, as the flag by the CLI."""
    for source in (lora_files["tiny-sdxl"], lora_files["tiny-sdxl:kohya"]):
        generate = ["generate", "--model", "tiny", "--prompt", "a house", "--steps", "1", "--device", "cpu"]
        line = _one_line_exit_2(
            generate + ["--output", str(tmp_path / "out"), "--lora", str(source)], capsys, "model family"
        )
        assert line.startswith("error: --lora ") and "text width is 96 (tiny-sdxl)" in line
    loaded = load_pipeline("tiny", device="cpu")
    with pytest.raises(SettingError) as caught:
        lora.load_loras(loaded, [str(lora_files["tiny-sdxl"])])
    assert caught.value.setting == "loras" and str(caught.value).startswith("loras ")
