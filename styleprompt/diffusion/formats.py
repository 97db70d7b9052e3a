"""Every textual-inversion file format users pass around, read into one `Embedding` and written back.

Why one module: a style token is only useful if it travels between diffusers, AUTOMATIC1111
and ComfyUI, on SD 1.x, 2.x and SDXL, and each tool stores the same few vectors differently:

| format      | file                         | content                                                    |
| ----------- | ---------------------------- | ---------------------------------------------------------- |
| diffusers   | .safetensors or .bin         | `{token: [n, d]}`                                          |
| a1111       | .pt (a torch pickle)         | `string_to_token`, `string_to_param {"*": [n, d]}`, `name`, `step` |
| emb_params  | .safetensors                 | `{"emb_params": [n, d]}` (A1111's safetensors layout)       |
| sdxl        | .safetensors                 | `{"clip_l": [n, 768], "clip_g": [n, 1280]}` (A1111, ComfyUI) |
| sdxl-pair   | X.safetensors + X_2.safetensors | diffusers' `{token: [n, 768]}` and `{token: [n, 1280]}`  |
| a1111-png   | .png                         | A1111's `sd-ti-embedding` text chunk (base64 JSON)          |

Pickles are untrusted data: they are read with `torch.load(weights_only=True)` only, so a file
that tries to run code is refused before anything runs. Values are checked (finite, 1-2 dims,
one token per file) so a bad file fails here with one line, not deep inside a text encoder.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, cast

import torch

from styleprompt.diffusion.families import describe_family, family_of_widths
from styleprompt.diffusion.tokens import save_diffusers_embedding, validate_token_name
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import atomic_path, check_regular_file, parse_json, shown_path

FORMATS = ("diffusers", "a1111", "emb_params", "sdxl", "sdxl-pair", "a1111-png")
PNG_KEY = "sd-ti-embedding"  # A1111's text chunk holding an embedding inside a preview image
IMAGE_SUFFIXES = (".png", ".webp")
A1111_STAR_TOKEN_ID = 265  # CLIP's id of "*", the placeholder A1111 writes in string_to_token


@dataclass
class Embedding:
    """One style token's vectors, whatever file they came from.

    `vectors` is for the (first) text encoder; `vectors_2` is SDXL's second (clip_g) or None.
    """

    token: str
    vectors: torch.Tensor
    vectors_2: torch.Tensor | None = None
    format: str = "diffusers"
    step: int | None = None
    files: tuple[Path, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def widths(self) -> tuple[int, ...]:
        parts = [self.vectors] + ([self.vectors_2] if self.vectors_2 is not None else [])
        return tuple(int(p.shape[1]) for p in parts)

    @property
    def is_sdxl(self) -> bool:
        return self.vectors_2 is not None

    @property
    def family(self) -> str:
        return family_of_widths(self.widths)

    def parts(self) -> list[torch.Tensor]:
        """The vectors per text encoder, in the pipeline's order (text_encoder, text_encoder_2)."""
        return [self.vectors] + ([self.vectors_2] if self.vectors_2 is not None else [])

    def scaled(self, factor: float) -> "Embedding":
        """The same token with every vector multiplied by `factor` (the style scale)."""
        if factor == 1.0:
            return self
        v2 = self.vectors_2 * factor if self.vectors_2 is not None else None
        return replace(self, vectors=self.vectors * factor, vectors_2=v2)


# -- reading ---------------------------------------------------------------------------------------


# What an embedding's vectors may be stored as: the dtypes that tools write and torch computes with.
EMBEDDING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(value: object, what: str, path: Path) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise UserError(
            f"{shown_path(path)}: {what} is a {type(value).__name__}, not a tensor; this is not an embedding file"
        )
    tensor = value.detach()
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise UserError(f"{shown_path(path)}: {what} has shape {list(value.shape)}; an embedding is [vectors, width]")
    if tensor.dtype not in EMBEDDING_DTYPES:  # ints, bools, float8 (no isfinite), complex
        raise UserError(
            f"{shown_path(path)}: {what} holds {str(tensor.dtype).replace('torch.', '')} values; an embedding holds "
            "floating-point vectors (float16, bfloat16, float32 or float64)"
        )
    if not torch.isfinite(tensor).all():
        raise UserError(
            f"{shown_path(path)}: {what} has NaN or infinite values (a diverged training run?); use an earlier embedding"
        )
    return tensor.to("cpu").contiguous()  # in its own precision: `convert` copies the vectors exactly


