"""The LoRA of pivotal tuning: where it goes, how it is saved, how a file is checked and applied.

Pivotal tuning (issue 24) trains a style token together with a small LoRA, because a token moves
only through a frozen text encoder and can reach only what that encoder can already say
(docs/micro.md); the LoRA lets the UNet learn what no word reaches. Everything LoRA is peft's and
diffusers' own, never hand-written layers:
- the adapter is a peft `LoraConfig` put on the UNet (and optionally the text encoders) through
  diffusers' / transformers' peft integration (`add_adapter`), as diffusers'
  `examples/advanced_diffusion_training/train_dreambooth_lora_sdxl_advanced.py` does;
- the file is what `pipeline.save_lora_weights` writes (diffusers' layout, with the adapter's
  rank and alpha in the metadata), so `pipe.load_lora_weights(run_folder)` loads it;
- the kohya file (`lora_unet_...`, `lora_te1_...`, `.alpha`) is diffusers' `convert_state_dict_to_kohya`
  of the same weights, with the alpha set to the adapter's own (the converter writes the rank);
- generation loads any such file (ours or a third party's, either layout) with
  `load_lora_weights` and weighs several with `set_adapters`, after checking it here: a LoRA that
  does not fit the model, unknown keys or NaN weights are one line, not a traceback or a silent no-op.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import atomic_path, shown_path

if TYPE_CHECKING:
    from styleprompt.diffusion.models import LoadedModel

# The attention projections diffusers' LoRA scripts train (to_out.0 is the output Linear).
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP's attention, as the advanced script
# `--lora-conv`: the resnets' 3x3 convolutions too, as kohya's LoCon (`conv_dim`). Some blocks have
# no attention at all (SD 1.x's finest down/up blocks, micro's 16x16 ones): only a conv LoRA reaches them.
UNET_CONV_TARGETS = ("conv1", "conv2")
BLOCKS = ("all", "style")
ADAPTER = "styleprompt"  # the adapter's name while training


def style_block(unet: Any) -> str:
    """The module prefix `--lora-blocks style` restricts the LoRA to.

    B-LoRA and InstantStyle find SDXL's style in `up_blocks.0.attentions.1`: the second attention of
    the first (lowest-resolution) up block that has attention. The same rule names the analogue
    elsewhere: SD 1.x/2.x `up_blocks.1.attentions.1` (its up_blocks.0 has no attention), micro
    `up_blocks.0.attentions.1`. Provisional for SD 1.x and micro: not yet measured there.
    """
    for index, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        if attentions is not None and len(attentions) > 0:
            return f"up_blocks.{index}.attentions.{min(1, len(attentions) - 1)}"
    raise SettingError("lora_blocks", "this UNet has no attention in its up blocks; use {setting} all")


def unet_target_modules(unet: Any, blocks: str, conv: bool = False) -> list[str]:
    """Full names of the UNet layers the LoRA goes on (peft matches a full name exactly): the
    attention projections, and with `conv` the resnets' convolutions of the same blocks."""
    if blocks not in BLOCKS:
        raise SettingError("lora_blocks", f"{{setting}} must be {' or '.join(BLOCKS)} (got {blocks!r})")
    prefix = style_block(unet) + "." if blocks == "style" else ""
    # the style block's resnet of the same index: the conv half of that block (B-LoRA's block is one pair)
    conv_prefix = prefix.replace(".attentions.", ".resnets.")
    found = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith(prefix) and ".attn" in name:
            if any(name == t or name.endswith("." + t) for t in UNET_TARGETS):
                found.append(name)
        elif conv and isinstance(module, torch.nn.Conv2d) and name.startswith(conv_prefix) and ".resnets." in name:
            if name.rsplit(".", 1)[-1] in UNET_CONV_TARGETS:
                found.append(name)
    if not found:
        raise SettingError(
            "lora_blocks", f"no attention projections to put a LoRA on in this UNet ({{setting}} {blocks})"
        )
    return found


def lora_config(rank: int, alpha: float, targets: Sequence[str]) -> Any:
    from peft import LoraConfig

    # gaussian A and zero B (peft's default): the adapter starts as the identity, as diffusers' scripts.
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; a float alpha is used as a float
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )


