"""What the web app needs around the library: its settings, its one output folder, upload limits,
and a cache that loads each model once.

Why a module of its own: these are the app's safety rules (serve one folder, bound what a
browser may upload, never load a multi-GB model twice, never let two requests share a pipeline's
mutable state), and keeping them out of the Gradio layout code keeps them testable without a
browser.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from styleprompt.diffusion.models import DEFAULT_MODEL, LoadedModel, load_pipeline, pick_device, pick_dtype, text_copy
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import IMAGE_SUFFIXES as READABLE_SUFFIXES
from styleprompt.plumbing.images import list_images

IMAGE_SUFFIXES = READABLE_SUFFIXES  # what the CLI reads, the app takes (an animated GIF: its first frame)
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
LORA_SUFFIXES = (".safetensors",)  # no pickle: a LoRA upload is data, read by safetensors only


@dataclass
class AppSettings:
    """The app's limits. Defaults suit one person on a workstation; a shared server lowers them."""

    model: str = DEFAULT_MODEL
    output_dir: Path = Path("outputs/app")
    device: str | None = None
    precision: str | None = None
    max_uploads: int = 20  # files per upload field (a style needs 3-20 artworks)
    max_upload_mb: float = 25.0  # per file; Gradio refuses bigger files before they reach us
    max_train_steps: int = 20000
    max_batch: int = 8
    max_gen_steps: int = 150
    max_classic_iterations: int = 2000
    heavy_concurrency: int = 1  # jobs of one kind (train, generate, ...) running at once
    queue_size: int = 64  # waiting requests before the queue answers "full"
    max_models: int = 2  # models kept in memory; the least recently used one is dropped
    art_folders: tuple = ()  # server folders the Train tab may read artworks from (--art-folder)
    allowed_models: tuple = ()  # models the page may name besides `model` (--allow-model)
    any_model: bool = False  # any hub id or local path (--any-model: a one-person workstation)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        self.art_folders = tuple(Path(f).expanduser().resolve() for f in self.art_folders)
        self.allowed_models = tuple(str(m) for m in self.allowed_models)

    def model_for(self, name: str | None) -> str:
        """The model a request names, if this server offers it.

        Why a list: a model name is also a path on the server and a download from the hub, so an
        open field would let any visitor read folders or fill the disk.
        """
        name = (name or "").strip() or self.model
        if self.any_model or name == self.model or name in self.allowed_models:
            return name
        offered = ", ".join([self.model, *self.allowed_models])
        raise UserError(
            f"this server does not offer the model {name!r} (offered: {offered}); "
            "its owner can add it with --allow-model"
        )

    def art_folder_for(self, folder: str) -> Path:
        """A server folder of artworks, if it lies inside one of `art_folders` once links and
        `..` are resolved (a link inside pointing elsewhere is refused like the elsewhere)."""
        source = Path(folder).expanduser().resolve()
        if not self.art_folders:
            raise UserError(
                "this server names no folders of artworks (start it with --art-folder DIR); upload the artworks instead"
            )
        if not _inside(source, self.art_folders):
            allowed = ", ".join(str(r) for r in self.art_folders)
            raise UserError(
                f"{folder} is outside the folders this server reads artworks from ({allowed}); start the app "
                f"with --art-folder {folder} to allow it, or upload the artworks instead"
            )
        if not source.is_dir():
            raise UserError(f"the folder {folder} does not exist on the server; upload the artworks instead")
        return source

    def weights_file_for(self, value: str | None, what: str) -> str | None:
        """A weights file a visitor names (the Classic and Compare tabs), under the art folders' rules.

        Why the same rules: a path field is a way to make the server open any file. Served on
        the network the file must lie inside an --art-folder (links and `..` resolved); on
        localhost that is the user's home. The error never names the server's own folders
        beyond what the visitor typed and the owner listed.
        """
        name = (value or "").strip()
        if not name:
            return None
        if not self.art_folders:
            raise UserError(
                f"this server names no folders to read {what} from (start it with --art-folder DIR); "
                "leave the field empty or tick random weights"
            )
        if not _inside(name, self.art_folders):
            allowed = ", ".join(str(r) for r in self.art_folders)
            raise UserError(f"{name} is outside the folders this server reads files from ({allowed})")
        if not Path(name).expanduser().resolve().is_file():
            raise UserError(f"the {what} {name} does not exist on the server")
        return str(Path(name).expanduser().resolve())


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def access_for_host(host: str, art_folders: Iterable[str | Path] = (), any_model: bool = False) -> dict:
    """What visitors may name, from where the app listens.

    On a loopback address the only visitor is this machine's own user: any model, and folders
    under their home unless `--art-folder` says otherwise. On the network, strangers: only the
    offered models and only the named folders.
    """
    local = host in LOOPBACK_HOSTS
    folders = tuple(art_folders) or ((Path.home(),) if local else ())
    return {"art_folders": folders, "any_model": bool(any_model or local)}


