"""The build's last stage: the EMA weights as a diffusers folder, and `--install` into the package.

Why apart from the stages: export is also its own command (`python -m styleprompt.micro export`),
and installing is the one step allowed to write outside the build folder: the model into
`styleprompt/micro/model` and the judges into `styleprompt/micro/judge`, each by one rename.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from styleprompt.micro import HELD_OUT, JUDGE_DIR, MODEL_DIR, STYLE_WORDS, arch, world
from styleprompt.micro.autoencoder import drop_derived_vae_keys, load_vae
from styleprompt.micro.build_files import save_model_folder
from styleprompt.micro.judge_training import CLASSIFIER, GALLERY, judge_folder
from styleprompt.micro.unet import checkpoints, ema_weights, final_checkpoint
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import atomic_path, write_text_atomic


def check_exportable(out: Path) -> None:
    """Refuse an export (before any work) from a folder that holds no build to export."""
    if not out.is_dir():
        raise UserError(
            f"--output {out}: no such build folder; run `python -m styleprompt.micro build --output {out}` first"
        )
    if not checkpoints(out):
        raise UserError(f"--output {out} holds no UNet checkpoint to export; run the build into it first")
    if not (out / "vae").is_dir() and not (out / "vae-decoder").is_dir():
        raise UserError(f"--output {out} holds no VAE to export; run the build into it first")


def export_pipeline(out: Path, folder: Path, from_checkpoint: Path | None = None) -> Path:
    """The EMA weights of the newest (or given) checkpoint as a diffusers folder (safetensors)."""
    ckpt = from_checkpoint or final_checkpoint(out)
    weights = ema_weights(ckpt)
    tokenizer = arch.build_tokenizer()
    text_encoder = arch.build_text_encoder(len(tokenizer))
    unet = arch.build_unet()
    text_encoder.load_state_dict(weights["text_encoder"])
    unet.load_state_dict(weights["unet"])
    vae = load_vae(out / ("vae-decoder" if (out / "vae-decoder").is_dir() else "vae"))
    pipe = arch.assemble(vae.eval(), text_encoder.eval(), tokenizer, unet.eval())
    card = {
        "checkpoint": f"{ckpt.parent.name}/{ckpt.name}",
        "style_words": STYLE_WORDS,
        "held_out": HELD_OUT,
        "classes": world.CLASSES,
        "parameters": arch.parameter_counts(pipe),
    }

    def finish(tmp: Path) -> None:
        drop_derived_vae_keys(tmp / "vae" / "config.json")
        write_text_atomic(tmp / "build.json", json.dumps(card, indent=1))

    # fp16 on disk (the package must stay under 25 MB); load_micro_pipeline reads it back as fp32.
    return save_model_folder(pipe.to(dtype=torch.float16), folder, fix=finish)


def install(out: Path) -> None:
    """Copy the exported model and the judges the build made into the package (each by one rename)."""
    tmp = MODEL_DIR.with_name(f".{MODEL_DIR.name}.install")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out / "model", tmp)
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    tmp.replace(MODEL_DIR)
    for name in (GALLERY, CLASSIFIER):
        source = judge_folder(out) / name
        if source.is_file():
            with atomic_path(JUDGE_DIR / name) as target:
                shutil.copyfile(source, target)
