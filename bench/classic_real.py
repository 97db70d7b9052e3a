"""The classic methods with real weights, side by side with Ghiasi et al. in one run.

    nice -n 10 .venv/bin/python bench/classic_real.py [--parts recon,style,quality,speed,grid]
        [--contents 2] [--methods LABELS] [--no-4k | --all-4k] [--gatys-iterations 20] [--grid-size 384]

Parts (each prints a table; all by default):
- recon: encode -> decode PSNR at every level of both WCT sets on the ten shared photos at
  512 px (SOURCES.md's checks: WCT 29.8/34.5/28.7 dB on chicago, CD-WCT 46.4/31.4/28.5/25.1/21.3
  dB on golden_gate), with random weights beside them;
- style: over `--contents` photos x the 19 shared paintings at 256 px, retrieval@1 (the intended
  painting is the nearest of the 19 by the Ghiasi style predictor's cosine) and the mean gain
  (cosine to the painting after minus before), for every method including Ghiasi itself;
- quality: NIQE, BRISQUE and SSIM to the content on the 3 x 3 grid's outputs (384 px);
- speed: seconds and peak RSS at 512 px, 1024 px and 3840x2160 (tiled), each size and method in
  a fresh child process, with the ratio to Ghiasi's in the same run;
- grid: docs/pictures/classic_real_grid.png, every real method on 3 contents x 3 styles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
GRID_CONTENTS = ("chicago.jpg", "golden_gate.jpg", "tubingen.jpg")
GRID_STYLES = ("la_muse.jpg", "starry_night.jpg", "the_scream.jpg")
GRID_FILE = ROOT / "docs" / "pictures" / "classic_real_grid.png"
SPEED_CONTENT = DATA / "content" / "tubingen.jpg"
SPEED_STYLE = DATA / "style" / "starry_night.jpg"

# label -> (registry method, its options); "wct (wct)" is WCT with the uncompressed levels 1-3.
METHODS = {
    "ghiasi": ("ghiasi", {}),
    "wct (cd-wct)": ("wct", {"wct_weights": "cd-wct"}),
    "wct (wct)": ("wct", {"wct_weights": "wct"}),
    "microast": ("microast", {}),
}


def stylize(label: str, content, style, *, size: int | None = None, tile_size="auto"):
    """One picture by `label`'s method through its classic module (networks cached per process)."""
    method, opts = METHODS[label]
    if method == "ghiasi":
        from classic.ghiasi import stylize as run

        return run(content, [style], size=size, tile_size=tile_size, show_progress=False)
    if method == "wct":
        from classic.wct import load_wct
        from classic.wct import stylize as run

        nets = _cached(("wct", opts["wct_weights"]), lambda: load_wct(opts["wct_weights"]))
        return run(content, [style], size=size, tile_size=tile_size, nets=nets, show_progress=False)
    from classic.microast import load_microast
    from classic.microast import stylize as run

    nets = _cached(("microast",), load_microast)
    return run(content, [style], size=size, tile_size=tile_size, nets=nets, show_progress=False)


_CACHE: dict = {}


def _cached(key, load):
    if key not in _CACHE:
        _CACHE[key] = load()
    return _CACHE[key]


def table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |")
    print(flush=True)


# -- parts ------------------------------------------------------------------------------------------


def part_recon() -> None:
    import torch

    from classic import wct
    from styleprompt.plumbing.images import list_images, load_image, pil_to_tensor, resize_long_side

    def psnr(a, b) -> float:
        return float(10 * torch.log10(1 / ((a.clamp(0, 1) - b) ** 2).mean()))

    photos = {p.stem: pil_to_tensor(resize_long_side(load_image(p), 512)) for p in list_images(DATA / "content")}
    for name, reference in (("cd-wct", "golden_gate"), ("wct", "chicago")):
        real, rand = wct.load_wct(name), wct.load_wct(name, random_weights=True)
        rows = []
        for level in real.levels:
            k = level.number
            values = {stem: psnr(wct.reconstruct(real, x, k), x) for stem, x in photos.items()}
            random_value = psnr(wct.reconstruct(rand, photos[reference], k), photos[reference])
            rows.append(
                [
                    f"relu{k}_1",
                    f"{values[reference]:.1f}",
                    f"{statistics.mean(values.values()):.1f}",
                    f"{min(values.values()):.1f}",
                    f"{random_value:.1f}",
                ]
            )
        print(f"reconstruction PSNR (dB), {name} weights, 512 px")
        table(["level", reference, "mean of 10 photos", "worst photo", f"random weights ({reference})"], rows)


