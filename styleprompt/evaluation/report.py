"""The comparison's files: grid.png, metrics.csv, metrics.md and a self-contained report.html.

Why a module of its own: `styleprompt compare` and the app's Compare tab produce the same
report, and the survey reads the same records back, so the record types (`Metric`, `Cell`) and
their rendering live here, apart from the code that runs the methods.

Every number keeps two labels wherever it is shown: which way is better, and whether it came
from real or random network weights. A Gram loss on a random VGG shows that the pipeline runs,
not how good a picture is, and the report must never let the two be confused.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import textwrap
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

from styleprompt.plumbing.files import atomic_path, write_text_atomic

# The learned Ghiasi style metric leads every table: it is the one style measure here that was
# trained (DESIGN.md), with its gain over the method's own content picture right beside it; the
# rest follow in the order the evaluation layer reports them.
STYLE_GAIN = "style_gain"
LEAD_METRICS = ("style_similarity", STYLE_GAIN, "style_rank")
# "Best" is the front of these two: how much style a method added to its own content picture,
# and how much of the content it kept (SSIM needs no network, so it is real on every machine).
FIDELITY = "ssim"
# A method counts as stylising a picture only when its gain is at least this share of the
# largest gain on that picture: an output that is almost the unchanged photo (Gatys after 3
# iterations) keeps the content best of all, and a front without this rule would crown it.
MIN_GAIN_SHARE = 0.25
RANDOM_MARK = "\u2020"  # dagger: computed with random weights
FRONT_MARK = "\u2605"  # star: on the front of style gain and content fidelity (the best, see `front`)
ARROWS = {"higher": "\u2191", "lower": "\u2193"}
BACKGROUND = (255, 255, 255)
SKIPPED_FILL = (236, 236, 236)
TEXT = (20, 20, 20)
MUTED = (105, 105, 105)


@dataclass
class Metric:
    """One number about one output, with the two labels it must never lose."""

    value: float | int | None
    better: str  # "higher" | "lower"
    weights: str = "none"  # "real" | "random" | "none" (needs no network)


class State(str, Enum):
    """How one method fared: decisions read this, never the wording of a reason."""

    OK = "ok"
    SKIPPED = "skipped"  # could not run here (no weights, no model, no token): the reason says what to give
    FAILED = "failed"  # crashed; the reason is the exception's type and first line


@dataclass(frozen=True)
class Status:
    """A state plus the reason a person reads; `str()` is the text the reports and compare.json hold."""

    state: State = State.OK
    reason: str = ""
    affected: tuple[int, int] | None = None  # (cells, of cells) when it concerns only some content images

    @property
    def ok(self) -> bool:
        return self.state is State.OK

    def __str__(self) -> str:
        if self.ok:
            return State.OK.value
        if self.affected is not None:
            return f"{self.state.value} on {self.affected[0]} of {self.affected[1]} content images: {self.reason}"
        return f"{self.state.value}: {self.reason}"


def method_status(cells: Sequence["Cell"], prepared: Status) -> Status:
    """One method's summary over its cells: its preparation's status, else the first trouble
    (and on how many content images), else ok."""
    if not prepared.ok:
        return prepared
    bad = [c for c in cells if not c.ok]
    if not bad:
        return Status()
    first = bad[0].outcome
    return first if len(bad) == len(cells) else Status(first.state, first.reason, (len(bad), len(cells)))


@dataclass
class Cell:
    """One method's output for one content image: the picture, its cost and its metrics."""

    content_index: int
    content_name: str
    cls: str
    method: str
    outcome: Status = field(default_factory=Status)
    image: Path | None = None
    seconds: float | None = None
    peak_mib: float | None = None
    memory_kind: str = ""
    method_weights: str = "n/a"  # did the METHOD itself run on real or random weights
    metrics: dict[str, Metric] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def status(self) -> str:
        return str(self.outcome)


