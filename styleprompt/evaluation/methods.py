"""The stylization methods behind one contract, and the registry the CLI, `compare` and the app read.

Why a registry: `styleprompt transfer`, `styleprompt compare` and the app's Classic and Compare
tabs all offer "a method that turns a content photo (and style images) into a picture". Each of
them lists `names()` and calls `get(name)`; none of them names a method, and none of them
spells a method's flags or fields. Adding a method is one class (a `Method` subclass that fills
in what it needs) and one `register(...)` line.

What a method owns (and the callers only read):
- its **flags** (`add_arguments`, beside `options_from_args`) for `styleprompt transfer`;
- its **fields** (`fields`: the few settings the app tabs and `compare` offer, with their
  label, default, bounds and compare flag);
- its **weight sources** (`sources`: `WeightSource`s naming the key it reads from
  `Sources.files`, the flag and the app field that set it); a source two methods share (VGG-19
  for Gatys and AdaIN) is declared by both with the same key and offered once;
- whether it can run here (`availability`: real weights, random ones, or the reason it cannot),
  so `compare` and the app default to what runs and list the rest with the reason;
- its **pre-flight check** (`check`, before any network is loaded) and its measured memory
  (`footprint`, a `classic.limits.Footprint`);
- whether it uses the content picture (`uses_content`) and whether it stands alone in
  `transfer` and the Classic tab (`standalone`; the token methods need a trained token and the
  diffusion model, so they are compare columns);
- its notes about each picture, as typed `Notes` (losses, evaluations, tiles, prompt, ...).

The flow: `StyleMethod.load(sources, networks)` loads the networks once (through `networks`, so
the app's cache or a compare run shares one VGG-19 between Gatys and AdaIN, and both token
methods one pipeline with the token in it) and returns a `Stylizer`, which stylizes any number
of images from a `Request` (styles, weights, alpha, colours, mask, size, one `tile_size`
convention, the subject, and the method's own `options`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from PIL import Image

from classic import limits
from styleprompt.diffusion.families import DEFAULT_MODEL, MODEL_CHOICES_HELP
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.measure import measure

if TYPE_CHECKING:
    from classic.limits import Footprint
    from classic.tiling import TileSize


# -- the contract ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    """Where one kind of network file comes from: the key in `Sources.files`, its flag, its app field."""

    key: str  # e.g. "vgg_weights"; the same key in two methods is one source (one flag, one field)
    flag: str  # e.g. "--vgg-weights", in `transfer` and `compare`
    help: str
    app_label: str | None = None  # a server-side path field in the app; None: not offered there
    elem: str = ""  # the app field's elem_id suffix: "vgg" -> classic-vgg, cmp-vgg
    default: str | None = None  # the flag's default (the token methods' --model)
    what: str = ""  # what it is, for messages ("VGG-19 weights file")


@dataclass(frozen=True)
class Field:
    """One per-method setting the app tabs and `compare` offer, with its bounds.

    `option` is the key the method reads from `Request.options`. The same Field object in two
    methods (the token methods' sampling steps) is one field and one flag.
    """

    option: str
    label: str  # the app's label, e.g. "Iterations (Gatys)"
    default: int | float  # the app's value before any edit
    minimum: int | float
    maximum: int | float
    elem: str  # elem_id suffix: "iterations" -> classic-iterations, cmp-iterations
    integer: bool = True
    app_limit: str | None = None  # an AppSettings attribute that caps `maximum` in the app
    compare_flag: str | None = None  # e.g. "--gatys-iterations"; None: compare does not offer it
    compare_default: int | float | None = None  # None: the method's own default
    help: str = ""
    slider_step: float | None = None  # a slider in the app instead of a number box

    @property
    def setting(self) -> str:
        """The library's name for it in messages (`gatys_iterations`; each front end names it its way)."""
        return self.compare_flag.lstrip("-").replace("-", "_") if self.compare_flag else self.option

    def check(self, value: Any, name: str | None = None) -> Any:
        """`value` within the bounds (a SettingError naming `name`, else `setting`, otherwise)."""
        limits.check_range(name or self.setting, value, self.minimum, self.maximum)
        return value


@dataclass(frozen=True)
class Sources:
    """Where a method's networks come from: everything a load depends on.

    `files` is open: each method reads its own keys (`WeightSource.key`): a path, a hub id, or
    (the app's Compare tab) a network already loaded. A key absent from `files` is one the
    caller will ask for later (the app's token, chosen in the same form); a key present with
    None was not given.
    """

    device: str = "cpu"
    random_weights: bool = False
    seed: int = 0
    files: Mapping[str, Any] = field(default_factory=dict)

    def file(self, key: str) -> Any:
        return self.files.get(key)


@dataclass(frozen=True)
class Availability:
    """Whether a method can run with the sources at hand: on real or random weights, or why not."""

    reason: str | None = None  # None: it can run
    random: bool = False  # it would run on random weights (a demo of the machinery)

    @property
    def ok(self) -> bool:
        return self.reason is None


class Networks(Protocol):
    """A cache of loaded networks (the app's `ModelCache` is one): `load()` runs once per key."""

    def network(self, key: tuple, load: Callable[[], Any]) -> Any: ...


class LocalNetworks:
    """The simplest `Networks`: a dict, for one CLI or compare run. A load that was refused
    (a UserError: no weights, no model) is remembered too, so two methods sharing a network
    report the same reason from one attempt."""

    def __init__(self) -> None:
        self._built: dict[tuple, Any] = {}
        self._refused: dict[tuple, UserError] = {}

    def network(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key in self._refused:
            raise self._refused[key]
        if key not in self._built:
            try:
                self._built[key] = load()
            except UserError as exc:
                self._refused[key] = exc
                raise
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
    subject: str = ""  # what the content shows ("city"), for methods that paint from a prompt
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Notes:
    """What a method says about one picture, typed; `as_text()` is the PNG's text at the edge."""

    loss: tuple[float, float] | None = None  # first and last loss, for optimisation methods
    evaluations: int | None = None
    tiles: int | None = None
    prompt: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # anything else, already text

    def as_text(self) -> dict[str, str]:
        text = dict(self.extra)
        if self.loss is not None:
            text["loss_first"], text["loss_last"] = f"{self.loss[0]:.6g}", f"{self.loss[1]:.6g}"
        for name in ("evaluations", "tiles", "prompt"):
            value = getattr(self, name)
            if value is not None:
                text[name] = str(value)
        return text


@dataclass
class StyleResult:
    """One stylized picture and what it took."""

    image: Image.Image
    random_weights: bool
    seconds: float = 0.0
    peak_mib: float | None = None
    memory_kind: str = ""
    notes: Notes = field(default_factory=Notes)

    @property
    def details(self) -> dict[str, str]:
        """The notes as the PNG's text."""
        return self.notes.as_text()

    @property
    def loss(self) -> tuple[float, float] | None:
        return self.notes.loss


class Stylizer(Protocol):
    """A method with its networks loaded: stylizes many images."""

    random_weights: bool

    def describe(self) -> dict[str, str]:
        """Where its networks came from, for the PNG's text."""
        ...

    def stylize(self, content: Image.Image, request: Request) -> StyleResult: ...

    # Optional: `reference(content, request) -> Image | None`, the picture the method starts from
    # (its style gain is measured over it). Without it, a method that uses the content starts
    # from the content photo, and one that does not has no gain.
    # Optional: `label: str`, the column's name when the loaded networks make it more than the
    # method's `label` (the token with a LoRA applied: "token text->image + LoRA"), so a reader of the
    # grid, the report and compare.json sees what painted it.


@dataclass
class Plan:
    """What a run will ask of a method, known before any network is loaded (for `check`)."""

    contents: list[tuple[str, tuple[int, int]]]  # (what, (width, height) as read)
    styles: list[Image.Image]
    size: int | None  # the long side every content is scaled to (None: as it is)
    how: str  # what scales them, for messages ("{setting} 512": the setting `size`, named by each front end)
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options
    device: str = "cpu"
    methods: list[str] = field(default_factory=list)  # every method of the run (for advice naming the others)
    # Where the networks will come from: a method checks its own files here (the token methods' LoRA),
    # so a bad file is one line before anything runs, not a skipped column after minutes of others.
    sources: Sources | None = None


class StyleMethod(Protocol):
    """One stylization method (see the module's docstring for what each part is for)."""

    name: str
    label: str

    @property
    def kind(self) -> str:
        """ "style transfer", "text->image", "image->image": what it makes from what."""
        ...

    @property
    def options(self) -> frozenset[str]:
        """The method-specific options it reads from `Request.options`."""
        ...

    @property
    def fields(self) -> Sequence[Field]: ...

    @property
    def sources(self) -> Sequence[WeightSource]: ...

    @property
    def uses_content(self) -> bool: ...

    @property
    def needs_subject(self) -> bool: ...

    @property
    def standalone(self) -> bool: ...

    @property
    def footprint(self) -> Footprint | None: ...

    def add_arguments(self, parser: argparse._ActionsContainer) -> None:
        """Its own `styleprompt transfer` flags."""
        ...

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        """Its own options from `styleprompt transfer`'s flags (steps_folder: for intermediate images)."""
        ...

    def compare_options(self, offered: Mapping[str, Any], size: int | None, device: str) -> dict[str, Any]:
        """Its own options in a comparison: the offered values of its fields, else its defaults there."""
        ...

    def availability(self, sources: Sources) -> Availability: ...

    def check(self, plan: Plan) -> list[str]:
        """Refuse (UserError) what cannot work, before any network is loaded; return notes for the user."""
        ...

    def load(self, sources: Sources, networks: Networks) -> Stylizer: ...


class Method:
    """The defaults of `StyleMethod`: a new method overrides what it has."""

    name = ""
    label = ""
    kind = "style transfer"
    options: frozenset[str] = frozenset()
    fields: tuple[Field, ...] = ()
    sources: tuple[WeightSource, ...] = ()
    uses_content = True
    needs_subject = False
    standalone = True
    footprint: Footprint | None = None

    def add_arguments(self, parser: argparse._ActionsContainer) -> None:
        pass

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {}

    def compare_options(self, offered: Mapping[str, Any], size: int | None, device: str) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for f in self.fields:
            value = offered.get(f.option)
            if value is None:
                value = f.compare_default
            if value is not None:
                chosen[f.option] = f.check(value)
        return chosen

    def availability(self, sources: Sources) -> Availability:
        return Availability()

    def check(self, plan: Plan) -> list[str]:
        if self.footprint is not None:
            for what, original in plan.contents:
                scaled = limits.scaled_long_side(original, plan.size)
                limits.check_working_image(self.footprint, what, original, scaled, plan.how, setting="size")
        return []

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        raise NotImplementedError


# -- the registry ----------------------------------------------------------------------------------------

REGISTRY: dict[str, StyleMethod] = {}


def register(method: StyleMethod) -> StyleMethod:
    REGISTRY[method.name] = method
    return method


def names(standalone: bool | None = None) -> list[str]:
    """Every registered method, in registration order (standalone=True: those `transfer` and the
    Classic tab offer)."""
    return [n for n, m in REGISTRY.items() if standalone is None or m.standalone == standalone]


def get(name: str) -> StyleMethod:
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def label(name: str) -> str:
    return REGISTRY[name].label if name in REGISTRY else name


def own_options(method: StyleMethod, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The offered options this method reads (callers offer all they know; each method takes its own)."""
    return {k: v for k, v in offered.items() if k in method.options and v is not None}


def fields_of(method_names: Sequence[str]) -> list[Field]:
    """The fields of these methods, each once (in registration order)."""
    seen: dict[str, Field] = {}
    for name in method_names:
        for f in get(name).fields:
            seen.setdefault(f.elem, f)
    return list(seen.values())


def sources_of(method_names: Sequence[str]) -> list[WeightSource]:
    """The weight sources of these methods, each key once (in registration order)."""
    seen: dict[str, WeightSource] = {}
    for name in method_names:
        for s in get(name).sources:
            seen.setdefault(s.key, s)
    return list(seen.values())


def available(method_names: Sequence[str], sources: Sources) -> tuple[list[str], dict[str, str]]:
    """(the methods that can run here, real-weight ones first; the others with the reason)."""
    runs: list[tuple[bool, str]] = []
    not_run: dict[str, str] = {}
    for name in method_names:
        state = get(name).availability(sources)
        if state.ok:
            runs.append((state.random, name))
        else:
            not_run[name] = str(state.reason)
    return [name for random, name in sorted(runs, key=lambda r: r[0])], not_run


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


def _take_notes(image: Image.Image) -> Notes:
    """The notes a `classic` function left on its image (its own return channel), typed and taken
    off the image, so they never travel further as image metadata. Random weights are known
    from the networks, never read back from text."""
    info = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    image.info.clear()
    info.pop("random_weights", None)
    notes = Notes()
    if "loss_first" in info and "loss_last" in info:
        notes.loss = (float(info.pop("loss_first")), float(info.pop("loss_last")))
    for name in ("evaluations", "tiles"):
        if info.get(name, "").isdigit():
            setattr(notes, name, int(info.pop(name)))
    notes.extra = info
    return notes


VGG_WEIGHTS = WeightSource(
    "vgg_weights",
    "--vgg-weights",
    "VGG-19 file: torchvision's vgg19-*.pth or AdaIN's vgg_normalised.pth",
    app_label="VGG-19 weights file on the server (--vgg-weights; empty: torch's hub cache)",
    elem="vgg",
    what="VGG-19 weights file",
)
DECODER_WEIGHTS = WeightSource(
    "decoder_weights",
    "--decoder-weights",
    "AdaIN decoder: pytorch-AdaIN's decoder.pth or ours (.safetensors)",
    app_label="AdaIN decoder weights file on the server (--decoder-weights)",
    elem="decoder",
    what="decoder weights file",
)
GHIASI_MODELS = WeightSource(
    "ghiasi_models", "--ghiasi-models", "folder with the Ghiasi ONNX models (default: the packaged ones)"
)


def _vgg_availability(sources: Sources, shallow_ok: bool = True) -> Availability:
    """Gatys runs on the conv1-3 set too (one block shallower); AdaIN needs relu4_1 (shallow_ok=False)."""
    if sources.random_weights:
        return Availability(random=True)
    if sources.file(VGG_WEIGHTS.key):
        return Availability()
    from classic.vgg import default_weights_path

    cached = default_weights_path()
    if cached.is_file():
        return Availability()
    from classic.vgg import shallow_folder

    try:
        if shallow_ok and shallow_folder() is not None:  # VGG-19 conv1-3 (classic.weights): real, one block shallower
            return Availability()
    except UserError as exc:  # $STYLEPROMPT_WEIGHTS names no folder
        return Availability(str(exc))
    return Availability(
        f"no VGG-19 weights here (none given, none at {cached}); give --vgg-weights FILE, or --random-weights for a demo"
    )


def _vgg(sources: Sources, networks: Networks) -> Any:
    from classic.vgg import load_vgg19

    s, path = sources, sources.file(VGG_WEIGHTS.key)
    return networks.network(
        ("vgg19", path, s.random_weights, s.device, s.seed),
        lambda: load_vgg19(path, random_weights=s.random_weights, device=s.device, seed=s.seed),
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
            notes.extra["iterations"] = (
                ",".join(map(str, iterations)) if isinstance(iterations, list) else str(iterations)
            )
        return StyleResult(image, self.random_weights, notes=notes)


class Gatys(Method):
    name, label = "gatys", "Gatys"
    # On a CPU Gatys is the slow method by far (100 evaluations at 512 px: 3 min on an idle 2-core
    # machine, 13 on a busy laptop); 20 keeps a whole comparison within a few minutes there.
    COMPARE_ITERATIONS, CPU_COMPARE_ITERATIONS = 100, 20
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
    fields = (
        Field(
            "iterations",
            "Iterations (Gatys)",
            200,
            1,
            100_000,
            "iterations",
            app_limit="max_classic_iterations",
            compare_flag="--gatys-iterations",
            help=f"Gatys' L-BFGS evaluations, its time and quality (default: {COMPARE_ITERATIONS} on a GPU, "
            f"{CPU_COMPARE_ITERATIONS} on a CPU)",
        ),
    )
    sources = (VGG_WEIGHTS,)

    footprint = limits.GATYS_FOOTPRINT

    def add_arguments(self, parser: argparse._ActionsContainer) -> None:
        g = parser.add_argument
        g(
            "--iterations",
            type=str,
            default="300",
            help="L-BFGS/Adam evaluations (per scale: 100,300) (default: %(default)s)",
        )
        g("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
        g("--content-layer", default="relu4_2", help="e.g. relu4_2 (default), relu2_2, conv4_2")
        g("--style-layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
        g("--style-layer-weights", default=None, help="one weight per style layer (default: equal)")
        g("--content-weight", type=float, default=None, help="alpha of Gatys et al. (default: 1)")
        g("--style-weight", type=float, default=None, help="beta of Gatys et al. (default: 1e6)")
        g("--tv-weight", type=float, default=None, help="total-variation weight (default: 0)")
        g("--init", choices=["content", "noise", "style"], default="content")
        g("--scales", default=None, help="coarse-to-fine sizes, fractions or pixels, e.g. 0.5,1 or 256,512")
        g("--style-scale", type=float, default=1.0, help="style image size relative to --size (default: 1)")
        g("--learning-rate", type=float, default=None, help="Adam's step size (default: 10/255)")
        g("--save-every", type=int, default=0, help="write an intermediate image every N iterations")

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

    def compare_options(self, offered: Mapping[str, Any], size: int | None, device: str) -> dict[str, Any]:
        iterations = offered.get("iterations")
        if iterations is None:
            iterations = self.CPU_COMPARE_ITERATIONS if device == "cpu" else self.COMPARE_ITERATIONS
        return {"iterations": self.fields[0].check(iterations)}

    def availability(self, sources: Sources) -> Availability:
        return _vgg_availability(sources)

    def check(self, plan: Plan) -> list[str]:
        from classic.gatys import check_style_sizes

        super().check(plan)
        for long_side in {plan.size} if plan.size else {max(size) for _, size in plan.contents}:
            check_style_sizes(plan.styles, long_side)
        if plan.device != "cpu":
            return []
        others = ",".join(m for m in plan.methods if m != self.name) or "ghiasi"
        iterations = plan.options.get("iterations")
        return [
            f"on a CPU Gatys is the slow method ({iterations} L-BFGS evaluations at {plan.size or 'full'} px, "
            f"a minute or more); --gatys-iterations N trades its quality for time, --methods {others} leaves it out"
        ]

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
        return StyleResult(image, self.random_weights, notes=_take_notes(image))


class EncodedStyleMethod(Method):
    """A feed-forward method that encodes each style whole at `style_size` px (AdaIN, WCT, MicroAST):
    the `--style-size` flag, compare's 512-px-or-the-content's-size rule and the untiled style
    check, written once; `footprint.method` names the memory figure the check reads."""

    options = frozenset({"style_size"})

    def add_arguments(self, parser: argparse._ActionsContainer) -> None:
        _add_style_size(parser)

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {"style_size": _style_size_from_args(args)}

    def compare_options(self, offered: Mapping[str, Any], size: int | None, device: str) -> dict[str, Any]:
        """pytorch-AdaIN resizes styles to 512 px (short side); never above the content's size, so
        at small sizes these methods see the styles at the scale Gatys does."""
        return {"style_size": min(512, size) if size else 512}

    def check(self, plan: Plan) -> list[str]:
        from classic.inputs import check_encoded_style_sizes

        super().check(plan)
        assert self.footprint is not None, f"{self.name} declares no footprint"
        check_encoded_style_sizes(self.footprint.method, plan.styles, int(plan.options.get("style_size", 512)))
        return []


class Adain(EncodedStyleMethod):
    name, label = "adain", "AdaIN"
    sources = (VGG_WEIGHTS, DECODER_WEIGHTS)

    footprint = limits.ADAIN_FOOTPRINT

    def availability(self, sources: Sources) -> Availability:
        if sources.random_weights:
            return Availability(random=True)
        if not sources.file(DECODER_WEIGHTS.key):
            return Availability("no AdaIN decoder weights given; give --decoder-weights FILE, or --random-weights")
        return _vgg_availability(sources, shallow_ok=False)

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        from classic.adain import load_decoder

        s, path = sources, sources.file(DECODER_WEIGHTS.key)
        # The decoder first: a missing decoder should be reported before a VGG download is tried.
        decoder = networks.network(
            ("adain-decoder", path, s.random_weights, s.device, s.seed),
            lambda: load_decoder(path, random_weights=s.random_weights, seed=s.seed, device=s.device),
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
        return StyleResult(image, False, notes=_take_notes(image))


class Ghiasi(Method):
    name, label = "ghiasi", "Ghiasi"
    sources = (GHIASI_MODELS,)

    footprint = limits.GHIASI_FOOTPRINT

    def availability(self, sources: Sources) -> Availability:
        try:
            from classic.ghiasi import resolve_models_dir

            resolve_models_dir(sources.file(GHIASI_MODELS.key))
        except ImportError as exc:
            return Availability(f"the ghiasi method is not available here ({exc}); install the [ghiasi] extra")
        except UserError as exc:
            return Availability(str(exc))
        return Availability()

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        try:
            from classic.ghiasi import load_ghiasi
        except ImportError as exc:
            raise UserError(f"the ghiasi method is not available here ({exc}); install the [ghiasi] extra") from None
        models = sources.file(GHIASI_MODELS.key)
        predictor, _ = load_ghiasi(models, device=sources.device)  # cached per process
        return GhiasiStylizer(models, sources.device, str(getattr(predictor, "source", "")))


STYLE_SIZE_FLAG = "--style-size"


def _add_style_size(parser: argparse._ActionsContainer) -> None:
    """`--style-size`, shared by the feed-forward methods that encode their styles whole (AdaIN,
    WCT, MicroAST): the first to add it adds it, the others read the same flag."""
    try:
        parser.add_argument(
            STYLE_SIZE_FLAG,
            type=int,
            default=512,
            help="shorter side of the style images of adain, wct and microast (default: %(default)s)",
        )
    except argparse.ArgumentError:  # already added by another method
        pass


def _style_size_from_args(args: argparse.Namespace) -> int:
    limits.check_side_flag(STYLE_SIZE_FLAG, args.style_size, allow_none=False)  # a flag: transfer's own
    return int(args.style_size)


def _weights_availability(sources: Sources, find: Callable[[], Any]) -> Availability:
    """Random weights when asked; real ones when `find` (classic.weights' lookup: the flag,
    $STYLEPROMPT_WEIGHTS, ../shared/weights) finds them; else its one-line reason."""
    if sources.random_weights:
        return Availability(random=True)
    try:
        find()
    except UserError as exc:
        return Availability(str(exc))
    return Availability()


WCT_WEIGHTS = WeightSource(
    "wct_weights",
    "--wct-weights",
    "WCT's autoencoders: cd-wct (the five-level compressed WCT, default), wct (levels 1-3) or a folder "
    "with either set (found in $STYLEPROMPT_WEIGHTS, else ../shared/weights)",
    what="WCT weights",
)
MICROAST_WEIGHTS = WeightSource(
    "microast_weights",
    "--microast-weights",
    "folder with MicroAST's four .pth.tar files (default: microast/ in $STYLEPROMPT_WEIGHTS, else ../shared/weights)",
    what="MicroAST weights",
)


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
        return StyleResult(image, self.random_weights, notes=_take_notes(image))


def _wct_levels(text: str | None) -> list[int] | None:
    """`--wct-levels 5,4,3`: level numbers, read before any file (which the set has is checked at load)."""
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SettingError(
            "wct_levels", f"{{setting}} {text!r}: give level numbers separated by commas, like 5,4,3,2,1"
        ) from None


class Wct(EncodedStyleMethod):
    """Universal style transfer (Li et al. 2017): whitening and colouring of VGG features, level
    by level, with the compressed cd-wct autoencoders by default (classic/wct.py)."""

    name, label = "wct", "WCT"
    options = frozenset({"style_size", "levels"})
    sources = (WCT_WEIGHTS,)
    # The default set's (cd-wct). The full-width `wct` set holds about twice as much per pixel:
    # classic.wct.stylize checks the set it loaded against limits.WCT_VGG_FOOTPRINT itself.
    footprint = limits.WCT_FOOTPRINT

    def add_arguments(self, parser: argparse._ActionsContainer) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--wct-levels", default=None, help="WCT cascade levels, deepest first (default: all, e.g. 5,4,3,2,1)"
        )

    def options_from_args(self, args: argparse.Namespace, steps_folder: Path) -> dict[str, Any]:
        return {**super().options_from_args(args, steps_folder), "levels": _wct_levels(args.wct_levels)}

    def availability(self, sources: Sources) -> Availability:
        from classic.wct import resolve

        return _weights_availability(sources, lambda: resolve(sources.file(WCT_WEIGHTS.key)))

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        from classic.wct import load_wct

        s, choice = sources, sources.file(WCT_WEIGHTS.key)
        nets = networks.network(
            ("wct", choice, s.random_weights, s.device, s.seed),
            lambda: load_wct(choice, random_weights=s.random_weights, seed=s.seed, device=s.device),
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
        return StyleResult(image, self.random_weights, notes=_take_notes(image))


class MicroAst(EncodedStyleMethod):
    """MicroAST (Wang et al. 2023): a tiny encoder-modulator-decoder, the fastest real method here
    (classic/microast.py)."""

    name, label = "microast", "MicroAST"
    sources = (MICROAST_WEIGHTS,)
    footprint = limits.MICROAST_FOOTPRINT

    def availability(self, sources: Sources) -> Availability:
        from classic import weights
        from classic.microast import FLAG

        def find() -> None:
            if weights.find_set("microast", sources.file(MICROAST_WEIGHTS.key), flag=FLAG) is None:
                raise weights.missing_set("microast", FLAG)

        return _weights_availability(sources, find)

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        from classic.microast import load_microast

        s, folder = sources, sources.file(MICROAST_WEIGHTS.key)
        nets = networks.network(
            ("microast", folder, s.random_weights, s.device, s.seed),
            lambda: load_microast(folder, random_weights=s.random_weights, seed=s.seed, device=s.device),
        )
        return MicroAstStylizer(nets, s.device)


# -- the style token: the diffusion model with a learned word, as two compare columns -------------------

TOKEN_PROMPT = "a {token} style of a {class}"
# The token's own "content picture" for text->image: the model's painting of the subject without
# the token, same seed and steps (the prompt `pick` draws its reference line from).
BASELINE_PROMPT = "a painting of a {class}"
EMBEDDING = WeightSource("embedding", "--embedding", "the learned token (learned_embeds.safetensors)")
TOKEN_LORA = WeightSource(
    "lora",
    "--lora",
    "FILE[:SCALE]: a LoRA the token methods paint with, beside the token (diffusers or kohya layout; a pivotal "
    "run's pytorch_lora_weights.safetensors; scale default 1; default: the token alone)",
    app_label="LoRA file on the server the token methods paint with (--lora; empty: the token alone)",
    elem="lora",
    what="LoRA file",
)
DIFFUSION_MODEL = WeightSource(
    "model",
    "--model",
    f"diffusion model for the token methods: {MODEL_CHOICES_HELP}",
    default=DEFAULT_MODEL,
)
TOKEN_STEPS = Field(
    "steps",
    "Token sampling steps",
    25,
    *limits.span("steps"),
    "token-steps",
    app_limit="max_gen_steps",
    compare_flag="--steps",
    help="sampling steps of the token methods (default: generate's)",
)
TOKEN_STRENGTH = Field(
    "strength",
    "Image-to-image strength",
    0.6,
    *limits.span("strength"),
    "strength",
    integer=False,
    compare_flag="--strength",
    compare_default=0.6,
    help="image->image strength (default: %(default)s)",
    slider_step=0.05,
)


@dataclass
class TokenModel:
    """The diffusion model with the style token loaded: one per (model, embedding), shared by both
    token methods through the networks cache."""

    loaded: Any  # styleprompt.diffusion.models.LoadedModel
    token: str
    embedding: str
    loras: list[dict] = field(default_factory=list)  # lora.load_loras' records: file, sha256, format, rank, scale

    @property
    def random_weights(self) -> bool:
        from styleprompt.diffusion.models import TINY_MODELS

        return self.loaded.name in TINY_MODELS


def _lora_spec(spec: str | None) -> tuple[str, float] | None:
    """`--lora FILE[:SCALE]` read and its file checked (safetensors, a LoRA's keys, finite weights):
    a SettingError naming the setting otherwise. None: the token alone."""
    if not spec:
        return None
    from styleprompt.diffusion.lora import parse_spec, read_lora_file

    file, scale = parse_spec(str(spec))
    read_lora_file(file)
    return file, scale


def _load_token_model(model: Any, embedding: str, device: str, lora: tuple[str, float] | None = None) -> TokenModel:
    from styleprompt.diffusion.generate import load_embeddings
    from styleprompt.diffusion.lora import load_loras
    from styleprompt.diffusion.models import LoadedModel, load_pipeline, unet_copy

    if not Path(embedding).is_file():
        raise UserError(f"embedding {embedding} does not exist; pass the learned_embeds.safetensors of a training run")
    loaded = model if isinstance(model, LoadedModel) else load_pipeline(str(model), device=device)
    if lora is not None and isinstance(model, LoadedModel):
        # The model handed in (the app's cached one, through a text copy) shares its UNet with others.
        loaded = unet_copy(loaded)
    tokens = load_embeddings(loaded, [str(embedding)])
    if not tokens:
        raise UserError(f"{embedding} holds no token")
    try:
        records = load_loras(loaded, [lora]) if lora is not None else []
    except SettingError as exc:  # a LoRA of another family: the columns' reason, the same words in CLI and app
        raise UserError(exc.named("the LoRA")) from None
    return TokenModel(loaded, tokens[0], str(embedding), records)


class TokenStylizer:
    def __init__(self, model: TokenModel, img2img: bool, label: str):
        self.model, self.img2img = model, img2img
        self.random_weights = model.random_weights
        self.label = label + " + LoRA" if model.loras else label

    def describe(self) -> dict[str, str]:
        described = {"model": self.model.loaded.name, "embedding": self.model.embedding, "token": self.model.token}
        for k, record in enumerate(self.model.loras):  # what reproduces the column: each LoRA, its bytes, its weight
            at = "" if k == 0 else f"_{k + 1}"
            described[f"lora{at}"] = str(record["file"])
            described[f"lora{at}_sha256"] = str(record["sha256"])
            described[f"lora{at}_scale"] = f"{float(record['scale']):g}"
        return described

    def prompt(self, subject: str) -> str:
        from styleprompt.diffusion.templates import fill

        return fill(TOKEN_PROMPT, self.model.token, subject)

    def stylize(self, content: Image.Image, request: Request) -> StyleResult:
        from styleprompt.diffusion.generate import GenerateConfig, generate

        prompt = self.prompt(request.subject)
        config: dict[str, Any] = dict(prompt=prompt, seed=request.seed, count=1)
        if request.options.get("steps"):
            config["steps"] = request.options["steps"]
        if self.img2img:
            config.update(image=content, strength=request.options.get("strength", TOKEN_STRENGTH.default))
        items = generate(
            self.model.loaded, GenerateConfig(**config), [self.model.token], show_progress=request.show_progress
        )
        return StyleResult(items[0].image, self.random_weights, notes=Notes(prompt=prompt))

    def reference(self, content: Image.Image, request: Request) -> Image.Image | None:
        """The picture this method starts from, for its style gain: the content photo for image->image;
        for text->image, the model's painting of the subject without the token (same seed, steps)."""
        if self.img2img:
            return content
        from styleprompt.diffusion.generate import GenerateConfig, generate

        config: dict[str, Any] = dict(prompt=BASELINE_PROMPT.replace("{class}", request.subject), seed=request.seed)
        if request.options.get("steps"):
            config["steps"] = request.options["steps"]
        return generate(self.model.loaded, GenerateConfig(count=1, **config), show_progress=False)[0].image


class TokenTxt2img(Method):
    """The learned token from the prompt alone: "a <S> style of a city", no content input."""

    name, label, kind = "token-txt2img", "token text\u2192image", "text->image"
    options = frozenset({"steps"})
    fields: tuple[Field, ...] = (TOKEN_STEPS,)
    sources = (EMBEDDING, DIFFUSION_MODEL, TOKEN_LORA)
    uses_content, needs_subject, standalone = False, True, False
    img2img = False

    def check(self, plan: Plan) -> list[str]:
        """The LoRA file (`--lora`) read and checked before anything runs: one line, not a skipped column."""
        notes = super().check(plan)
        _lora_spec(plan.sources.file(TOKEN_LORA.key) if plan.sources else None)
        return notes

    def availability(self, sources: Sources) -> Availability:
        if EMBEDDING.key in sources.files and not sources.file(EMBEDDING.key):
            return Availability("no style token given (--embedding FILE)")
        model = sources.file(DIFFUSION_MODEL.key)
        from styleprompt.diffusion.models import TINY_MODELS

        return Availability(random=getattr(model, "name", model) in TINY_MODELS)

    def load(self, sources: Sources, networks: Networks) -> Stylizer:
        embedding, model = sources.file(EMBEDDING.key), sources.file(DIFFUSION_MODEL.key) or DIFFUSION_MODEL.default
        if not embedding:
            raise UserError("no style token given (--embedding FILE)")
        # A model object (the app's private text copy) is keyed by its identity: the cache lives as
        # long as the comparison that passes it.
        lora = _lora_spec(sources.file(TOKEN_LORA.key))
        key = ("style-token", id(model) if not isinstance(model, str) else model, str(embedding), sources.device, lora)
        token_model = networks.network(key, lambda: _load_token_model(model, str(embedding), sources.device, lora))
        return TokenStylizer(token_model, self.img2img, self.label)


class TokenImg2img(TokenTxt2img):
    """The learned token from the content photo: image->image with the same prompt."""

    name, label, kind = "token-img2img", "token image\u2192image", "image->image"
    options = frozenset({"steps", "strength"})
    fields = (TOKEN_STEPS, TOKEN_STRENGTH)
    uses_content = True
    img2img = True


register(Gatys())
register(Adain())
register(Ghiasi())
register(Wct())
register(MicroAst())
register(TokenTxt2img())
register(TokenImg2img())