def _token_from_metadata_or_name(meta: dict[str, str], path: Path) -> str:
    # A1111 names an embedding after its file; we also store the token in safetensors metadata.
    return meta.get("styleprompt.token") or path.stem


def _safetensors_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            data = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot read {shown_path(path)} as safetensors ({reason}); is it a complete .safetensors file?"
        ) from None
    return data, meta


def _load_pickle(path: Path) -> object:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for our users
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        culprit = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f" ({culprit.group(1)})" if culprit else ""
        if "weights only" in first.lower() or culprit:
            raise UserError(
                f"refusing {shown_path(path)}: the pickle asks to run code or build objects other than tensors{what}; nothing was "
                "run. Only plain tensor files are loaded; get a .safetensors version of this embedding"
            ) from None
        raise UserError(
            f"cannot read {shown_path(path)}: not a valid torch file ({first or 'unpickling failed'})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises anything (KeyError, IndexError, struct.error...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot read {shown_path(path)}: not a valid torch embedding file ({first[:160]}); is it a complete embedding file?"
        ) from None


def _from_dict(data: object, meta: dict[str, str], path: Path) -> Embedding:
    """Recognise the layout of a loaded dict (or bare tensor) and build the Embedding."""
    if isinstance(data, torch.Tensor):  # a bare tensor: diffusers accepts it with an explicit token
        return Embedding(
            path.stem, _check_tensor(data, "the tensor", path), format="diffusers", files=(path,), metadata=meta
        )
    if not isinstance(data, dict):
        raise UserError(f"{shown_path(path)} holds a {type(data).__name__}, not an embedding")
    if not data:
        raise UserError(
            f"{shown_path(path)} holds no embedding (an empty dictionary); re-export it from the tool that trained it"
        )
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else "no"
            raise UserError(
                f"{shown_path(path)}: string_to_param holds {count} entries; an A1111 embedding holds exactly one"
            )
        vectors = _check_tensor(next(iter(params.values())), "string_to_param", path)
        name = data.get("name")
        token = name if isinstance(name, str) and name.strip() else path.stem
        step = data.get("step")
        return Embedding(
            token, vectors, format="a1111", step=step if isinstance(step, int) else None, files=(path,), metadata=meta
        )
    keys = set(data)
    if {"clip_l", "clip_g"} <= keys:
        extra = sorted(keys - {"clip_l", "clip_g"})
        if extra:
            raise UserError(
                f"{shown_path(path)}: an SDXL embedding holds clip_l and clip_g, but this file also holds {', '.join(extra)}"
            )
        clip_l, clip_g = _check_tensor(data["clip_l"], "clip_l", path), _check_tensor(data["clip_g"], "clip_g", path)
        if clip_l.shape[0] != clip_g.shape[0]:
            raise UserError(
                f"{shown_path(path)}: clip_l has {clip_l.shape[0]} vectors but clip_g has {clip_g.shape[0]}; the file is inconsistent"
            )
        return Embedding(
            _token_from_metadata_or_name(meta, path),
            clip_l,
            clip_g,
            format="sdxl",
            step=_meta_step(meta),
            files=(path,),
            metadata=meta,
        )
    if len(data) != 1:
        shown = ", ".join(shown_path(k) for k in sorted(str(k) for k in data)[:4])
        raise UserError(
            f"{shown_path(path)} holds {len(data)} entries ({shown}...); an embedding file holds one token (is it a model checkpoint?)"
        )
    key, value = next(iter(data.items()))
    if key == "emb_params":
        vectors = _check_tensor(value, "emb_params", path)
        return Embedding(
            _token_from_metadata_or_name(meta, path),
            vectors,
            format="emb_params",
            step=_meta_step(meta),
            files=(path,),
            metadata=meta,
        )
    if not isinstance(key, str) or not key.strip():
        raise UserError(f"{shown_path(path)}: the embedding's token name {key!r} is not a word")
    return Embedding(
        key,
        _check_tensor(value, f"the vectors of {key}", path),
        format="diffusers",
        step=_meta_step(meta),
        files=(path,),
        metadata=meta,
    )