@dataclass
class ReportInfo:
    """What the run was, for the header of the Markdown and HTML reports."""

    title: str
    methods: list[str]
    labels: dict[str, str]
    contents: list[tuple[str, str]]  # (name, class) per row
    settings: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)  # methods left out (could not run here), with the reason


# -- tables -------------------------------------------------------------------------------------


def metric_order(cells: Iterable[Cell]) -> list[str]:
    """Metric names: the learned style metric first, then in the order they were reported."""
    seen: list[str] = []
    for cell in cells:
        for name in cell.metrics:
            if name not in seen:
                seen.append(name)
    return [m for m in LEAD_METRICS if m in seen] + [m for m in seen if m not in LEAD_METRICS]


def metric_directions(cells: Iterable[Cell]) -> dict[str, str]:
    directions: dict[str, str] = {}
    for cell in cells:
        for name, metric in cell.metrics.items():
            directions.setdefault(name, metric.better)
    return directions


def _number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.{digits}g}"


def table_rows(cells: Sequence[Cell]) -> list[dict[str, str | float | int | None]]:
    """One flat row per (content, method): what metrics.csv holds and the app shows as a table."""
    names = metric_order(cells)
    best = front(cells)
    rows = []
    for cell in cells:
        row: dict[str, str | float | int | None] = {
            "content": cell.content_name,
            "class": cell.cls,
            "method": cell.method,
            "status": cell.status,
            "method_weights": cell.method_weights,
            "time_s": None if cell.seconds is None else round(cell.seconds, 3),
            "peak_memory_mib": None if cell.peak_mib is None else round(cell.peak_mib, 1),
            "memory_measure": cell.memory_kind,
        }
        for name in names:
            metric = cell.metrics.get(name)
            row[name] = None if metric is None else metric.value
        row["random_weight_metrics"] = ";".join(
            n for n in names if n in cell.metrics and cell.metrics[n].weights == "random"
        )
        row["unavailable"] = "; ".join(f"{k}: {v}" for k, v in sorted(cell.unavailable.items()))
        row["best"] = "yes" if (cell.content_index, cell.method) in best else ""
        rows.append(row)
    return rows