def part_style(n_contents: int, methods: list[str]) -> None:
    import torch
    import torch.nn.functional as F

    from classic.ghiasi import load_ghiasi, predictor_input
    from styleprompt.plumbing.images import list_images, load_image, resize_long_side

    predictor, _ = load_ghiasi()
    contents = [resize_long_side(load_image(p), 256) for p in list_images(DATA / "content")[:n_contents]]
    styles = [load_image(p) for p in list_images(DATA / "style")]
    with torch.no_grad():
        style_vecs = predictor(torch.cat([predictor_input(s) for s in styles]))
        content_vecs = predictor(torch.cat([predictor_input(c) for c in contents]))
    rows = []
    for label in methods:
        hits = total = 0
        gains = []
        start = time.perf_counter()
        for ci, content in enumerate(contents):
            for si, style in enumerate(styles):
                out = stylize(label, content, style)
                with torch.no_grad():
                    vec = predictor(predictor_input(out))
                sims = F.cosine_similarity(vec, style_vecs)
                hits += int(sims.argmax()) == si
                total += 1
                gains.append(
                    float(sims[si] - F.cosine_similarity(content_vecs[ci : ci + 1], style_vecs[si : si + 1])[0])
                )
        rows.append(
            [
                label,
                f"{hits}/{total} ({hits / total:.0%})",
                f"{statistics.mean(gains):+.3f}",
                f"{sum(g > 0 for g in gains)}/{total}",
                f"{time.perf_counter() - start:.0f}",
            ]
        )
        print(f"  {label}: " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"style by the Ghiasi predictor: {len(contents)} photos x {len(styles)} paintings at 256 px")
    table(["method", "retrieval@1", "mean gain", "outputs closer than the photo", "seconds"], rows)


def _grid_outputs(size: int, gatys_iterations: int) -> dict:
    from styleprompt.plumbing.images import load_image

    contents = {c: load_image(DATA / "content" / c) for c in GRID_CONTENTS}
    styles = {s: load_image(DATA / "style" / s) for s in GRID_STYLES}
    outputs: dict = {}
    for label in METHODS:
        for c, content in contents.items():
            for s, style in styles.items():
                outputs[label, c, s] = stylize(label, content, style, size=size)
    if gatys_iterations:
        from classic.gatys import stylize as gatys
        from classic.vgg import load_keras_folder
        from classic.weights import find_set

        folder = find_set("vgg19-conv1-3")
        if folder is not None:
            vgg = load_keras_folder(folder)
            for c, content in contents.items():
                for s, style in styles.items():
                    outputs["gatys (conv1-3)", c, s] = gatys(
                        content, [style], size=min(size, 192), vgg=vgg, iterations=gatys_iterations, show_progress=False
                    )
                print(f"  gatys {c}: done", file=sys.stderr, flush=True)
    return {"contents": contents, "styles": styles, "outputs": outputs}


def part_quality(grid: dict) -> None:
    from styleprompt.evaluation.evaluate import ssim
    from styleprompt.evaluation.quality import brisque, niqe

    rows = []
    labels = sorted({key[0] for key in grid["outputs"]}, key=lambda k: list(METHODS).index(k) if k in METHODS else 99)
    for label in labels:
        values: dict[str, list[float]] = {"niqe": [], "brisque": [], "ssim": []}
        for (lab, c, _s), out in grid["outputs"].items():
            if lab != label:
                continue
            content = grid["contents"][c].resize(out.size)
            values["ssim"].append(ssim(out, content))
            values["brisque"].append(brisque(out))
            if min(out.size) >= 193:
                values["niqe"].append(niqe(out))
        rows.append(
            [label]
            + [f"{statistics.mean(v):.3f}" if v else "-" for v in (values["niqe"], values["brisque"], values["ssim"])]
        )
    rows.append(["(the 3 content photos)"] + [f"{statistics.mean(v):.3f}" for v in _photo_quality(grid)])
    print("quality of the 3 x 3 grid's outputs (Gatys at 192 px): lower NIQE/BRISQUE is more natural")
    table(["method", "NIQE", "BRISQUE", "SSIM to content"], rows)


def _photo_quality(grid: dict) -> list[list[float]]:
    from styleprompt.evaluation.quality import brisque, niqe
    from styleprompt.plumbing.images import resize_long_side

    photos = [resize_long_side(c, 384) for c in grid["contents"].values()]
    return [[niqe(p) for p in photos], [brisque(p) for p in photos], [1.0 for _ in photos]]


