"""Model loading: a local diffusers folder round trip, and one-line errors for bad model arguments."""

from __future__ import annotations

import pytest
import torch

from styleprompt.diffusion.models import load_pipeline
from styleprompt.diffusion.tiny import build_tiny_pipeline
from styleprompt.plumbing.errors import UserError


def test_local_diffusers_folder_loads_the_same_model(tmp_path):
    build_tiny_pipeline().save_pretrained(tmp_path / "model")
    loaded = load_pipeline(str(tmp_path / "model"), device="cpu")
    fresh = build_tiny_pipeline()
    assert loaded.family == "custom-32" and loaded.pipe.safety_checker is None
    for name, tensor in fresh.unet.state_dict().items():
        assert torch.equal(loaded.pipe.unet.state_dict()[name], tensor), name
    assert loaded.pipe.tokenizer.get_vocab() == fresh.tokenizer.get_vocab()


@pytest.mark.parametrize(
    "model, message",
    [
        ("folder-without-index", "not a diffusers pipeline"),
        ("weights.bin", "not a .safetensors or .ckpt"),
        ("no spaces/allowed here", "unknown model"),
        ("some-org/some-model", "not available"),
    ],
)
def test_bad_model_arguments_are_one_line(tmp_path, monkeypatch, model, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "folder-without-index").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    arg = str(tmp_path / model) if not model.startswith(("some-org", "no spaces")) else model
    with pytest.raises(UserError) as info:
        load_pipeline(arg, device="cpu")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no CUDA GPU"):
        load_pipeline("tiny", device="cuda")
