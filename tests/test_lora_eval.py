"""Pivotal tuning's token + LoRA pair where the token alone was evaluated: `compare`'s token columns
(through the method's own `--lora` source), `pick`'s (token, LoRA) pairs per step, and the A1111
embedding file written beside the kohya LoRA. Tiny random models, offline."""

from __future__ import annotations

import pytest
import torch

from styleprompt.diffusion.formats import read_embedding
from styleprompt.diffusion.training import train
from styleprompt.diffusion.training_run import TrainingRun
from tests.test_lora import lora_config


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> TrainingRun:
    """A 2-step pivotal run on tiny SD with a snapshot (token + LoRA) at each step; a large LoRA
    learning rate, so the LoRA visibly changes what the model paints."""
    from tests.conftest import make_artworks

    root = tmp_path_factory.mktemp("lora-eval")
    art = make_artworks(root / "art", 3)
    train(lora_config(art, root / "run", steps=2, save_every=1, checkpoint_every=0, lora_lr=0.3))
    return TrainingRun(root / "run")


# -- the A1111 embedding beside the kohya LoRA --------------------------------------------------------


def _same_vectors(a, b) -> None:
    assert a.token == b.token
    assert len(a.parts()) == len(b.parts())
    for x, y in zip(a.parts(), b.parts()):
        assert torch.equal(x.float(), y.float())


def test_a_lora_run_writes_the_webui_embedding_beside_the_kohya_lora(lora_run):
    from safetensors.torch import load_file

    path = lora_run.webui_embedding
    assert path.is_file() and path.parent == lora_run.kohya_lora.parent
    assert list(load_file(str(path))) == ["emb_params"]  # A1111's own safetensors layout, one key
    _same_vectors(read_embedding(path), read_embedding(lora_run.embedding))


def test_an_sdxl_lora_run_writes_clip_l_and_clip_g(tmp_path):
    from safetensors.torch import load_file

    from tests.conftest import make_artworks

    art = make_artworks(tmp_path / "art", 2)
    train(lora_config(art, tmp_path / "run", model="tiny-sdxl", steps=1, save_every=0, checkpoint_every=0))
    run = TrainingRun(tmp_path / "run")
    assert sorted(load_file(str(run.webui_embedding))) == ["clip_g", "clip_l"]
    _same_vectors(read_embedding(run.webui_embedding), read_embedding(run.embedding))


def test_a_token_only_run_writes_no_webui_embedding(tmp_path):
    from tests.conftest import make_artworks

    art = make_artworks(tmp_path / "art", 2)
    train(lora_config(art, tmp_path / "run", adapter="none", steps=1, save_every=0, checkpoint_every=0))
    run = TrainingRun(tmp_path / "run")
    assert run.embedding.is_file() and not run.webui_embedding.exists()
