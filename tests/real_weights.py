"""Helpers for the tests of the classic methods' real weights (../shared/weights; skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"


def require_weights(name: str) -> Path:
    folder = SHARED_WEIGHTS / name
    if not folder.is_dir():
        pytest.skip(f"shared weights {name}/ not found at {SHARED_WEIGHTS}")
    return folder


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    mse = ((output.clamp(0, 1) - reference) ** 2).mean()
    return float(10 * torch.log10(1 / mse))


def ghiasi_gain(stylized, content, style) -> float:
    """How much closer the output is to the painting than the content was, by the Ghiasi style
    predictor's cosine similarity (the project's learned style metric)."""
    from classic.ghiasi import load_ghiasi, predictor_input

    predictor, _ = load_ghiasi()
    with torch.no_grad():
        vecs = predictor(torch.cat([predictor_input(x) for x in (stylized, content, style)]))
    return float(F.cosine_similarity(vecs[0:1], vecs[2:3]) - F.cosine_similarity(vecs[1:2], vecs[2:3]))


def hide_shared_weights(monkeypatch, tmp_path: Path) -> None:
    """Make the weights lookup find nothing: $STYLEPROMPT_WEIGHTS names an empty folder (the
    repository's ../shared/weights is only the fallback when it is unset), for tests of what a
    user without any weights sees."""
    empty = tmp_path / "no-weights"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("STYLEPROMPT_WEIGHTS", str(empty))