def _inside(path: str | Path, roots: Iterable[Path]) -> bool:
    """`path`, with `~`, links and `..` resolved, is one of `roots` (resolved) or lies under one."""
    real = Path(path).expanduser().resolve()
    return any(real == root or root in real.parents for root in roots)


# The output folders of the apps built in this process: their paths are the server's, not the user's.
_OUTPUT_ROOTS: set[Path] = set()


def upload_folder() -> Path:
    """Where Gradio stores uploads (GRADIO_TEMP_DIR, read when it is used, as Gradio reads it)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def _forms(root: Path) -> list[str]:
    """A folder as a message may spell it: as given and with its links resolved."""
    return sorted({str(root), str(root.resolve())}, key=len, reverse=True)


def hide_server_paths(text: str) -> str:
    """A message for the page, with the server's paths taken out.

    Why: the library's one-line errors name files by their path, which on the server is Gradio's
    cache (`/srv/out/cache/3f2a.../bad.safetensors`) or the app's output folder; neither is the
    user's business nor safe to show. An upload is named as the user knows it, by its file name;
    a file the app wrote by its place in the output folder (`train/20261202-.../config.json`).
    """
    for root in _forms(upload_folder()):
        text = re.sub(re.escape(root) + r"/(?:[^/\s]+/)*", "", text)
    for output in sorted(_OUTPUT_ROOTS, key=lambda r: len(str(r)), reverse=True):
        for root in _forms(output):
            text = re.sub(re.escape(root) + "/", "", text)  # a file in it: its place in the folder
            text = re.sub(re.escape(root) + r"(?![\w.-])", "the output folder", text)
    return text


class OutputFolder:
    """The app's only served folder: every file it writes, and nothing else, lives under it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        _OUTPUT_ROOTS.add(self.root)

    def new_run(self, kind: str, label: str = "") -> Path:
        """A fresh folder `root/kind/YYYYmmdd-HHMMSS-label[-n]`; never reuses an existing one."""
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40]
        stem = time.strftime("%Y%m%d-%H%M%S") + (f"-{slug}" if slug else "")
        with self._lock:
            for n in range(1000):
                path = self.root / kind / (stem if n == 0 else f"{stem}-{n}")
                try:
                    path.mkdir(parents=True)
                    return path
                except FileExistsError:
                    continue
        raise UserError(f"could not create a new run folder under {self.root / kind}")

    def contains(self, path: str | Path) -> bool:
        return _inside(path, (self.root,))

    def trained_embeddings(self, limit: int = 30) -> list[Path]:
        """The final embeddings of past training runs, newest first (the Generate tab's list).

        The app's own runs are in train/*/, but a run made on the command line into the same
        output folder (`styleprompt train --output OUTPUT/s1`) is listed too: any run folder up
        to three levels down, except Gradio's cache, and never through a link that leads out.
        """
        from styleprompt.diffusion.training_run import TrainingRun

        patterns = tuple(f"{'*/' * depth}{TrainingRun.EMBEDDING}" for depth in (1, 2, 3))
        found = {
            p
            for pattern in patterns
            for p in self.root.glob(pattern)
            if p.is_file() and p.relative_to(self.root).parts[0] != "cache" and self.contains(p)
        }
        found = list(found)
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return found[:limit]


def check_uploads(
    paths: Iterable[str | Path] | None, *, what: str, max_count: int, max_mb: float, suffixes: tuple[str, ...]
) -> list[Path]:
    """The uploaded files as paths, or one clear line on what is wrong with them."""
    files = [Path(p) for p in (paths or []) if p]
    if len(files) > max_count:
        raise UserError(f"too many {what}: {len(files)} uploaded, at most {max_count} are accepted; upload fewer")
    for path in files:
        if path.suffix.lower() not in suffixes:
            raise UserError(f"{path.name} is not one of the accepted {what} types ({', '.join(suffixes)})")
        size_mb = path.stat().st_size / 2**20
        if size_mb > max_mb:
            raise UserError(f"{path.name} is {size_mb:.1f} MB; {what} may be at most {max_mb:g} MB each")
    return files