def _meta_step(meta: dict[str, str]) -> int | None:
    """The step our metadata records; anything but a plain number of up to 12 ASCII digits is ignored
    (str.isdigit accepts "²" and 5000-digit strings, which int() then refuses with a traceback)."""
    value = meta.get("styleprompt.step", "")
    return int(value) if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value) else None


def pair_partner(path: Path) -> tuple[Path, Path]:
    """(first, second) file names of a diffusers SDXL pair that `path` belongs to (X, X_2)."""
    if path.stem.endswith("_2"):
        return path.with_name(path.stem[:-2] + path.suffix), path
    return path, path.with_name(path.stem + "_2" + path.suffix)


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _content_kind(path: Path) -> str | None:
    """What the file's bytes are: "safetensors", "pickle" (torch's zip or legacy format), "image",
    or None. Why by content: a text file or a safetensors file named .bin must reach the reader
    that can tell the user what it is, not the pickle reader's KeyError."""
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if zipfile.is_zipfile(path) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "pickle"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if len(head) >= 9 and 0 < int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    return None


def _read_single(path: Path) -> Embedding:
    suffix = path.suffix.lower()
    kind = _content_kind(path)
    if kind == "image" or (kind is None and suffix in IMAGE_SUFFIXES):
        return read_png_embedding(path)
    if kind == "safetensors" or (kind is None and suffix == ".safetensors"):
        data, meta = _safetensors_dict(path)
        return _from_dict(data, meta, path)
    if kind == "pickle":
        return _from_dict(_load_pickle(path), {}, path)
    raise UserError(
        f"cannot read {shown_path(path)} as an embedding (its content is neither safetensors, a torch file nor an "
        "A1111 PNG); is it a complete .safetensors, .pt or .bin embedding file?"
    )


def _maybe_pair(emb: Embedding, path: Path) -> Embedding:
    """A diffusers single-token file whose X/X_2 partner holds the same token at another width
    is one SDXL embedding (diffusers' SDXL pair of files)."""
    first, second = pair_partner(path)
    other_path = second if path == first else first
    if emb.format != "diffusers" or not other_path.is_file():
        return emb
    try:
        other = _read_single(other_path)
    except UserError:
        return emb
    if other.format != "diffusers" or other.token != emb.token or other.num_vectors != emb.num_vectors:
        return emb
    if other.widths == emb.widths:  # two SD files that happen to share a name: not a pair
        return emb
    a, b = (emb, other) if path == first else (other, emb)
    return Embedding(
        emb.token, a.vectors, b.vectors, format="sdxl-pair", step=a.step, files=(first, second), metadata=a.metadata
    )