def write_csv(cells: Sequence[Cell], path: Path) -> Path:
    rows = table_rows(cells)
    fields = list(rows[0]) if rows else ["content", "class", "method", "status"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def front(cells: Sequence[Cell]) -> set[tuple[int, str]]:
    """(content, method) of the best methods per content image: the Pareto front of style gain
    and content fidelity among the methods that stylised that picture.

    Only methods that ran on real weights compete (a random-weights column is a demo of the
    machinery, never "best"). A method stylised a picture when its style gain over its own
    content picture is positive and at least MIN_GAIN_SHARE of the largest such gain there. It
    is on the front when no other such method is at least as good on both (gain, fidelity) and
    better on one. A method without a gain or a fidelity (text->image has no content to keep)
    is never marked; a tie marks both.
    """
    marked: set[tuple[int, str]] = set()
    by_content: dict[int, list[tuple[float, float, Cell]]] = {}
    for cell in cells:
        gain, fidelity = cell.metrics.get(STYLE_GAIN), cell.metrics.get(FIDELITY)
        if gain is None or fidelity is None or not cell.ok or cell.method_weights != "real" or gain.weights == "random":
            continue
        if isinstance(gain.value, (int, float)) and isinstance(fidelity.value, (int, float)):
            if _finite(gain.value) and _finite(fidelity.value):
                by_content.setdefault(cell.content_index, []).append((float(gain.value), float(fidelity.value), cell))
    for index, scored in by_content.items():
        top = max(g for g, _, _ in scored)
        stylised = [(g, f, c) for g, f, c in scored if g > 0 and g >= MIN_GAIN_SHARE * top]
        for g, f, cell in stylised:
            beaten = any(g2 >= g and f2 >= f and (g2 > g or f2 > f) for g2, f2, _ in stylised)
            if not beaten:
                marked.add((index, cell.method))
    return marked


def best_values(cells: Sequence[Cell]) -> set[tuple[int, str, str]]:
    """(content, method, metric) to set in bold: style gain and content fidelity of the methods on
    the front (`front`); no other column crowns anything (raw similarity rewards a photo that
    already shares the painting's palette)."""
    return {(index, method, name) for index, method in front(cells) for name in (STYLE_GAIN, FIDELITY)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _header_cells(names: list[str], directions: dict[str, str]) -> list[str]:
    return ["content", "method", "status", f"time s {ARROWS['lower']}", f"peak MiB {ARROWS['lower']}"] + [
        f"{n} {ARROWS.get(directions.get(n, ''), '')}".strip() for n in names
    ]


def _cell_texts(cell: Cell, info: ReportInfo, names: list[str], best: set) -> list[tuple[str, bool]]:
    """Each table cell's text and whether it is the best in its column for that content."""
    method = info.labels.get(cell.method, cell.method)
    if cell.method_weights == "random":
        method += f" {RANDOM_MARK}"
    on_front = (cell.content_index, cell.method, STYLE_GAIN) in best
    if on_front:
        method += f" {FRONT_MARK}"
    out = [
        (cell.content_name, False),
        (method, on_front),
        (cell.status, False),
        (_number(cell.seconds, 3), False),
        (_number(cell.peak_mib, 4), False),
    ]
    for name in names:
        metric = cell.metrics.get(name)
        if metric is None:
            out.append(("n/a" if cell.ok and name in cell.unavailable else "", False))
            continue
        text = _number(metric.value)
        if metric.weights == "random":
            text += f" {RANDOM_MARK}"
        out.append((text, (cell.content_index, cell.method, name) in best))
    return out


def _unavailable_lines(cells: Sequence[Cell], labels: dict[str, str] | None = None) -> list[str]:
    """Each (metric, reason) once, with the methods it applies to (a reason repeats per cell)."""
    methods: dict[tuple[str, str], list[str]] = {}
    every = list(dict.fromkeys(c.method for c in cells if c.ok))
    for cell in cells:
        for name, why in cell.unavailable.items():
            group = methods.setdefault((name, why), [])
            if cell.method not in group:
                group.append(cell.method)
    lines = []
    for (name, why), group in sorted(methods.items()):
        scope = "" if group == every else " (" + ", ".join((labels or {}).get(m, m) for m in group) + ")"
        lines.append(f"{name}{scope}: {why}")
    return lines


def _legend(cells: Sequence[Cell], directions: dict[str, str]) -> list[str]:
    lines = [
        f"{ARROWS['higher']} higher is better, {ARROWS['lower']} lower is better.",
        f"{STYLE_GAIN}: the output's style_similarity minus that of its own content picture (the photo it "
        "started from; for text->image, the model's picture of the subject without the token, same seed): how much "
        "style the method added, not how much the photo already had.",
        f"Best ({FRONT_MARK}, in bold): per content image, the methods on the front of {STYLE_GAIN} and content "
        f"fidelity ({FIDELITY}): no other method has at least as much of both and more of one. Only methods on "
        f"real weights that stylised the picture compete: a positive {STYLE_GAIN} of at least {MIN_GAIN_SHARE:.0%} "
        "of the largest one there (an almost unchanged photo keeps the content best of all, but adds no style). A "
        f"method on random weights ({RANDOM_MARK}) or without content fidelity (text->image) is never marked.",
        f"{RANDOM_MARK} after a number: that metric ran on random network weights; after a method: the method itself ran "
        "on random weights. Such numbers show that the pipeline runs, not how good a picture is.",
        "Time: wall-clock seconds to produce one output with the networks already loaded (loading is listed under "
        "Settings). Peak memory: see memory_measure in metrics.csv (CUDA: peak allocated by torch; CPU: peak "
        "resident-set growth of the whole process, sampled every 5 ms).",
    ]
    weights: dict[str, set[str]] = {}
    for cell in cells:
        for name, metric in cell.metrics.items():
            weights.setdefault(name, set()).add(metric.weights)
    for name in metric_order(cells):
        kinds = "/".join(sorted(weights.get(name, {"none"})))
        lines.append(f"{name}: {directions.get(name, '?')} is better; weights: {kinds}")
    return lines


def write_markdown(cells: Sequence[Cell], info: ReportInfo, path: Path, grid_name: str = "grid.png") -> Path:
    names = metric_order(cells)
    directions = metric_directions(cells)
    best = best_values(cells)
    header = _header_cells(names, directions)
    lines = [
        f"# {info.title}",
        "",
        f"![side by side]({grid_name})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for cell in cells:
        texts = [
            (f"**{t}**" if bold and t else t).replace("|", "\\|") for t, bold in _cell_texts(cell, info, names, best)
        ]
        lines.append("| " + " | ".join(texts) + " |")
    lines += ["", "## Legend", ""] + [f"- {line}" for line in _legend(cells, directions)]
    lines += ["", "## Methods", ""] + [
        f"- {info.labels.get(m, m)} (`{m}`): {info.status.get(m, '')}" for m in info.methods
    ]
    lines += [f"- {info.labels.get(m, m)} (`{m}`): not run: {why}" for m, why in info.not_run.items()]
    unavailable = _unavailable_lines(cells, info.labels)
    if unavailable:
        lines += ["", "## Metrics not computed", ""] + [f"- {line}" for line in unavailable]
    if info.settings:
        lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in info.settings.items()]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def image_data_uri(image: Image.Image | Path, max_side: int | None = None, fmt: str = "PNG") -> str:
    """An image as a data: URI, so the HTML file carries its pictures and can be mailed alone."""
    img = Image.open(image) if isinstance(image, (str, Path)) else image
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=90)
        mime = "image/jpeg"
    else:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #141414; padding: 0 1em; }
img.grid { max-width: 100%; border: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } td.text { text-align: left; } td.best { font-weight: bold; background: #eef7ee; }
tr.skipped td { color: #777; } .small { color: #555; font-size: 0.9em; }
"""


def write_html(cells: Sequence[Cell], info: ReportInfo, path: Path, grid: Path) -> Path:
    """report.html: the grid and the table in one file, images inlined as base64 (no links out)."""
    esc = html.escape
    names = metric_order(cells)
    directions = metric_directions(cells)
    best = best_values(cells)
    head = "".join(f"<th>{esc(h)}</th>" for h in _header_cells(names, directions))
    body = []
    for cell in cells:
        tds = []
        for i, (text, bold) in enumerate(_cell_texts(cell, info, names, best)):
            css = ["text"] if i < 3 else []
            if bold:
                css.append("best")
            tds.append(f'<td class="{" ".join(css)}">{esc(text)}</td>')
        body.append(f'<tr class="{"ok" if cell.ok else "skipped"}">' + "".join(tds) + "</tr>")
    legend = "".join(f"<li>{esc(line)}</li>" for line in _legend(cells, directions))
    methods = "".join(
        f"<li><b>{esc(info.labels.get(m, m))}</b> (<code>{esc(m)}</code>): {esc(info.status.get(m, ''))}</li>"
        for m in info.methods
    ) + "".join(
        f"<li><b>{esc(info.labels.get(m, m))}</b> (<code>{esc(m)}</code>): not run: {esc(why)}</li>"
        for m, why in info.not_run.items()
    )
    unavailable = "".join(f"<li>{esc(line)}</li>" for line in _unavailable_lines(cells, info.labels))
    settings = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in info.settings.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(info.title)}</title>
<style>{_HTML_STYLE}</style></head>
<body>
<h1>{esc(info.title)}</h1>
<img class="grid" alt="side by side comparison" src="{image_data_uri(grid)}">
<h2>Metrics and timings</h2>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
<h2>Legend</h2><ul class="small">{legend}</ul>
<h2>Methods</h2><ul>{methods}</ul>
{f'<h2>Metrics not computed</h2><ul class="small">{unavailable}</ul>' if unavailable else ""}
<h2>Settings</h2><ul class="small">{settings}</ul>
</body></html>
"""
    return write_text_atomic(path, page)


# -- the grid image -----------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib (a dependency) ships: it has the arrows and the dagger the
    labels use, which Pillow's built-in font lacks."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (ImportError, OSError, ValueError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def fit_into(image: Image.Image, side: int, fill=BACKGROUND) -> Image.Image:
    """The image scaled to fit a side x side square, centred, aspect kept (letterboxed)."""
    img = image.convert("RGB")
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(img, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


def style_mosaic(styles: Sequence[Image.Image], side: int, limit: int = 4) -> Image.Image:
    """One style image, or up to `limit` of them tiled 2x2, in a side x side square."""
    if len(styles) <= 1:
        return fit_into(styles[0], side) if styles else Image.new("RGB", (side, side), SKIPPED_FILL)
    half = side // 2
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    for k, style in enumerate(styles[:limit]):
        canvas.paste(fit_into(style, half), ((k % 2) * half, (k // 2) * half))
    return canvas


def _text_block(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, width_px: int, font, fill=TEXT, max_lines: int = 3
) -> None:
    """Wrapped text starting at xy; the wrap width comes from the font's mean glyph width."""
    x, y = xy
    char_w = max(1.0, font.getlength("abcdefghij") / 10) if hasattr(font, "getlength") else 6.0
    lines = textwrap.wrap(text, max(4, int(width_px / char_w))) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, len(lines[-1]) - 1)] + "\u2026"
    line_h = (font.size + 3) if hasattr(font, "size") else 13
    for k, line in enumerate(lines):
        draw.text((x, y + k * line_h), line, fill=fill, font=font)


def make_grid(
    rows: Sequence[tuple[Image.Image, str]],
    columns: Sequence[tuple[str, str]],
    cells: dict[tuple[int, str], Image.Image | str],
    captions: dict[tuple[int, str], str],
    styles: Sequence[Image.Image],
    *,
    side: int = 256,
    style_caption: str = "",
) -> Image.Image:
    """The side-by-side picture: a labelled row per content image, a column per method, the
    style at the side. Every output is scaled into the same square cell (the tiny model paints
    128 px, Gatys 512 px), so the grid compares looks, not sizes.

    rows: (content image, row label). columns: (key, header). cells[(row, key)]: the output, or
    the reason it is missing (drawn as a grey cell with the reason).
    """
    pad, header_h, caption_h = 8, 30, 46
    font, small = _font(max(12, side // 16)), _font(max(10, side // 21))
    ncols = len(columns) + 2  # content | methods... | style
    width = pad + ncols * (side + pad)
    height = header_h + len(rows) * (side + caption_h + pad) + pad
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    headers = ["content"] + [label for _, label in columns] + ["style"]
    for c, label in enumerate(headers):
        _text_block(draw, (pad + c * (side + pad) + 2, 7), label, side, font, max_lines=1)
    mosaic = style_mosaic(styles, side)
    for r, (content, label) in enumerate(rows):
        y = header_h + r * (side + caption_h + pad)
        entries: list[tuple[Image.Image | str, str]] = [(content, label)]
        entries += [(cells.get((r, key), "not run"), captions.get((r, key), "")) for key, _ in columns]
        entries.append((mosaic, style_caption))
        for c, (what, caption) in enumerate(entries):
            x = pad + c * (side + pad)
            if isinstance(what, Image.Image):
                grid.paste(fit_into(what, side), (x, y))
            else:
                draw.rectangle([x, y, x + side - 1, y + side - 1], fill=SKIPPED_FILL)
                _text_block(draw, (x + 8, y + 8), what, side - 16, small, fill=MUTED, max_lines=side // 16)
            _text_block(draw, (x + 2, y + side + 4), caption, side - 4, small, fill=MUTED, max_lines=2)
    return grid


def save_grid(grid: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG", optimize=True)
    return path