@dataclass
class AttachedLora:
    """The modules a run's LoRA is on (diffusers' names: unet, text_encoder, text_encoder_2) and its shape."""

    modules: dict[str, Any]
    rank: int
    alpha: float

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Every trainable LoRA weight, named `<module>.<peft name>`, in a fixed order (the optimizer's)."""
        out = []
        for where, module in self.modules.items():
            # By the adapter's name, not requires_grad: before --lora-start the trainer freezes them.
            out += [(f"{where}.{n}", p) for n, p in module.named_parameters() if "lora_" in n and f".{ADAPTER}." in n]
        return out

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().float().cpu().contiguous() for name, p in self.named_parameters()}

    @torch.no_grad()
    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Put checkpointed weights back; the names and shapes must be this run's exactly.

        A mismatch is a resume with another LoRA recipe than the checkpoint's (the run's
        config.json refuses that first, unless the file was lost or edited). The error names the
        setting the difference points to, as a `SettingError` (the CLI shows its flag): other
        modules (the text encoders) -> `lora_text_encoder`, convolutions on one side only ->
        `lora_conv`, other UNet layers -> `lora_blocks`,
        another shape -> `lora_rank`.
        """
        own = dict(self.named_parameters())
        if set(own) != set(tensors):
            parts_here, parts_there = ({name.split(".", 1)[0] for name in names} for names in (own, tensors))
            conv_here, conv_there = (any(".resnets." in name for name in names) for names in (own, tensors))
            setting = "lora_text_encoder" if parts_here != parts_there else "lora_blocks"
            raise SettingError(
                "lora_conv" if parts_here == parts_there and conv_here != conv_there else setting,
                f"{where} holds LoRA weights for other modules ({len(tensors)} tensors on "
                f"{'/'.join(sorted(parts_there))}, this run has {len(own)} on {'/'.join(sorted(parts_here))}); "
                "resume with the {setting} it was trained with, or start a new run in another output folder",
            )
        for name, param in own.items():
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise SettingError(
                    "lora_rank",
                    f"{where}: LoRA weight {name} has shape {list(tensors[name].shape)}, not {list(param.shape)}; "
                    "resume with the {setting} it was trained with, or start a new run in another output folder",
                )
            param.copy_(tensors[name].to(param.dtype))

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())


def attach(pipe: Any, *, rank: int, alpha: float, blocks: str, text_encoder: bool, conv: bool = False) -> AttachedLora:
    """Put a fresh LoRA on the pipeline's UNet (and text encoders), trainable in fp32."""
    from diffusers.training_utils import cast_training_params
    from peft import inject_adapter_in_model

    modules: dict[str, Any] = {"unet": pipe.unet}
    targets = unet_target_modules(pipe.unet, blocks, conv)
    pipe.unet.add_adapter(lora_config(rank, alpha, targets), adapter_name=ADAPTER)
    if text_encoder:
        for where in ("text_encoder", "text_encoder_2"):
            encoder = getattr(pipe, where, None)
            if encoder is not None:
                # peft's own injection: transformers' `add_adapter` wants a newer peft than diffusers does.
                inject_adapter_in_model(lora_config(rank, alpha, TEXT_TARGETS), encoder, adapter_name=ADAPTER)
                modules[where] = encoder
    for module in modules.values():
        cast_training_params(module, dtype=torch.float32)  # the LoRA trains in fp32 under bf16/fp16 weights
    return AttachedLora(modules, rank, alpha)


# -- saving ----------------------------------------------------------------------------------------


