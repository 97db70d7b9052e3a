"""Shared fixtures: tiny generated artworks, the shared real images (skip cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHROMIUM_DEFAULT = "/usr/bin/chromium"


def in_ci() -> bool:
    """True when the CI environment variable says so (`CI=true`, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_outside_pip(thing: Path, what: str, how: str) -> Path:
    """The one rule for a test that needs something pip cannot install (a browser, a system tool).

    Why one rule: the README's two commands must end green on a machine with only Python, yet a
    CI run must never turn green by skipping. So outside CI a missing `thing` skips with a
    one-line reason saying how to get it; with CI=true in the environment it fails instead.
    """
    if thing.is_file():
        return thing
    reason = f"{what} not found at {thing}: {how}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: tests that need it fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium for the browser tests (STYLEPROMPT_CHROMIUM overrides the path)."""
    return require_outside_pip(
        Path(os.environ.get("STYLEPROMPT_CHROMIUM") or CHROMIUM_DEFAULT),
        "Chromium",
        "install it with `apt-get install -y chromium` (.ci/run does this) or point STYLEPROMPT_CHROMIUM at one",
    )


def make_artwork(path: Path, seed: int, size: tuple[int, int] = (160, 128)) -> Path:
    """A small striped 'painting' with a per-seed palette: distinct, deterministic, cheap."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    palette = rng.integers(0, 256, size=(3, 3))
    bands = ((xx + yy * rng.uniform(0.2, 1.5)) // rng.integers(6, 20)).astype(int) % 3
    arr = palette[bands] + rng.integers(-20, 20, size=(h, w, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def make_artworks(
    folder: Path, count: int = 3, *, first_seed: int = 0, prefix: str = "a", size: tuple[int, int] = (160, 128)
) -> Path:
    """A new folder of `count` artworks named prefix0.png, prefix1.png, ... (seeds from first_seed)."""
    folder.mkdir(parents=True)
    for i in range(count):
        make_artwork(folder / f"{prefix}{i}.png", seed=first_seed + i, size=size)
    return folder


@pytest.fixture
def artworks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "art"
    folder.mkdir()
    for i, suffix in enumerate([".png", ".jpg", ".webp"]):
        make_artwork(folder / f"art{i}{suffix}", seed=i)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test images not found at {SHARED_DATA}")
    return SHARED_DATA