def part_grid(grid: dict, cell: int = 144) -> None:
    from PIL import Image, ImageDraw

    labels = sorted({key[0] for key in grid["outputs"]}, key=lambda k: list(METHODS).index(k) if k in METHODS else 99)
    columns = ["content", "style", *labels]
    pairs = [(c, s) for c in GRID_CONTENTS for s in GRID_STYLES]
    head = 18
    sheet = Image.new("RGB", (cell * len(columns), head + cell * len(pairs)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((j * cell + 4, 3), name, fill="black")

    def put(img, i, j):
        thumb = img.copy()
        thumb.thumbnail((cell - 4, cell - 4), Image.Resampling.LANCZOS)
        sheet.paste(thumb, (j * cell + (cell - thumb.width) // 2, head + i * cell + (cell - thumb.height) // 2))

    for i, (c, s) in enumerate(pairs):
        put(grid["contents"][c], i, 0)
        put(grid["styles"][s], i, 1)
        for j, label in enumerate(labels, start=2):
            if (label, c, s) in grid["outputs"]:
                put(grid["outputs"][label, c, s], i, j)
    GRID_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = GRID_FILE.with_suffix(".tmp.png")
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        tmp, optimize=True
    )
    tmp.replace(GRID_FILE)
    print(
        f"wrote {GRID_FILE.relative_to(ROOT)} ({sheet.width}x{sheet.height}, {GRID_FILE.stat().st_size / 1e6:.2f} MB)\n"
    )


# -- speed, in child processes -----------------------------------------------------------------------


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(label: str, width: int, height: int) -> None:
    from PIL import Image

    from styleprompt.plumbing.images import load_image

    content = load_image(SPEED_CONTENT).resize((width, height), Image.Resampling.LANCZOS)
    style = load_image(SPEED_STYLE)
    stylize(label, content.resize((128, 96)), style)  # loads the networks, warms up
    base = _status_mib("VmRSS")
    start = time.perf_counter()
    out = stylize(label, content, style)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "base_mib": base, "peak_mib": _status_mib("VmHWM"), "size": list(out.size)}))


def part_speed(with_4k: bool, all_4k: bool) -> None:
    sizes = [(512, 384), (1024, 768)] + ([(3840, 2160)] if with_4k else [])
    results: dict = {}
    for width, height in sizes:
        for label in METHODS:
            if width > 2048 and label == "wct (wct)" and not all_4k:
                continue  # full-width VGG layers on 8 Mpx: minutes on a shared 2-core CPU (--all-4k)
            out = subprocess.run(
                [sys.executable, __file__, "--child", label, str(width), str(height)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if out.returncode != 0:
                print(f"  {label} at {width}x{height} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            results[label, width] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[label, width]
            print(
                f"  {label} {width}x{height}: {r['seconds']:.2f} s, peak {r['peak_mib']:.0f} MiB (base {r['base_mib']:.0f})",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for width, height in sizes:
        ref = results.get(("ghiasi", width))
        for label in METHODS:
            r = results.get((label, width))
            if r is None:
                continue
            extra = r["peak_mib"] - r["base_mib"]
            ratio_t = f"{r['seconds'] / ref['seconds']:.2f}" if ref else "-"
            ratio_m = f"{r['peak_mib'] / ref['peak_mib']:.2f}" if ref else "-"
            rows.append(
                [
                    f"{width}x{height}",
                    label,
                    f"{r['seconds']:.2f}",
                    ratio_t,
                    f"{r['peak_mib']:.0f}",
                    f"{extra:.0f}",
                    ratio_m,
                ]
            )
    print("time and peak memory (RSS), one image after a warm-up, each in a fresh process; 4K runs in tiles")
    table(["size", "method", "seconds", "x Ghiasi", "peak MiB", "above baseline", "peak x Ghiasi"], rows)


def _import_everything() -> None:
    """Every module the parts use, imported up front: a long run must not depend on the files
    staying where they are while it works."""
    import importlib

    for name in ("classic.ghiasi", "classic.wct", "classic.microast", "classic.gatys", "classic.vgg"):
        importlib.import_module(name)
    for old, new in (
        ("styleprompt.evaluate", "styleprompt.evaluation.evaluate"),
        ("styleprompt.quality", "styleprompt.evaluation.quality"),
    ):
        try:
            importlib.import_module(new)
        except ImportError:
            importlib.import_module(old)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import torch

        torch.set_num_threads(2)
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="recon,style,quality,speed,grid")
    parser.add_argument("--methods", default=None, help="style part: a subset of the labels, comma-separated")
    parser.add_argument("--contents", type=int, default=2, help="photos for the style part (of 10)")
    parser.add_argument("--no-4k", action="store_true", help="leave out the 3840x2160 speed runs")
    parser.add_argument("--all-4k", action="store_true", help="also WCT's uncompressed set at 3840x2160 (slow)")
    parser.add_argument("--grid-size", type=int, default=384, help="long side of the grid's outputs")
    parser.add_argument("--gatys-iterations", type=int, default=20, help="Gatys (conv1-3) in the grid; 0: leave out")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    import torch

    _import_everything()

    print(
        f"# bench/classic_real.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    if "recon" in parts:
        part_recon()
    if "style" in parts:
        part_style(args.contents, [m.strip() for m in args.methods.split(",")] if args.methods else list(METHODS))
    if parts & {"quality", "grid"}:
        grid = _grid_outputs(args.grid_size, args.gatys_iterations)
        if "quality" in parts:
            part_quality(grid)
        if "grid" in parts:
            part_grid(grid)
    if "speed" in parts:
        part_speed(not args.no_4k, args.all_4k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