def detach(lora: AttachedLora) -> None:
    """Take the run's adapter off every module it is on (peft's own delete; the base weights stay)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in lora.modules.values():
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer) and ADAPTER in getattr(sub, "lora_A", {}):
                sub.delete_adapter(ADAPTER)
    lora.modules.clear()


def to_diffusers_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft keys -> diffusers' layout, through diffusers' converter, with the layers it has no rule
    for (a conv LoRA's resnet convolutions) named the same way (`.lora.down` / `.lora.up`).

    Why the second step: the converter renames only attention projections, and diffusers' loader
    converts a UNet file back to peft's names only when its first key is not already peft's
    (`lora_A`); a file of both kinds would load its conv layers and silently drop every attention one.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from diffusers.utils.state_dict_utils import StateDictType

    out = {}
    for key, value in convert_state_dict_to_diffusers(state, original_type=StateDictType.PEFT).items():
        key = key.replace(".lora_A.weight", ".lora.down.weight").replace(".lora_B.weight", ".lora.up.weight")
        out[key] = value
    return out


def diffusers_layers(lora: AttachedLora) -> dict[str, dict[str, torch.Tensor]]:
    """{module: diffusers-layout state dict}: peft's own state dict, through diffusers' converter."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for where, module in lora.modules.items():
        state = get_peft_model_state_dict(module, adapter_name=ADAPTER)
        out[where] = {k: v.detach().float().cpu().contiguous() for k, v in to_diffusers_layout(state).items()}
    return out


def save_lora(pipe: Any, lora: AttachedLora, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """`pytorch_lora_weights.safetensors` (or any name) as `pipeline.save_lora_weights` writes it,
    with the adapter configs in its metadata (so a loader knows alpha), written atomically."""
    layers = diffusers_layers(lora)
    kwargs: dict[str, Any] = {}
    for where, module in lora.modules.items():
        # peft's own config of the adapter (rank, alpha, targets): diffusers' loader reads it back
        kwargs[f"{where}_lora_layers"] = layers[where]
        kwargs[f"{where}_lora_adapter_metadata"] = module.peft_config[ADAPTER].to_dict()
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="styleprompt-lora-") as folder:  # save_lora_weights writes a folder
        written = Path(folder) / path.name
        type(pipe).save_lora_weights(folder, weight_name=path.name, **kwargs)
        if metadata:
            _add_metadata(written, metadata)
        with atomic_path(path) as tmp:
            shutil.copyfile(written, tmp)
    return path


def _add_metadata(path: Path, extra: dict[str, str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata() or {})
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(path), metadata={**meta, **extra})


