"""A training run's folder: the one module that names its files, its step files, its config.json,
what `--overwrite` may remove, and whether a resume continues the recipe recorded there.

Why one owner (issue 23): the trainer wrote `embeddings/step-NNNNNN...` and config.json, the train
command kept its own list of what `--overwrite` removes, `pick` re-derived the step naming with
its own regex, re-validated config.json with its own schema and guessed three places for the
artworks because `images` was stored as typed. Here each name is spelled once; a new output of a
run (a LoRA's weights, say) is one constant in `TrainingRun`, and `--overwrite` removes it from then
on (`TrainingRun.OWN` is built from those constants).

Why the recipe check (issue 26 item 3): `--resume latest` used to accept another `--seed`, `--lr`
or `--grad-accum` silently and rewrite config.json with them, so the resumed run was neither the
old recipe nor the new one. A resume now compares every setting that changes the result with
config.json and refuses a difference in one line naming the settings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, NamedTuple, Sequence

from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import write_text_atomic

if TYPE_CHECKING:
    from styleprompt.diffusion.config import TrainConfig

log = logging.getLogger(__name__)

_STEP = re.compile(r"^step-(\d+)$")
# config.json is a few KiB; a bigger one is not a run's settings, and reading it whole would be the harm.
MAX_CONFIG_BYTES = 1 << 20

# The settings that change what a run learns: a resume must use the recorded ones. Left out on
# purpose: where outputs go and how often (output, save/checkpoint/preview settings), the device,
# gradient checkpointing (recomputes the same activations), and resume itself. `steps` is checked
# only under a schedule whose learning rate depends on the run's length (below): under the
# constant default a run may be continued past its end, which is what a resume with more steps is.
RECIPE = (
    "token",
    "model",
    "init_word",
    "vectors",
    "norm_cap",
    "batch_size",
    "grad_accum",
    "lr",
    "scale_lr",
    "lr_scheduler",
    "lr_warmup_steps",
    "adam_beta1",
    "adam_beta2",
    "adam_weight_decay",
    "adam_epsilon",
    "learnable_property",
    "mixed_precision",
    "seed",
    "adapter",
    "lora_rank",
    "lora_alpha",
    "lora_lr",
    "ti_fraction",
    "lora_start",
    "lora_text_encoder",
    "lora_blocks",
    "lora_conv",
)
# diffusers' schedules whose learning rate at a step depends on num_training_steps.
SCHEDULES_BY_LENGTH = ("linear", "cosine", "cosine_with_restarts", "polynomial")


def step_name(step: int, suffix: str = "") -> str:
    """`step-000250` (+ suffix): how every per-step file or folder of a run is named."""
    return f"step-{int(step):06d}{suffix}"


def step_of(name: str, suffix: str = "") -> int | None:
    """The step a `step_name` names (None: not such a name)."""
    if suffix:
        if not name.endswith(suffix):
            return None
        name = name[: -len(suffix)]
    match = _STEP.match(name)
    return int(match.group(1)) if match else None


class PickFiles(NamedTuple):
    """What `styleprompt pick` writes into its output folder (RUN/pick by default)."""

    plot: Path
    table: Path
    summary: Path
    sheet: Path
    images: Path


class TrainingRun:
    """One training run folder (the `--output` of `styleprompt train`, or an app run)."""

    # Everything a run, the app's Train tab and `pick` (with its default output) write directly
    # in the folder. Add a new output here: OWN below picks it up, so --overwrite removes it too.
    EMBEDDING = "learned_embeds.safetensors"  # diffusers' name for a textual-inversion file
    EMBEDDINGS = "embeddings"  # step-NNNNNN.safetensors every --save-every steps
    PREVIEWS = "previews"  # step-NNNNNN.png
    CHECKPOINTS = "checkpoints"  # checkpoint-N/ (checkpoints.py owns what is inside)
    DIFFUSERS = "diffusers"  # SDXL: diffusers' pair of files, one per text encoder
    LORA = "pytorch_lora_weights.safetensors"  # --adapter lora: diffusers' name (load_lora_weights(RUN) finds it)
    KOHYA_LORA = "lora_kohya.safetensors"  # the same LoRA in kohya's layout (A1111, Forge, ComfyUI)
    # --adapter lora: the token for A1111/Forge/ComfyUI's embeddings/ folder, named by diffusers'
    # advanced scripts' rule (LoRA `NAME.safetensors`, its token `NAME_emb.safetensors`): emb_params, sdxl on SDXL
    WEBUI_EMBEDDING = "lora_kohya_emb.safetensors"
    LOSS_LOG = "loss.csv"
    LOSS_PLOT = "loss.png"
    CONFIG = "config.json"
    PICK = "pick"  # pick's default output folder
    FORMATS = "formats"  # the app's copies of the token in every format
    ARTWORKS = "artworks"  # the app's staged uploads (never removed while --images points there)
    OWN: ClassVar[tuple[str, ...]] = tuple(v for k, v in dict(vars()).items() if k.isupper() and isinstance(v, str))
    # The folders the trainer writes files into directly ("" is the run folder): where a killed
    # writer's temporaries are cleared at the start of a run.
    WRITTEN_FOLDERS: ClassVar[tuple[str, ...]] = ("", EMBEDDINGS, PREVIEWS, DIFFUSERS)

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()

    def __repr__(self) -> str:
        return f"TrainingRun({str(self.folder)!r})"

    # -- names ------------------------------------------------------------------------------------

    @property
    def embedding(self) -> Path:
        return self.folder / self.EMBEDDING

    @property
    def checkpoints(self) -> Path:
        return self.folder / self.CHECKPOINTS

    @property
    def diffusers(self) -> Path:
        return self.folder / self.DIFFUSERS

    @property
    def loss_log(self) -> Path:
        return self.folder / self.LOSS_LOG

    @property
    def loss_plot(self) -> Path:
        return self.folder / self.LOSS_PLOT

    @property
    def config_path(self) -> Path:
        return self.folder / self.CONFIG

    @property
    def pick_folder(self) -> Path:
        return self.folder / self.PICK

    @property
    def formats(self) -> Path:
        return self.folder / self.FORMATS

    @property
    def artworks(self) -> Path:
        return self.folder / self.ARTWORKS

    def step_embedding(self, step: int) -> Path:
        return self.folder / self.EMBEDDINGS / step_name(step, ".safetensors")

    @property
    def lora(self) -> Path:
        return self.folder / self.LORA

    @property
    def kohya_lora(self) -> Path:
        return self.folder / self.KOHYA_LORA

    @property
    def webui_embedding(self) -> Path:
        return self.folder / self.WEBUI_EMBEDDING

    def step_lora(self, step: int) -> Path:
        """The LoRA of the same step as `step_embedding(step)` (`step_embeddings` does not list it)."""
        return self.folder / self.EMBEDDINGS / step_name(step, ".lora.safetensors")

    def preview(self, step: int) -> Path:
        return self.folder / self.PREVIEWS / step_name(step, ".png")

    def written_folders(self) -> list[Path]:
        return [self.folder / name for name in self.WRITTEN_FOLDERS]

    @staticmethod
    def pick_files(folder: str | os.PathLike) -> PickFiles:
        root = Path(folder)
        return PickFiles(
            root / "pick.png", root / "pick.csv", root / "pick.json", root / "pick-grid.png", root / "images"
        )

    @staticmethod
    def pick_image(folder: str | os.PathLike, step: int, name: str) -> Path:
        return TrainingRun.pick_files(folder).images / step_name(step) / name

    def step_embeddings(self) -> list[tuple[int, Path]]:
        """(step, file) of every intermediate embedding, by step."""
        folder = self.folder / self.EMBEDDINGS
        if not folder.is_dir():
            return []
        found = [(step_of(p.name, ".safetensors"), p) for p in folder.iterdir()]
        return sorted((step, path) for step, path in found if step is not None)

    # -- claiming and locking ---------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[TrainingRun]:
        """This process's exclusive hold on the folder for a whole run (issue 26 item 2).

        Under `accelerate launch` the processes of one run share the folder: only the first
        (rank 0, the one that writes the results) holds the lock, or the others would be refused.
        """
        from styleprompt.plumbing.run_folder import run_folder_lock

        if _launched_rank() != 0:
            yield self
            return
        with run_folder_lock(self.folder, "training"):
            yield self

    def claim(self, *, overwrite: bool, resume: bool, images: str | os.PathLike | None = None) -> None:
        """Refuse a non-empty folder unless resuming; with `overwrite`, remove the old run's files
        first. The artworks folder `images` is never removed, even when it is one of them. Under
        `accelerate launch` only rank 0 claims (the others would find its first files)."""
        from styleprompt.plumbing.run_folder import claim_run_folder

        if _launched_rank() != 0:
            return

        claim_run_folder(
            self.folder,
            self.OWN,
            overwrite=overwrite,
            resume=resume,
            resume_hint="--resume latest",
            keep=[images] if images else (),
        )

    # -- config.json ------------------------------------------------------------------------------

    def write_config(self, cfg: TrainConfig, **recorded: Any) -> Path:
        """config.json: the run's settings, `images` as an absolute path (pick and a resume find the
        artworks from any working directory), plus what the run measured (`recorded`)."""
        settings = dict(cfg.to_dict(), images=str(Path(cfg.images).expanduser().resolve()), **recorded)
        return write_text_atomic(self.config_path, json.dumps(settings, indent=2))

    def read_config(self) -> dict:
        """The run's config.json, schema-checked; {} when there is none.

        Why checked: the file is data a user may edit or be handed. A list, a `model` that is not
        text, or `"cpu_threads": 4096` would otherwise surface deep in the model loader or exhaust
        the machine on resume; here it is one line naming the file.
        """
        path = self.config_path
        if not path.exists():
            return {}
        fix = f"fix or remove {path.name} in {path.parent}, or start a new run (another --output)"
        if not path.is_file():
            raise UserError(f"{path} is not a regular file; {fix}")
        try:
            size = path.stat().st_size
            if size > MAX_CONFIG_BYTES:
                raise UserError(f"{path} holds {size:,} bytes, not a run's settings (a few KiB); {fix}")
            config = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
            raise UserError(f"cannot read {path} ({type(exc).__name__}); {fix}") from None
        if not isinstance(config, dict):
            raise UserError(f"{path} holds a {type(config).__name__}, not a run's settings; {fix}")
        for key, value in config.items():
            problem = _schema_problem(key, value)
            if problem:
                raise UserError(f"{path}: '{key}' is {_shown(value)}, {problem}; {fix}")
        return config

    def artworks_folder(self, config: dict, images: str | os.PathLike | None = None) -> Path:
        """The training artworks: `images` when given, else the folder config.json records
        (absolute; a run from before absolute paths recorded it relative to where it was trained)."""
        if images is not None:
            folder = Path(images).expanduser()
            if not folder.is_dir():
                raise SettingError("images", f"{{setting}} {folder} is not a folder")
            return folder
        recorded = config.get("images")
        if recorded and Path(recorded).expanduser().is_dir():
            return Path(recorded).expanduser()
        raise UserError(
            f"cannot find the training artworks of {self.folder} (config.json says {recorded!r}); pass --images FOLDER"
        )

    # -- resume -----------------------------------------------------------------------------------

    def check_resume(
        self, cfg: TrainConfig, recorded: dict, *, images_digest: str | None = None, resolution: int | None = None
    ) -> None:
        """Refuse, in one line naming every differing setting, a resume that would change the recipe
        recorded in config.json. `resolution` is the effective one (the model's own when
        cfg.resolution is unset; pass it once known); `images_digest` is `artworks_digest`."""
        differences = recipe_differences(recorded, cfg, images_digest=images_digest, resolution=resolution)
        if not differences:
            return
        raise SettingError(
            "resume",
            f"{{setting}}: the run in {self.folder} was trained with another recipe ({'; '.join(differences)}); "
            "a resume continues the recorded one: resume with its settings, start a new run (another --output), "
            "or add --overwrite to replace it",
        )


def recipe_differences(
    recorded: dict, cfg: TrainConfig, *, images_digest: str | None = None, resolution: int | None = None
) -> list[str]:
    """`setting recorded -> asked` for each result-changing setting that differs (none: [])."""
    now = cfg.to_dict()
    found = []
    for key in RECIPE:
        if key in recorded and not _same(recorded[key], now[key]):
            found.append(f"{key} {_shown(recorded[key])} -> {_shown(now[key])}")
    schedule = recorded.get("lr_scheduler", cfg.lr_scheduler)
    if schedule in SCHEDULES_BY_LENGTH and "steps" in recorded and recorded["steps"] != cfg.steps:
        found.append(f"steps {recorded['steps']} -> {cfg.steps} (the {schedule} schedule's length)")
    elif recorded.get("adapter", "none") != "none" and "steps" in recorded and recorded["steps"] != cfg.steps:
        if float(recorded.get("ti_fraction", 1.0)) < 1.0:  # the token stops at ti_fraction x steps
            found.append(f"steps {recorded['steps']} -> {cfg.steps} (where --ti-fraction stops the token)")
    asked_resolution = resolution if resolution is not None else (cfg.resolution or None)
    if asked_resolution is not None and recorded.get("resolution") not in (None, asked_resolution):
        found.append(f"resolution {recorded['resolution']} -> {asked_resolution}")
    if "validate_every" in recorded and bool(recorded["validate_every"]) != bool(cfg.validate_every):
        # with validation on, an artwork may be held out of training (validation.split_held_out)
        found.append(f"validate_every {_shown(recorded['validate_every'])} -> {_shown(cfg.validate_every)}")
    if images_digest is not None and recorded.get("images_digest") not in (None, images_digest):
        found.append(f"images: the artworks in {cfg.images} are not the ones the run was trained on")
    elif "images_digest" not in recorded and recorded.get("images"):  # a run from before the digest
        if Path(recorded["images"]).expanduser().resolve() != Path(cfg.images).expanduser().resolve():
            found.append(f"images {_shown(recorded['images'])} -> {_shown(cfg.images)}")
    return found


def _launched_rank() -> int:
    """This process's rank in a distributed launch (torchrun/accelerate set RANK); 0 when alone."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def artworks_digest(paths: Sequence[Path]) -> str:
    """sha256 over the artworks' names and bytes: the same pictures, wherever the folder now is."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode("utf-8", "surrogateescape") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the schema of config.json ----------------------------------------------------------------------

_NONE = type(None)
_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "str | None": (str, _NONE),
    "int | None": (int, _NONE),
}
# What a run records beside its TrainConfig, with its bounds.
_EXTRA_INTS = {"images_used": (1, None), "resolution": (1, None), "cpu_threads": (1, None)}
_EXTRA_TEXT = {"images_digest"}


@functools.cache
def _field_kinds() -> dict[str, tuple[type, ...]]:
    from dataclasses import fields

    from styleprompt.diffusion.config import TrainConfig

    kinds = {}
    for f in fields(TrainConfig):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        kinds[f.name] = _KINDS.get(annotation, (object,))
    # Filled in by TrainConfig.__post_init__, so always recorded as numbers.
    kinds.update(vectors=(int,), norm_cap=(float, int), save_every=(int,), checkpoint_every=(int,))
    return kinds


def _schema_problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be config.json's `key` (None: it can; unknown keys are left alone)."""
    if key in _EXTRA_INTS:
        low, _ = _EXTRA_INTS[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return f"not a whole number of at least {low}"
        return None
    if key in _EXTRA_TEXT:
        return None if isinstance(value, str) else "not text"
    kinds = _field_kinds().get(key)
    if kinds is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        return f"not {_kind_text(kinds)}"
    if not isinstance(value, kinds):
        return f"not {_kind_text(kinds)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    return None


def _kind_text(kinds: tuple[type, ...]) -> str:
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false", _NONE: "null"}
    shown = [names.get(k, k.__name__) for k in kinds if not (k is int and float in kinds)]
    return " or ".join(shown)
