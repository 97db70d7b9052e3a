"""Build the micro model from nothing, resumably: world data, VAE, text encoder + UNet, judges.

`python -m styleprompt.micro build --output build/micro [--install]`. This module only orders
the stages and guards the run; each stage is a module of its own (`world_data`, `autoencoder`,
`unet`, `judge_training`, `export`), and the settings are one `BuildConfig`.

Guards, all before any work (issue 26): every setting in range, the output a folder the build
can write, the 19 paintings readable, the memory the settings need within the budget that
`classic.limits` sets for every command; then the output folder's lock for the whole run (one
build per folder). Every stage writes its result into `--output` and is skipped when that result
is already there and intact (a torn one is rebuilt); nothing outside `--output` is written
unless `--install` is given.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from styleprompt.micro import style_words, world
from styleprompt.micro.build_config import BuildConfig
from styleprompt.micro.build_files import log
from styleprompt.plumbing.errors import UserError

# Measured (peak RSS of two text encoder + UNet steps, one thread, 2-core CPU, 2026-12-02):
# 609 MiB at batch 8, 924 MiB at batch 48, so about 8 MiB a sample over a fixed part. The VAE and
# decoder stages train at a fixed batch of 32; STAGE_MIB is an allowance for them (not measured
# apart) on top of that fixed part.
STAGE_MIB = 1024
PER_SAMPLE_MIB = 8
# What each picture costs while it is held: 64x64x3 bytes, and its latent mean and std, plain
# and mirrored (16x16x16 float32 each).
PICTURE_BYTES = 64 * 64 * 3 + 2 * 2 * 16 * 16 * 16 * 4


def estimate_mib(cfg: BuildConfig) -> float:
    """Memory the build's largest stage needs with these settings (all pictures held, one batch trained)."""
    pictures = cfg.per_class * len(world.CLASSES) * len(style_words()) + cfg.blend_combos * len(world.CLASSES)
    return STAGE_MIB + pictures * PICTURE_BYTES / 2**20 + cfg.batch * PER_SAMPLE_MIB


def check_memory(cfg: BuildConfig) -> None:
    from classic.limits import MEMORY_BUDGET_MIB

    need = estimate_mib(cfg)
    if need <= MEMORY_BUDGET_MIB:
        return
    per_picture_budget = MEMORY_BUDGET_MIB - STAGE_MIB - cfg.batch * PER_SAMPLE_MIB
    most = int(per_picture_budget * 2**20 / PICTURE_BYTES / (len(world.CLASSES) * len(style_words())))
    advice = f"use --per-class at most {most}" if most >= 1 else "use a smaller --batch"
    raise UserError(
        f"--per-class {cfg.per_class} with --batch {cfg.batch} needs about {need / 1024:.1f} GiB of memory; "
        f"the build holds in {MEMORY_BUDGET_MIB // 1024} GiB: {advice}"
    )


def check_build(cfg: BuildConfig) -> tuple[Path, Path]:
    """Every setting, the paintings and the output folder, before any work; returns (output, paintings)."""
    from styleprompt.micro.world_data import check_style_folder
    from styleprompt.plumbing.files import check_output_folder

    cfg.check()
    out = check_output_folder(cfg.output)
    check_memory(cfg)
    styles = check_style_folder(cfg.styles)
    return out, styles


def build(cfg: BuildConfig) -> Path | None:
    """Run (or resume) every stage into `cfg.output`; returns the exported model's folder (None until done)."""
    from styleprompt.plumbing.folder_lock import locked_folder

    out, styles = check_build(cfg)
    with locked_folder(out, "micro build"):
        return _build(cfg, out, styles)


def _build(cfg: BuildConfig, out: Path, styles: Path) -> Path | None:
    from styleprompt.micro import autoencoder, export, judge_training, unet, world_data
    from styleprompt.plumbing.files import atomic_path, remove_stale_temporaries

    for folder in (out, out / "data", out / "judge"):
        remove_stale_temporaries(folder)
    cfg.write(out)
    timings: dict[str, float] = {}

    def timed(name: str, stage) -> object:
        t0 = time.time()
        result = stage()
        timings[name] = round(time.time() - t0, 1)
        log.warning("stage %s: %.0f s", name, timings[name])
        return result

    timed("data", lambda: world_data.stage_data(out, styles, cfg.per_class, cfg.seed))
    timed("blend data", lambda: world_data.stage_blend_data(out, styles, cfg.blend_combos, cfg.seed))
    timed("gallery", lambda: judge_training.stage_gallery(out, styles, cfg.gallery_per_class))
    timed("vae", lambda: autoencoder.stage_vae(out, cfg.vae_steps, 32, cfg.seed))
    timed("latents", lambda: autoencoder.stage_latents(out))
    timed("blend latents", lambda: autoencoder.stage_blend_latents(out))
    timed("decoder", lambda: autoencoder.stage_decoder(out, cfg.decoder_steps, 32, cfg.seed))
    done = timed(
        "unet",
        lambda: unet.stage_unet(
            out, cfg.unet_steps, cfg.batch, cfg.lr, cfg.seed, cfg.checkpoint_every, cfg.max_minutes
        ),
    )
    if done:
        timed(
            "blend",
            lambda: unet.stage_blend(
                out,
                cfg.unet_steps,
                cfg.blend_steps,
                cfg.batch,
                cfg.blend_lr,
                cfg.blend_fraction,
                cfg.seed,
                cfg.checkpoint_every,
                cfg.blend_ema,
            ),
        )
        timed(
            "classifier",
            lambda: judge_training.stage_classifier(
                out, styles, cfg.classifier_steps, cfg.seed, cfg.judge_test_per_class
            ),
        )
    timings_path = out / "timings.csv"
    previous = timings_path.read_text() if timings_path.is_file() else ""
    row = io.StringIO()
    csv.writer(row).writerow([time.strftime("%Y-%m-%dT%H:%M:%S"), json.dumps(timings)])
    with atomic_path(timings_path) as tmp:
        tmp.write_text(previous + row.getvalue())
    if not done:
        return None
    # Blend checkpoints from an earlier run with --blend-steps are not exported when it is now 0.
    source = unet.final_checkpoint(out) if cfg.blend_steps > 0 else unet.checkpoints(out)[-1]
    model = export.export_pipeline(out, out / "model", source)
    if cfg.install:
        export.install(out)
    return model


def export_build(out: Path, install: bool = False) -> Path:
    """`python -m styleprompt.micro export`: the newest checkpoint's EMA weights as out/model (and the package's)."""
    from styleprompt.micro import export
    from styleprompt.plumbing.files import check_output_folder
    from styleprompt.plumbing.folder_lock import locked_folder

    out = check_output_folder(out)
    export.check_exportable(out)
    with locked_folder(out, "micro build"):
        model = export.export_pipeline(out, out / "model")
        if install:
            export.install(out)
    return model
