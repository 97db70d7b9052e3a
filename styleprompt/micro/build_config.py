"""The micro build's settings: one dataclass, its command-line flags, its bounds and its file.

Why one place: the build's 18 settings used to be written three times (argparse, `build()`'s
defaults, a hand-copied build_config.json), and nothing refused a setting that could not work:
`--batch 0` or `--checkpoint-every 0` failed only after minutes of work, `--lr nan` trained
nothing. Each field here carries its flag's help and its bounds; the parser is made from the
fields, `check()` refuses a bad value in one line before any work, and `write()` records them
all in `build_config.json`.

The defaults are the shipped model's recipe (docs/micro.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from styleprompt.plumbing.errors import UserError

CONFIG_NAME = "build_config.json"
# The world's 19 paintings, read from the current folder as every command reads its paths: the
# repository's README runs commands from its root, and the paintings live beside it.
DEFAULT_STYLES = "../shared/data/style"

# Seeds: every stage derives its generators' seeds as seed * 1_000_003 + step (numpy's and
# torch's seeds hold 64 bits), so the build's seed stays well inside that.
MAX_BUILD_SEED = 2**32 - 1
# Steps of any one stage: 10x the shipped recipe's longest stage is days on a CPU.
MAX_STEPS = 1_000_000


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _setting(default: Any, help: str, low: float | None = None, high: float | None = None, why: str = "") -> Any:
    return field(default=default, metadata={"help": help, "low": low, "high": high, "why": why})


@dataclass
class BuildConfig:
    """Every setting of `python -m styleprompt.micro build`; the flag of `per_class` is `--per-class`."""

    output: str = _setting("", "build folder (run again with the same folder to resume)")
    styles: str = _setting(DEFAULT_STYLES, "folder of the 19 paintings")
    per_class: int = _setting(16, "pictures per class and style word", 1, 10_000)
    vae_steps: int = _setting(700, "VAE steps (batch 32)", 1, MAX_STEPS)
    decoder_steps: int = _setting(1500, "wide-decoder steps (encoder frozen, batch 32)", 1, MAX_STEPS)
    unet_steps: int = _setting(6400, "text encoder + UNet steps", 1, MAX_STEPS)
    batch: int = _setting(48, "text encoder + UNet batch", 1, 1024)
    lr: float = _setting(1e-3, "text encoder + UNet learning rate", 1e-8, 1.0)
    seed: int = _setting(0, "seed of every stage", 0, MAX_BUILD_SEED, "the stages derive their seeds from it")
    checkpoint_every: int = _setting(100, "UNet-stage checkpoint interval in steps", 1, MAX_STEPS)
    classifier_steps: int = _setting(400, "class judge steps", 1, MAX_STEPS)
    gallery_per_class: int = _setting(2, "style judge gallery: renderings per class and painting", 1, 64)
    judge_test_per_class: int = _setting(6, "class judge test: renderings per class and painting", 1, 64)
    blend_steps: int = _setting(
        0, "style-blend steps after the UNet stage (default 0: none; an experiment, see docs/micro.md)", 0, MAX_STEPS
    )
    blend_lr: float = _setting(2e-4, "learning rate of the blend stage", 1e-8, 1.0)
    blend_fraction: float = _setting(0.5, "share of each blend-stage batch from blends", 0.0, 1.0)
    blend_ema: float = _setting(0.998, "EMA decay of the blend stage", 0.0, 0.999999)
    blend_combos: int = _setting(70, "blends of two paintings, each over every class", 1, 1000)
    max_minutes: float | None = _setting(
        None, "stop the UNet stage after this long (resume later)", 1e-6, 60 * 24 * 365, "positive minutes"
    )
    install: bool = _setting(False, "also write the model and the judges into the package (styleprompt/micro)")

    @staticmethod
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, with its default and help (the parser leaves checking to `check`)."""
        for f in dataclasses.fields(cls):
            help_text = f.metadata["help"]
            if f.type == "bool":
                parser.add_argument(cls.flag(f.name), action="store_true", help=help_text)
                continue
            kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
            default = None if f.name == "output" else f.default
            shown = "" if default in (None, "") else f" (default {default})"
            parser.add_argument(
                cls.flag(f.name), type=kind, default=default, required=f.name == "output", help=help_text + shown
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BuildConfig:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def check(self) -> BuildConfig:
        """Refuse, in one line naming the flag, any setting the build cannot run with (before any work)."""
        if not self.output:
            raise UserError("the build needs --output DIR (a folder for its stages; run again to resume)")
        for f in dataclasses.fields(self):
            low, high = f.metadata["low"], f.metadata["high"]
            value = getattr(self, f.name)
            if low is None or (value is None and f.name == "max_minutes"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{self.flag(f.name)} {value!r} is not a number")
            if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
                reason = f" ({f.metadata['why']})" if f.metadata["why"] else ""
                raise UserError(
                    f"{self.flag(f.name)} {value} is out of range: use {_shown(low)} to {_shown(high)}{reason}"
                )
        return self

    def recipe(self) -> dict[str, Any]:
        """The settings that make the model (where the output is and whether it is installed are not)."""
        values = dataclasses.asdict(self)
        for name in ("output", "styles", "install", "max_minutes"):
            values.pop(name)
        return values

    def write(self, folder: Path) -> Path:
        from styleprompt.plumbing.files import write_text_atomic

        values = {**self.recipe(), "styles": str(Path(self.styles).resolve())}
        return write_text_atomic(folder / CONFIG_NAME, json.dumps(values, indent=1) + "\n")