def read_embedding(path: str | os.PathLike, token: str | None = None) -> Embedding:
    """Read any supported embedding file; `token` renames it (as diffusers' `token=` does)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"embedding file not found: {shown_path(p)}")
    if p.is_dir():
        for name in ("learned_embeds.safetensors", "learned_embeds.bin"):
            if (p / name).is_file():
                return read_embedding(p / name, token)
        raise UserError(
            f"{shown_path(p)} is a folder without learned_embeds.safetensors; pass the embedding file itself"
        )
    check_regular_file(p, "embedding file")  # a FIFO, a device, /proc/self/mem: their own reason, not "empty"
    try:
        open(p, "rb").close()
    except PermissionError:
        raise UserError(f"cannot read {shown_path(p)}: permission denied") from None
    if p.stat().st_size == 0:
        raise UserError(f"{shown_path(p)} is empty (0 bytes); the download or save was interrupted")
    emb = _maybe_pair(_read_single(p), p)
    if token is not None:
        emb = replace(emb, token=token)
    validate_token_name(emb.token)
    return emb


# -- A1111 PNG embeddings ----------------------------------------------------------------------------


def _decode_tensors(obj: object) -> object:
    """A1111's JSON: tensors are {"TORCHTENSOR": nested lists}; rebuild them as float32, or as float64
    where float32 would round them (a float64 embedding written by `convert` reads back exactly)."""
    if isinstance(obj, dict):
        if set(obj) == {"TORCHTENSOR"}:
            try:
                exact = torch.tensor(obj["TORCHTENSOR"], dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError("a TORCHTENSOR entry is not a numeric array") from None
            single = exact.to(torch.float32)
            return single if torch.equal(single.to(torch.float64), exact) else exact
        return {k: _decode_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_tensors(v) for v in obj]
    return obj


def read_png_embedding(path: str | os.PathLike) -> Embedding:
    """An A1111 embedding stored in a PNG's `sd-ti-embedding` text chunk (base64 of JSON).

    Only the text chunk is read; A1111's copy hidden in the image's pixel border is not.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            text = dict(getattr(img, "text", None) or {}) or dict(img.info)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(
            f"cannot read {shown_path(p)} as an image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    raw = text.get(PNG_KEY)
    if not raw:
        raise UserError(
            f"{shown_path(p)} carries no embedding (no {PNG_KEY} text chunk); A1111 writes it on previews saved with the embedding"
        )
    try:
        document = base64.b64decode(raw, validate=False).decode("utf-8")
        data = _decode_tensors(parse_json(document, f"the {PNG_KEY} text chunk of {shown_path(p)}"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(
            f"{shown_path(p)}: the {PNG_KEY} text chunk is damaged ({str(exc).splitlines()[0][:120]})"
        ) from None
    emb = _from_dict(data, {}, p)
    if emb.format != "a1111":
        raise UserError(f"{shown_path(p)}: the {PNG_KEY} chunk holds no string_to_param entry; not an A1111 embedding")
    return replace(emb, format="a1111-png")


def _encode_tensors(obj: object) -> object:
    if isinstance(obj, torch.Tensor):
        return {"TORCHTENSOR": obj.detach().cpu().tolist()}  # exact decimals of the stored precision
    if isinstance(obj, dict):
        return {k: _encode_tensors(v) for k, v in obj.items()}
    return obj


# -- writing ---------------------------------------------------------------------------------------


def _a1111_dict(emb: Embedding) -> dict:
    return {
        "string_to_token": {"*": A1111_STAR_TOKEN_ID},
        "string_to_param": {"*": emb.vectors.detach().cpu().contiguous()},
        "name": emb.token,
        "step": int(emb.step or 0),
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }


def _metadata(emb: Embedding) -> dict[str, str]:
    meta = {k: v for k, v in emb.metadata.items() if k.startswith("styleprompt.")}
    meta.update({"format": "pt", "styleprompt.token": emb.token, "styleprompt.vectors": str(emb.num_vectors)})
    if emb.step is not None:
        meta["styleprompt.step"] = str(emb.step)
    return meta


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}  # in the stored precision
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)
    return path


def _save_pickle(path: Path, obj: object) -> Path:
    with atomic_path(path) as tmp:
        torch.save(obj, str(tmp))
    return path


def _need_suffix(path: Path, fmt: str, allowed: tuple[str, ...]) -> None:
    if path.suffix.lower() not in allowed:
        raise SettingError(
            "fmt",
            f"{{setting}} {fmt} writes {' or '.join(allowed)} files; {shown_path(path.name)} has another extension",
        )


def write_png_embedding(emb: Embedding, path: str | os.PathLike, image=None) -> Path:
    """Write `emb` into a PNG's `sd-ti-embedding` text chunk, as A1111 does on its previews."""
    from PIL import Image

    from styleprompt.plumbing.images import save_image

    if image is None:  # a quiet swatch whose colours come from the first vector
        v = emb.vectors[0]
        rgb = tuple(int(128 + 100 * torch.tanh(v[i % v.numel()] * 4).item()) for i in range(3))
        image = Image.new("RGB", (128, 128), rgb)
    payload = base64.b64encode(json.dumps(_encode_tensors(_a1111_dict(emb))).encode("utf-8")).decode("ascii")
    return save_image(image, path, text={PNG_KEY: payload, "name": emb.token})


def write_embedding(emb: Embedding, path: str | os.PathLike, fmt: str) -> list[Path]:
    """Write `emb` in format `fmt` to `path` (sdxl-pair writes X and X_2); returns the files written."""
    target = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    for part in emb.parts():
        if not torch.isfinite(part).all():
            raise UserError(f"refusing to write {shown_path(target)}: the embedding has NaN or infinite values")
    if fmt in ("sdxl", "sdxl-pair") and not emb.is_sdxl:
        raise SettingError(
            "fmt",
            f"{{setting}} {fmt} needs vectors for both SDXL text encoders, but {emb.token} is for "
            f"{describe_family(emb.widths)}; use diffusers, a1111 or emb_params",
        )
    if fmt not in ("sdxl", "sdxl-pair") and emb.is_sdxl:
        raise SettingError(
            "fmt",
            f"{emb.token} is an SDXL embedding (two text encoders); {{setting}} {fmt} holds one. Use {{setting}} sdxl "
            "(A1111, ComfyUI) or {setting} sdxl-pair (diffusers)",
        )
    if fmt == "diffusers":
        _need_suffix(target, fmt, (".safetensors", ".bin"))
        if target.suffix.lower() == ".bin":
            return [_save_pickle(target, {emb.token: emb.vectors.detach().cpu().contiguous()})]
        return [save_diffusers_embedding(target, emb.token, emb.vectors, _metadata(emb))]
    if fmt == "a1111":
        _need_suffix(target, fmt, (".pt",))
        return [_save_pickle(target, _a1111_dict(emb))]
    if fmt == "emb_params":
        _need_suffix(target, fmt, (".safetensors",))
        return [_save_safetensors(target, {"emb_params": emb.vectors}, _metadata(emb))]
    vectors_2 = emb.vectors_2
    if fmt in ("sdxl", "sdxl-pair") and vectors_2 is None:
        raise UserError(f"{fmt} needs an SDXL embedding (two text encoders); {emb.token} has vectors for one")
    if fmt == "sdxl" and vectors_2 is not None:
        _need_suffix(target, fmt, (".safetensors",))
        return [_save_safetensors(target, {"clip_l": emb.vectors, "clip_g": vectors_2}, _metadata(emb))]
    if fmt == "sdxl-pair" and vectors_2 is not None:
        _need_suffix(target, fmt, (".safetensors",))
        first, second = pair_partner(target)
        meta = _metadata(emb)
        return [
            _save_safetensors(first, {emb.token: emb.vectors}, dict(meta, **{"styleprompt.encoder": "text_encoder"})),
            _save_safetensors(second, {emb.token: vectors_2}, dict(meta, **{"styleprompt.encoder": "text_encoder_2"})),
        ]
    _need_suffix(target, fmt, (".png",))
    return [write_png_embedding(emb, target)]


def written_files(target: str | os.PathLike, fmt: str) -> list[Path]:
    """The files `write_embedding(emb, target, fmt)` writes: sdxl-pair writes X and X_2."""
    path = Path(target)
    return list(pair_partner(path)) if fmt == "sdxl-pair" else [path]


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # a hard link is the same file under another name
    except OSError:
        return False


def check_not_an_input(target: str | os.PathLike, fmt: str, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output that would overwrite a file being read (convert's input, one of blend's).

    Why before writing: the atomic writer would replace the input with the result, and the
    original vectors would be gone.
    """
    sources = [Path(f) for f in inputs]
    for out in written_files(target, fmt):
        hit = next((src for src in sources if _same_file(out, src)), None)
        if hit is not None:
            raise SettingError(
                "output",
                f"{{setting}} {shown_path(out)} is the input file {shown_path(hit)}; "
                "choose another name so the original is kept",
            )


def token_slug(token: str) -> str:
    """A file-name stem for a token: "<my-style>" -> "my-style" (A1111 triggers on the file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", token.strip("<>")).strip("-.") or "embedding"


def default_file_name(emb: Embedding, fmt: str) -> str:
    """Where each format conventionally lives when only a folder is given."""
    slug = token_slug(emb.token)
    return {
        "diffusers": "learned_embeds.safetensors",
        "sdxl-pair": "learned_embeds.safetensors",
        "a1111": f"{slug}.pt",
        "emb_params": f"{slug}.safetensors",
        "sdxl": f"{slug}.safetensors",
        "a1111-png": f"{slug}.png",
    }[fmt]


def formats_for(emb: Embedding) -> tuple[str, ...]:
    """The formats that can hold this embedding."""
    if emb.is_sdxl:
        return ("sdxl", "sdxl-pair")
    return ("diffusers", "a1111", "emb_params", "a1111-png")


def export_all(emb: Embedding, folder: str | os.PathLike) -> dict[str, list[Path]]:
    """Write `emb` into `folder` once per format that can hold it (the app's downloads).

    Each format gets its own subfolder, because several conventional names collide
    (diffusers' and the SDXL pair's learned_embeds.safetensors, A1111's name-as-trigger files).
    """
    root = Path(folder)
    return {fmt: write_embedding(emb, root / fmt / default_file_name(emb, fmt), fmt) for fmt in formats_for(emb)}


# -- blending ---------------------------------------------------------------------------------------


def blend_embeddings(parts: list[tuple[Embedding, float]], token: str) -> Embedding:
    """A new token whose vectors are sum(weight * vectors): one style mixed from several.

    All inputs must be for the same model family and have the same number of vectors (the
    i-th vectors play the same role in each only when trained with the same count).
    """
    if len(parts) < 2:
        raise UserError("blend needs at least two embeddings, e.g. a.safetensors:0.7 b.safetensors:0.3")
    validate_token_name(token)
    first = parts[0][0]
    for emb, weight in parts:
        if emb.widths != first.widths:
            raise UserError(
                f"cannot blend {emb.token} ({describe_family(emb.widths)}) with {first.token} ({describe_family(first.widths)}); "
                "blend tokens of one model family"
            )
        if emb.num_vectors != first.num_vectors:
            raise UserError(
                f"cannot blend {emb.token} ({emb.num_vectors} vector{'s' if emb.num_vectors != 1 else ''}) with {first.token} ({first.num_vectors} vector{'s' if first.num_vectors != 1 else ''}); "
                "blend tokens trained with the same --vectors"
            )
        if not (weight == weight and abs(weight) < 1e6):
            raise UserError(f"the weight of {emb.token} must be a number (got {weight})")
    mixed = [
        cast(torch.Tensor, sum(weight * emb.parts()[i] for emb, weight in parts)) for i in range(len(first.parts()))
    ]
    meta = {"styleprompt.blend": ", ".join(f"{e.token}:{w:g}" for e, w in parts)}
    return Embedding(token, mixed[0], mixed[1] if len(mixed) > 1 else None, format=first.format, metadata=meta)


def read_weighted(items: list[tuple[str, float | None]]) -> list[tuple[Embedding, float]]:
    """Each file read, with its weight; inputs without a weight share what the given weights leave
    (equal by default)."""
    given = [w for _, w in items if w is not None]
    missing = sum(1 for _, w in items if w is None)
    rest = (1.0 - sum(given)) / missing if missing and given else (1.0 / len(items) if missing else 0.0)
    return [(read_embedding(p), rest if w is None else w) for p, w in items]


def blend_files(items: list[tuple[str, float | None]], token: str) -> Embedding:
    """blend_embeddings over files (weights as `read_weighted` gives them)."""
    return blend_embeddings(read_weighted(items), token)
