"""The stylization methods behind one contract, and the registry the CLI, `compare` and the app read.

Why a registry: `styleprompt transfer`, `styleprompt compare` and the app's Classic and Compare
tabs all offer "a method that turns a content photo and style images into a picture". Each of
them lists `names()` and calls `get(name)`; none of them names a method. Adding a method is one
class that satisfies `StyleMethod` (in its own module) and one `register(...)` line.

The contract:
- `StyleMethod.load(sources, networks)` loads the networks once (through `networks`, so the
  app's cache or a compare run shares one VGG-19 between Gatys and AdaIN) and returns a
  `Stylizer`, which then stylizes any number of images.
- Every method reads the same `Request` (styles, weights, alpha, colours, mask, size, one
  `tile_size` convention: "auto", None/0 for one pass, N for N-pixel tiles) plus the few
  options only it understands (`StyleMethod.options`), which callers offer and the registry
  filters, so a caller never branches on a method's name.
- The answer is a `StyleResult`: the image, whether its networks are real or random, the time
  and memory it took, and the method's own notes (losses, tiles) for the PNG's text.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from PIL import Image

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.measure import measure

if TYPE_CHECKING:
    from classic.tiling import TileSize


# -- the contract ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """Where a method's networks come from: everything a load depends on."""

    device: str = "cpu"
    random_weights: bool = False
    vgg_weights: str | None = None
    decoder_weights: str | None = None
    ghiasi_models: str | None = None
    wct_weights: str | None = None  # cd-wct, wct or a folder (None: cd-wct, found by classic.weights)
    microast_weights: str | None = None  # a folder (None: found by classic.weights)
    seed: int = 0


class Networks(Protocol):
    """A cache of loaded networks (the app's `ModelCache` is one): `build()` runs once per key."""

    def network(self, key: tuple, load: Callable[[], Any]) -> Any: ...