def save_kohya(lora: AttachedLora, path: Path) -> Path:
    """The kohya-format twin of the run's LoRA (A1111, Forge and ComfyUI load it): peft's state dict
    through diffusers' `convert_state_dict_to_kohya`; each `.alpha` is the adapter's alpha (the
    converter writes the rank, which is the same only when alpha = rank)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    peft_state = {}
    for where, module in lora.modules.items():
        for key, value in get_peft_model_state_dict(module, adapter_name=ADAPTER).items():
            peft_state[f"{where}.{key}"] = value.detach().float().cpu()
    kohya = convert_state_dict_to_kohya(peft_state)
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(lora.alpha))
    kohya = {k: v.contiguous() for k, v in kohya.items()}
    with atomic_path(path) as tmp:
        save_file(kohya, str(tmp), metadata={"format": "pt", "ss_network_module": "networks.lora"})
    return path


def load_file_into(lora: AttachedLora, path: str | os.PathLike) -> None:
    """A run's own LoRA file (a step snapshot) back into its attached adapter, by peft's names
    (`pick --quick` scores each saved (token, LoRA) pair on the rebuilt trainer)."""
    weights = read_peft_lora(path).weights
    own = {name: name.replace(f".{ADAPTER}.weight", ".weight") for name, _ in lora.named_parameters()}
    if set(own.values()) != set(weights):
        raise UserError(
            f"{shown_path(path)} holds LoRA weights for other modules ({len(weights)} tensors, this run's "
            f"LoRA has {len(own)}); it is not this run's LoRA"
        )
    lora.load_state({name: weights[key] for name, key in own.items()}, shown_path(path))


@torch.no_grad()
def reset(lora: AttachedLora) -> None:
    """The adapter back to the identity (every up weight zero, as peft starts it): the token alone."""
    for name, param in lora.named_parameters():
        if ".lora_B." in name:
            param.zero_()


# -- reading and applying ------------------------------------------------------------------------

_KOHYA = re.compile(r"^lora_(unet|te1|te2|te)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")
_DIFFUSERS = re.compile(
    r"^(unet|text_encoder|text_encoder_2)\.[A-Za-z0-9_.]+\.(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)(\.[A-Za-z0-9_]+)?\.weight$"
)

_DOWN = ("lora_A.weight", "lora_down.weight", "lora.down.weight", "lora_linear_layer.down.weight")
_UP = ("lora_B.weight", "lora_up.weight", "lora.up.weight", "lora_linear_layer.up.weight")  # _DOWN's partners


@dataclass
class LoraFile:
    """What a LoRA file is, read from its keys (no model needed): for `inspect` and the checks."""

    path: Path
    format: str  # "diffusers" or "kohya"
    rank: int
    modules: int  # how many layers it adapts
    parts: list[str]  # unet / text_encoder / text_encoder_2
    cross_attention_widths: list[int]  # input widths of attn2.to_k: the text encoder(s) it was made for


def _refuse(setting: str | None, template: str) -> UserError:
    """The one-line error of a LoRA file: named as the setting it came in by (`loras`: the CLI's
    `--lora`, the app's upload field) or, read as a command's own input (`inspect`, `convert`), by
    the file alone."""
    if setting is None:
        return UserError(template.replace("{setting} ", "", 1))
    return SettingError(setting, template)


def read_lora_file(path: str | os.PathLike, setting: str | None = "loras") -> tuple[LoraFile, dict[str, torch.Tensor]]:
    """Read and check a LoRA file: safetensors, known keys only, finite numbers, each layer's down
    and up weights of one rank; one line otherwise."""
    from safetensors.torch import load_file

    p = Path(path)
    shown = shown_path(p)
    if not p.is_file():
        raise _refuse(setting, f"{{setting}} {shown}: no such file")
    try:
        tensors = load_file(str(p))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        first = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise _refuse(setting, f"{{setting}} {shown} is not a readable safetensors file ({first})") from None
    if not tensors:
        raise _refuse(setting, f"{{setting}} {shown} holds no tensors")
    kohya = [k for k in tensors if _KOHYA.match(k)]
    diffusers = [k for k in tensors if _DIFFUSERS.match(k)]
    fmt = "kohya" if len(kohya) >= len(diffusers) else "diffusers"
    known = kohya if fmt == "kohya" else diffusers
    unknown = sorted(set(tensors) - set(known))
    if unknown:
        raise _refuse(
            setting,
            f"{{setting}} {shown} holds {len(unknown)} key(s) that are not a {fmt} LoRA's (first: {unknown[0][:80]}); "
            "it is not a LoRA for a Stable Diffusion UNet/text encoder",
        )
    for key, value in tensors.items():
        if not value.is_floating_point() or not bool(torch.isfinite(value.float()).all()):
            raise _refuse(
                setting, f"{{setting}} {shown}: {key[:80]} holds NaN or infinite numbers; the LoRA is damaged"
            )
    down = {k: v for k, v in tensors.items() if k.endswith(_DOWN)}
    if not down:
        raise _refuse(setting, f"{{setting}} {shown} holds no LoRA down weights")
    for key, weight in down.items():
        up_key = next(key[: -len(d)] + u for d, u in zip(_DOWN, _UP) if key.endswith(d))
        up = tensors.get(up_key)
        if up is None:
            raise _refuse(setting, f"{{setting}} {shown}: {key[:80]} has no up weight beside it; the LoRA is damaged")
        if weight.dim() < 2 or up.dim() < 2 or int(weight.shape[0]) != int(up.shape[1]):
            raise _refuse(
                setting,
                f"{{setting}} {shown}: a rank mismatch in {key[:80]} (down rank {int(weight.shape[0])}, "
                f"up rank {int(up.shape[1]) if up.dim() > 1 else 0}); the LoRA is damaged",
            )
    ranks = {int(v.shape[0]) for v in down.values()}
    parts = sorted({_part(k, fmt) for k in known})
    widths = sorted({int(v.shape[1]) for k, v in down.items() if "attn2.to_k" in k or "attn2_to_k" in k})
    info = LoraFile(p, fmt, max(ranks), len(down), parts, widths)
    return info, tensors


def _part(key: str, fmt: str) -> str:
    if fmt == "diffusers":
        return key.split(".", 1)[0]
    return {"unet": "unet", "te": "text_encoder", "te1": "text_encoder", "te2": "text_encoder_2"}[key.split("_")[1]]


# The UNet's cross-attention width names the family (SDXL: both text encoders' states side by side).
_FAMILY_BY_CROSS_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 128: "micro", 32: "tiny", 96: "tiny-sdxl"}


def is_lora_file(path: str | os.PathLike) -> bool:
    """Whether a .safetensors file holds LoRA keys (read from its header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception:  # noqa: BLE001 - not safetensors: not a LoRA file we read
        return False
    return any(_KOHYA.match(k) or _DIFFUSERS.match(k) for k in keys)


def describe(info: LoraFile) -> dict[str, Any]:
    """What `styleprompt inspect` shows of a LoRA file: format, rank, targets, family."""
    widths = info.cross_attention_widths
    family = (
        " or ".join(_FAMILY_BY_CROSS_WIDTH.get(w, f"a model of text width {w}") for w in widths)
        if widths
        else "unknown (no cross-attention layer adapted)"
    )
    return {
        "file": str(info.path),
        "format": f"lora-{info.format}",
        "rank": info.rank,
        "layers": info.modules,
        "targets": info.parts,
        "family": family,
    }


def parse_spec(spec: str) -> tuple[str, float]:
    """`FILE[:SCALE]` -> (file, scale); a colon not followed by a number belongs to the file name."""
    path, sep, tail = spec.rpartition(":")
    if sep and path:
        try:
            scale = float(tail)
        except ValueError:
            return spec, 1.0
        if not math.isfinite(scale) or not -10.0 <= scale <= 10.0:
            raise SettingError("loras", f"{{setting}} {spec}: the scale must be a number between -10 and 10")
        return path, scale
    return spec, 1.0


def _adapted_layers(pipe: Any, name: str) -> int:
    count = 0
    for where in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, where, None)
        if module is None:
            continue
        for _, sub in module.named_modules():
            lora_a = getattr(sub, "lora_A", None)
            if isinstance(lora_a, torch.nn.ModuleDict) and name in lora_a:
                count += 1
    return count


def load_loras(loaded: LoadedModel, specs: Sequence[str | tuple[str, float]]) -> list[dict]:
    """Load each `FILE[:SCALE]` into the pipeline as its own adapter and weigh them with `set_adapters`.

    Returns what the PNG records per LoRA (file, sha256, format, rank, scale), which is also kept
    on `loaded.loras` beside its tokens' provenance. A file that does not fit the model (another
    family: its cross-attention width or layer shapes differ, or layers the model does not have)
    is refused in one line, and the pipeline is left without it.
    """
    from styleprompt.diffusion.tokens import file_sha256

    pipe = loaded.pipe
    records: list[dict] = list(loaded.loras)
    for spec in specs:
        file, scale = parse_spec(spec) if isinstance(spec, str) else spec
        info, _ = read_lora_file(file)
        width = int(pipe.unet.config.cross_attention_dim)
        if info.cross_attention_widths and info.cross_attention_widths != [width]:
            raise SettingError(
                "loras",
                f"{{setting}} {shown_path(file)} was made for a model whose text width is "
                f"{info.cross_attention_widths[0]} ({describe(info)['family']}), but {loaded.name} ({loaded.family}) "
                f"has {width}; use a LoRA trained for this model family",
            )
        digest = file_sha256(file, length=64)
        name = f"lora_{len(records)}_{digest[:8]}"
        try:
            # The file, not the tensors read above: diffusers takes the adapter's alpha from its metadata.
            pipe.load_lora_weights(str(file), adapter_name=name)
        except (ValueError, RuntimeError, KeyError, IndexError) as exc:
            _drop(pipe, name)
            first = str(exc).splitlines()[0][:140] if str(exc) else type(exc).__name__
            raise SettingError(
                "loras",
                f"{{setting}} {shown_path(file)} does not fit {loaded.name} ({loaded.family}): {first}; "
                "use a LoRA trained for this model family",
            ) from None
        adapted = _adapted_layers(pipe, name)
        if adapted != info.modules:
            _drop(pipe, name)
            raise SettingError(
                "loras",
                f"{{setting}} {shown_path(file)} adapts {info.modules} layers, but only {adapted} of them exist in "
                f"{loaded.name} ({loaded.family}); use a LoRA trained for this model family",
            )
        records.append(
            {
                "file": str(Path(file).resolve()),
                "sha256": digest,
                "format": info.format,
                "rank": info.rank,
                "scale": float(scale),
                "adapter": name,
            }
        )
    if records:
        pipe.set_adapters([r["adapter"] for r in records], adapter_weights=[r["scale"] for r in records])
    loaded.loras = records
    return loaded_loras(loaded)


def _drop(pipe: Any, name: str) -> None:
    try:
        pipe.delete_adapters(name)
    except Exception:  # noqa: BLE001 - a half-loaded adapter may not be registered anywhere
        pass


def loaded_loras(loaded: LoadedModel) -> list[dict]:
    """What the PNG records of the LoRAs loaded into the model (file, sha256, format, rank, scale)."""
    return [{k: v for k, v in r.items() if k != "adapter"} for r in loaded.loras]


def lora_metadata(model: str, family: str, step: int) -> dict[str, str]:
    return {"styleprompt.model": model, "styleprompt.family": family, "styleprompt.step": str(step)}


# -- converting between the two layouts (`styleprompt convert`) ------------------------------------

LORA_FORMATS = ("lora-diffusers", "lora-kohya")
LORA_FILE_NAMES = {"lora-diffusers": "pytorch_lora_weights.safetensors", "lora-kohya": "lora_kohya.safetensors"}
_PARTS = ("unet", "text_encoder", "text_encoder_2")


@dataclass
class PeftLora:
    """A LoRA file's weights in peft's layout (`<part>.<module>.lora_A/B.weight`) with each module's
    alpha: the one form both layouts convert to and from with diffusers' own converters."""

    weights: dict[str, torch.Tensor]
    alphas: dict[str, float]  # `<part>.<module>` -> alpha
    metadata: dict[str, str]  # styleprompt's own metadata (model, family, step), carried across


def _to_peft(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' loader output (`lora_state_dict`) -> peft keys, part by part (the UNet has its own converter)."""
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    out: dict[str, torch.Tensor] = {}
    for part in _PARTS:
        sub = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        if sub:
            converted = convert_unet_state_dict_to_peft(sub) if part == "unet" else convert_state_dict_to_peft(sub)
            out.update({f"{part}.{k}": v for k, v in converted.items()})
    return out


def _modules(weights: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k[: -len(".lora_A.weight")] for k in weights if k.endswith(".lora_A.weight"))


def _configured_alpha(meta: dict[str, Any], part: str, module: str, rank: int) -> float:
    """A module's alpha from diffusers' adapter metadata (peft's lora_alpha and alpha_pattern); the
    rank where the file has none, which is what diffusers' loader then does (scale 1)."""
    pattern = meta.get(f"{part}.alpha_pattern") or {}
    for key, value in pattern.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return float(value)
    alpha = meta.get(f"{part}.lora_alpha")
    return float(alpha) if alpha is not None else float(rank)


def _alpha_target(key: str) -> str:
    """The down weight a kohya alpha of diffusers' `lora_state_dict` scales: `...to_q_lora.down.weight.alpha`
    names it; a LoCon conv layer's `...resnets.0.conv1.alpha` names only the layer."""
    target = key[: -len(".alpha")]
    return target if target.endswith(".weight") else target + ".lora.down.weight"


def read_peft_lora(path: str | os.PathLike) -> PeftLora:
    """Any LoRA file (either layout, checked by `read_lora_file`) as peft weights with their alphas,
    through diffusers' own `lora_state_dict` (which reads kohya's names and alphas)."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from safetensors import safe_open

    info, _ = read_lora_file(path, setting=None)
    with safe_open(str(path), framework="pt") as handle:
        file_meta = dict(handle.metadata() or {})
    carried = {k: v for k, v in file_meta.items() if k.startswith("styleprompt.")}
    state, network_alphas, meta = StableDiffusionLoraLoaderMixin.lora_state_dict(str(path), return_lora_metadata=True)
    weights = {k: v.contiguous() for k, v in _to_peft(state).items()}
    alphas: dict[str, float] = {}
    if info.format == "kohya":
        # diffusers names each alpha as the down weight it scales (a conv layer's as the layer itself):
        # the same converter names it in peft's terms
        named = _to_peft({_alpha_target(k): torch.tensor(float(v)) for k, v in (network_alphas or {}).items()})
        alphas = {k[: -len(".lora_A.weight")]: float(v) for k, v in named.items() if k.endswith(".lora_A.weight")}
    for module in _modules(weights):
        if module not in alphas:
            part, name = module.split(".", 1)
            rank = int(weights[module + ".lora_A.weight"].shape[0])
            alphas[module] = float(rank) if info.format == "kohya" else _configured_alpha(meta or {}, part, name, rank)
    return PeftLora(weights, alphas, carried)


def write_kohya(lora: PeftLora, path: Path) -> Path:
    """kohya's layout through diffusers' `convert_state_dict_to_kohya`, each `.alpha` the module's own."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    for module in _modules(lora.weights):
        pair = {f"{module}.lora_A.weight": lora.weights[f"{module}.lora_A.weight"]}
        pair[f"{module}.lora_B.weight"] = lora.weights[f"{module}.lora_B.weight"]
        for key, value in convert_state_dict_to_kohya(pair).items():
            out[key] = torch.tensor(lora.alphas[module]) if key.endswith(".alpha") else value.contiguous()
    meta = {"format": "pt", "ss_network_module": "networks.lora", **lora.metadata}
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=meta)
    return path


def write_diffusers(lora: PeftLora, path: Path) -> Path:
    """diffusers' layout as `save_lora_weights` writes it, with a peft adapter config per part in the
    metadata (rank, alpha; rank_pattern/alpha_pattern for the modules that differ), so diffusers'
    loader scales each module as the source file did."""
    from collections import Counter

    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    kwargs: dict[str, Any] = {}
    for part in _PARTS:
        sub = {k[len(part) + 1 :]: v for k, v in lora.weights.items() if k.startswith(part + ".")}
        if not sub:
            continue
        modules = [m[len(part) + 1 :] for m in _modules(lora.weights) if m.startswith(part + ".")]
        ranks = {m: int(sub[f"{m}.lora_A.weight"].shape[0]) for m in modules}
        alphas = {m: lora.alphas[f"{part}.{m}"] for m in modules}
        rank = Counter(ranks.values()).most_common(1)[0][0]
        alpha = Counter(alphas.values()).most_common(1)[0][0]
        kwargs[f"{part}_lora_layers"] = to_diffusers_layout(sub)
        kwargs[f"{part}_lora_adapter_metadata"] = {
            "r": rank,
            "lora_alpha": alpha,
            "target_modules": modules,
            "rank_pattern": {m: r for m, r in ranks.items() if r != rank},
            "alpha_pattern": {m: a for m, a in alphas.items() if a != alpha},
        }
    saver = (
        StableDiffusionXLLoraLoaderMixin if "text_encoder_2_lora_layers" in kwargs else StableDiffusionLoraLoaderMixin
    )
    with tempfile.TemporaryDirectory(prefix="styleprompt-lora-") as folder:
        written = Path(folder) / path.name
        saver.save_lora_weights(folder, weight_name=path.name, **kwargs)
        if lora.metadata:
            _add_metadata(written, lora.metadata)
        with atomic_path(path) as tmp:
            shutil.copyfile(written, tmp)
    return path


def convert_lora_file(source: str | os.PathLike, target: str | os.PathLike, fmt: str) -> tuple[Path, LoraFile]:
    """Rewrite a LoRA file in the other layout (`lora-diffusers` or `lora-kohya`), tensors copied as
    stored, each module's alpha carried. Returns the file written and what it is."""
    if fmt not in LORA_FORMATS:
        raise SettingError("fmt", f"{{setting}} must be {' or '.join(LORA_FORMATS)} for a LoRA file (got {fmt!r})")
    out = Path(target)
    if out.suffix != ".safetensors":
        raise SettingError("output", f"{{setting}} {shown_path(out)}: a LoRA file is written as .safetensors")
    lora = read_peft_lora(source)
    (write_kohya if fmt == "lora-kohya" else write_diffusers)(lora, out)
    return out, read_lora_file(out, setting=None)[0]