def stage_images(
    uploaded: list[Path], folder: str | None, dest: Path, *, max_count: int, settings: AppSettings | None = None
) -> Path:
    """One folder of artworks for the trainer, copied into the run: the uploads, or the images of a
    server folder that `settings` allows (copied, so the run keeps what it was trained on even
    if the folder changes later)."""
    if uploaded:
        dest.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(uploaded):
            shutil.copyfile(path, dest / f"{i:03d}-{path.name}")
        return dest
    if folder and folder.strip():
        settings = settings or AppSettings()
        source = settings.art_folder_for(folder.strip())
        images = list_images(source)
        if len(images) > max_count:
            raise UserError(
                f"{folder.strip()} holds {len(images)} images; at most {max_count} are accepted, use a smaller folder"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(images):
            if not _inside(path, settings.art_folders):  # a linked file resolves to wherever it points
                raise UserError(
                    f"{path.name} in {folder.strip()} links outside the folders this server reads artworks from"
                )
            shutil.copyfile(path, dest / f"{i:03d}-{path.name}")
        return dest
    raise UserError("no artworks: upload 3-20 images of one style, or name a folder on the server")


def _precision_name(device_name: str | None, precision: str | None) -> tuple[str, str]:
    device = pick_device(device_name)
    dtype = pick_dtype(device, precision)
    names = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
    return str(device), names[str(dtype)]


class ModelCache:
    """Each (model, device, precision) is loaded once and shared by every request.

    A diffusers pipeline is not safe to call from two threads (its scheduler holds the current
    timesteps), so callers hold `lock_for(loaded)` while sampling. Training and token loading
    change the tokenizer and text encoder, so they get a private copy of those two (the big
    UNet and VAE stay shared and frozen) from `private_text_copy`.
    """

    def __init__(self, device: str | None = None, max_models: int = 2):
        self.device = device
        self.max_models = max(1, max_models)
        self._models: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipe -> its lock
        self._guard = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}
        self._views: OrderedDict[tuple, tuple[LoadedModel, Any]] = OrderedDict()
        self._networks: OrderedDict[tuple, Any] = OrderedDict()
        self.max_views = 4
        self.loads = 0  # how many times a model was really loaded (tests read it)

    def key(self, model: str, precision: str | None = None) -> tuple[str, str, str]:
        model = (model or "").strip()
        if not model:
            raise UserError("no model given: enter a hub id, a local path, or tiny")
        return (model, *_precision_name(self.device, precision))

    def get(self, model: str, precision: str | None = None) -> LoadedModel:
        key = self.key(model, precision)
        with self._guard:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # a second request for the same model waits for the first load
            with self._guard:
                if key in self._models:
                    return self._models[key]
            loaded = load_pipeline(key[0], device=key[1], precision=key[2])
            with self._guard:
                self._models[key] = loaded
                self.loads += 1
                while len(self._models) > self.max_models:
                    old_key, _ = self._models.popitem(last=False)
                    for view_key in [k for k in self._views if k[0] == old_key]:
                        del self._views[view_key]
                self._loading.pop(key, None)
            return loaded

    def lock_for(self, loaded: LoadedModel) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(loaded.pipe, threading.Lock())

    def private_text_copy(self, loaded: LoadedModel) -> LoadedModel:
        """The same model with its own tokenizer, text encoder and scheduler.

        What training and `load_textual_inversion` change lives in exactly those parts; the
        UNet and VAE (most of the memory) are shared (`models.text_copy`). Copied under the
        model's lock so no sampling is half-way through a change while we read.
        """
        with self.lock_for(loaded):
            return text_copy(loaded)

    def private_unet_copy(self, loaded: LoadedModel) -> LoadedModel:
        """A private text copy that owns its UNet too, for a LoRA (trained or loaded).

        Why a whole UNet: a LoRA wraps the UNet's attention layers in place (peft), so on the
        shared UNet it would paint into every other request's pictures while it is there. The
        cost is one more UNet in memory (about 3.4 GB for SD 1.5 in fp32) per LoRA view.
        """
        import copy

        from styleprompt.diffusion.models import pipeline_over

        with self.lock_for(loaded):
            view = text_copy(loaded)
            view.pipe = pipeline_over(view.pipe, view.pipe.__class__, unet=copy.deepcopy(loaded.pipe.unet))
        return view

    def view_with(
        self,
        model: str,
        precision: str | None,
        label: tuple,
        build: Callable[[LoadedModel], Any],
        own_unet: bool = False,
    ) -> tuple[LoadedModel, Any]:
        """A private text copy of `model` that `build` prepared once (style tokens loaded into it),
        kept with what `build` returned for the next request with the same `label` (say, the
        embeddings' hashes and scale).

        Why a few copies and not one shared pipeline: tokens loaded into a shared tokenizer
        would leak into every other request, and a token loaded at one style scale could not
        be loaded again at another. `own_unet`: the copy has its own UNet as well (a LoRA goes in).
        """
        base = self.get(model, precision)
        key = (self.key(model, precision), *label)
        with self._guard:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        view = self.private_unet_copy(base) if own_unet else self.private_text_copy(base)
        entry = (view, build(view))
        with self._guard:
            self._views[key] = entry
            while len(self._views) > self.max_views:
                self._views.popitem(last=False)
        return entry

    def network(self, key: tuple, load: Callable[[], Any], keep: int = 4) -> Any:
        """Any other network (VGG-19, an AdaIN decoder, Ghiasi's), loaded once per `key`.

        Read-only at inference, so requests share them without a lock.
        """
        with self._guard:
            if key in self._networks:
                self._networks.move_to_end(key)
                return self._networks[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._guard:
                if key in self._networks:
                    return self._networks[key]
            net = load()
            with self._guard:
                self._networks[key] = net
                while len(self._networks) > keep:
                    self._networks.popitem(last=False)
                self._loading.pop(key, None)
                self.loads += 1
            return net
