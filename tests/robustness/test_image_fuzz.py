"""Fuzz the one image reader: only an RGB image or the project's one-line UserError leaves it.

Pillow's plugins raise NotImplementedError, IndexError, AttributeError, MemoryError, TypeError,
struct.error ... on malformed files, and numpy warns on NaN casts; none of that may reach a user.
Seeded (tests/robustness/fuzz.py), so a failure is reproducible by its name.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import load_image
from tests.robustness.fuzz import mutants, seed_files

SEEDS = seed_files()
PER_FORMAT = 12  # x 34 seed files: 408 mutants


def test_every_format_pillow_can_open_is_seeded():
    # the formats the issue names among them; if this Pillow lost one, the fuzz would silently shrink
    assert {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "DDS", "QOI", "SPIDER", "JPEG2000"} <= set(SEEDS)
    assert len(SEEDS) * PER_FORMAT >= 300


def test_mutated_files_give_an_image_or_one_line(tmp_path: Path, capfd):
    started = time.monotonic()
    escaped, refused, read = [], 0, 0
    for fmt, data in SEEDS.items():
        for mutant in mutants(fmt, data, PER_FORMAT):
            path = tmp_path / f"{mutant.name}.png"  # the .png name every format hides behind
            path.write_bytes(mutant.data)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    img = load_image(path)
                except UserError as exc:
                    message = str(exc)
                    if "\n" in message or path.name not in message:
                        escaped.append(f"{mutant.name}: not one line naming the file: {message!r}")
                    refused += 1
                except BaseException as exc:  # noqa: BLE001 - exactly what must not happen
                    escaped.append(f"{mutant.name}: {type(exc).__name__}: {exc}")
                else:
                    if img.mode != "RGB" or min(img.size) < 1:
                        escaped.append(f"{mutant.name}: read as {img.mode} {img.size}")
                    read += 1
            escaped += [f"{mutant.name}: warning {w.category.__name__}: {w.message}" for w in caught]
            printed = capfd.readouterr()  # libtiff writes to file descriptor 2 itself
            escaped += [f"{mutant.name}: printed {line!r}" for line in (printed.out + printed.err).splitlines()]
            path.unlink()
    elapsed = time.monotonic() - started
    assert not escaped, "\n".join(escaped[:20])
    assert refused > 0 and read + refused == len(SEEDS) * PER_FORMAT
    assert elapsed < 60, f"the fuzz took {elapsed:.0f} s"