class LocalNetworks:
    """The simplest `Networks`: a dict, for one CLI or compare run."""

    def __init__(self) -> None:
        self._built: dict[tuple, Any] = {}

    def network(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key not in self._built:
            self._built[key] = load()
        return self._built[key]


@dataclass
class Request:
    """What to make, in the terms every method shares; `options` are the method's own."""

    styles: list[Image.Image]
    style_weights: list[float] | None = None
    alpha: float = 1.0
    preserve_color: bool = False
    color_mode: str | None = None  # None: the method's own default
    mask: Image.Image | None = None
    size: int | None = None
    tile_size: TileSize = "auto"
    seed: int = 0
    show_progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StyleResult:
    """One stylized picture and what it took."""

    image: Image.Image
    random_weights: bool
    seconds: float = 0.0
    peak_mib: float | None = None
    memory_kind: str = ""
    details: dict[str, str] = field(default_factory=dict)  # the method's notes, written into the PNG
    loss: tuple[float, float] | None = None  # first and last loss, for optimisation methods


class Stylizer(Protocol):
    """A method with its networks loaded: stylizes many images."""

    random_weights: bool

    def describe(self) -> dict[str, str]:
        """Where its networks came from, for the PNG's text."""
        ...

    def stylize(self, content: Image.Image, request: Request) -> StyleResult: ...


class StyleMethod(Protocol):
    """One stylization method: a name, its own options, and a loader."""

    name: str
    label: str
    options: frozenset[str]  # the method-specific options it reads from `Request.options`

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        """Its own options from `styleprompt transfer`'s flags (steps_folder: for intermediate images)."""
        ...

    def load(self, sources: Sources, networks: Networks) -> Stylizer: ...


# -- the registry ----------------------------------------------------------------------------------------

REGISTRY: dict[str, StyleMethod] = {}


def register(method: StyleMethod) -> StyleMethod:
    REGISTRY[method.name] = method
    return method


def names() -> list[str]:
    """Every registered method, in registration order."""
    return list(REGISTRY)


def get(name: str) -> StyleMethod:
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def label(name: str) -> str:
    return REGISTRY[name].label if name in REGISTRY else name


def own_options(method: StyleMethod, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered options this method reads (callers offer all they know; each method takes its own)."""
    return {k: v for k, v in offered.items() if k in method.options and v is not None}


def stylize_measured(stylizer: Stylizer, content: Image.Image, request: Request, device: str) -> StyleResult:
    """`stylizer.stylize` with its wall time and peak memory (networks already loaded)."""
    with measure(device) as m:
        result = stylizer.stylize(content, request)
    result.seconds, result.peak_mib, result.memory_kind = m.seconds, m.peak_mib, m.kind
    return result


# -- the classic methods ----------------------------------------------------------------------------


def _numbers(text: str | None, kind: Callable[[str], Any] = float) -> list | None:
    if text is None:
        return None
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"cannot read {text!r}: give numbers separated by commas") from None


def _common(request: Request) -> dict[str, Any]:
    """The keyword arguments every `classic.<method>.stylize` takes."""
    common: dict[str, Any] = dict(
        style_weights=request.style_weights,
        alpha=request.alpha,
        preserve_color=request.preserve_color,
        mask=request.mask,
        size=request.size,
        show_progress=request.show_progress,
        tile_size=request.tile_size,
    )
    if request.color_mode is not None:
        common["color_mode"] = request.color_mode
    return common


def _take_notes(image: Image.Image) -> dict[str, str]:
    """The text a classic function left on its image, moved into the result (random weights are
    known from the networks, not read back)."""
    notes = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str) and k != "random_weights"}
    image.info.clear()
    return notes


def _vgg(sources: Sources, networks: Networks) -> Any:
    from classic.vgg import load_vgg19

    s = sources
    return networks.network(
        ("vgg19", s.vgg_weights, s.random_weights, s.device, s.seed),
        lambda: load_vgg19(s.vgg_weights, random_weights=s.random_weights, device=s.device, seed=s.seed),
    )


class GatysStylizer:
    def __init__(self, vgg: Any, device: str):
        self.vgg, self.device = vgg, device
        self.random_weights = bool(vgg.random_weights)

    def describe(self) -> dict[str, str]:
        return {"vgg": str(getattr(self.vgg, "source", ""))}

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from classic.gatys import stylize

        image = stylize(
            content,
            request.styles,
            device=self.device,
            vgg=self.vgg,
            seed=request.seed,
            **_common(request),
            **request.options,
        )
        notes = _take_notes(image)
        iterations = request.options.get("iterations")
        if iterations is not None:
            notes["iterations"] = ",".join(map(str, iterations)) if isinstance(iterations, list) else str(iterations)
        loss = (float(notes["loss_first"]), float(notes["loss_last"])) if "loss_first" in notes else None
        return StyleResult(image, self.random_weights, details=notes, loss=loss)


class Gatys:
    name, label = "gatys", "Gatys"
    options = frozenset(
        {
            "iterations",
            "optimizer",
            "content_layer",
            "style_layers",
            "style_layer_weights",
            "init",
            "scales",
            "style_scale",
            "save_every",
            "outdir",
            "content_weight",
            "style_weight",
            "tv_weight",
            "learning_rate",
        }
    )

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        iterations = _numbers(args.iterations, int) or []
        opts = {
            "iterations": iterations[0] if len(iterations) == 1 else iterations,
            "optimizer": args.optimizer,
            "content_layer": args.content_layer,
            "style_layers": [s.strip() for s in args.style_layers.split(",") if s.strip()],
            "style_layer_weights": _numbers(args.style_layer_weights),
            "init": args.init,
            "scales": _numbers(args.scales),
            "style_scale": args.style_scale,
            "save_every": args.save_every,
            "outdir": steps_folder if args.save_every else None,
        }
        for name in ("content_weight", "style_weight", "tv_weight", "learning_rate"):
            if getattr(args, name) is not None:
                opts[name] = getattr(args, name)
        return opts

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        return GatysStylizer(_vgg(sources, networks), sources.device)


class AdainStylizer:
    def __init__(self, vgg: Any, decoder: Any, device: str):
        self.vgg, self.decoder, self.device = vgg, decoder, device
        self.random_weights = bool(vgg.random_weights or decoder.random_weights)

    def describe(self) -> dict[str, str]:
        return {"vgg": str(self.vgg.source), "decoder": str(self.decoder.source)}

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from classic.adain import stylize

        image = stylize(
            content,
            request.styles,
            device=self.device,
            vgg=self.vgg,
            decoder=self.decoder,
            seed=request.seed,
            **_common(request),
            **request.options,
        )
        return StyleResult(image, self.random_weights, details=_take_notes(image))


class Adain:
    name, label = "adain", "AdaIN"
    options = frozenset({"style_size"})

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {"style_size": args.style_size}

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        from classic.adain import load_decoder

        s = sources
        # The decoder first: a missing decoder should be reported before a VGG download is tried.
        decoder = networks.network(
            ("adain-decoder", s.decoder_weights, s.random_weights, s.device, s.seed),
            lambda: load_decoder(s.decoder_weights, random_weights=s.random_weights, seed=s.seed, device=s.device),
        )
        return AdainStylizer(_vgg(sources, networks), decoder, sources.device)


class GhiasiStylizer:
    random_weights = False  # the packaged network is always the real, pretrained one

    def __init__(self, models_dir: str | None, device: str, source: str):
        self.models_dir, self.device, self.source = models_dir, device, source

    def describe(self) -> dict[str, str]:
        return {"ghiasi_models": self.source}

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from classic.ghiasi import stylize

        image = stylize(
            content,
            request.styles,
            device=self.device,
            models_dir=self.models_dir,
            **_common(request),
            **request.options,
        )
        return StyleResult(image, False, details=_take_notes(image))


class Ghiasi:
    name, label = "ghiasi", "Ghiasi"
    options: frozenset[str] = frozenset()

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {}

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        try:
            from classic.ghiasi import load_ghiasi
        except ImportError as exc:
            raise UserError(f"the ghiasi method is not available here ({exc}); install the [ghiasi] extra") from None
        predictor, _ = load_ghiasi(sources.ghiasi_models, device=sources.device)  # cached per process
        return GhiasiStylizer(sources.ghiasi_models, sources.device, str(getattr(predictor, "source", "")))


class WctStylizer:
    def __init__(self, nets: Any, device: str):
        self.nets, self.device = nets, device
        self.random_weights = bool(nets.random_weights)

    def describe(self) -> dict[str, str]:
        return {"wct_weights": f"{self.nets.name} ({self.nets.source})"}

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from classic.wct import stylize

        image = stylize(
            content,
            request.styles,
            device=self.device,
            nets=self.nets,
            seed=request.seed,
            **_common(request),
            **request.options,
        )
        return StyleResult(image, self.random_weights, details=_take_notes(image))


class Wct:
    name, label = "wct", "WCT"
    options = frozenset({"style_size", "levels"})

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {"style_size": args.style_size, "levels": getattr(args, "wct_levels", None)}

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        from classic.wct import load_wct

        s = sources
        nets = networks.network(
            ("wct", s.wct_weights, s.random_weights, s.device, s.seed),
            lambda: load_wct(s.wct_weights, random_weights=s.random_weights, seed=s.seed, device=s.device),
        )
        return WctStylizer(nets, s.device)


class MicroAstStylizer:
    def __init__(self, nets: Any, device: str):
        self.nets, self.device = nets, device
        self.random_weights = bool(nets.random_weights)

    def describe(self) -> dict[str, str]:
        return {"microast_weights": str(self.nets.source)}

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from classic.microast import stylize

        image = stylize(
            content,
            request.styles,
            device=self.device,
            nets=self.nets,
            seed=request.seed,
            **_common(request),
            **request.options,
        )
        return StyleResult(image, self.random_weights, details=_take_notes(image))


class MicroAst:
    name, label = "microast", "MicroAST"
    options = frozenset({"style_size"})

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {"style_size": args.style_size}

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        from classic.microast import load_microast

        s = sources
        nets = networks.network(
            ("microast", s.microast_weights, s.random_weights, s.device, s.seed),
            lambda: load_microast(s.microast_weights, random_weights=s.random_weights, seed=s.seed, device=s.device),
        )
        return MicroAstStylizer(nets, s.device)


register(Gatys())
register(Adain())
register(Ghiasi())
register(Wct())
register(MicroAst())
