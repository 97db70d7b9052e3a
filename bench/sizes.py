"""Benchmark: seconds and peak memory per image size for AdaIN and one Gatys iteration.

The lecture's speed/size table (1024x512 up to 3840x2160), on this machine and on a GPU when
one is there. Each (method, size) runs in a fresh process so that its peak RSS is its own;
the reference column is that process's baseline (torch imported, networks loaded, images
read), so "peak - baseline" is what the image size costs.

    .venv/bin/python bench/sizes.py            # AdaIN at every size, Gatys up to 1280x720
    .venv/bin/python bench/sizes.py --full     # Gatys at every size too (slow on 2 CPU cores)
    .venv/bin/python bench/sizes.py --device cuda --full

AdaIN: one complete stylisation (encode, AdaIN, decode; tiled above ~2.2 Mpx). Gatys: the
one-off set-up (content features and style Grams) and then one iteration = one evaluation of
the loss and its gradient (tiled above 1 Mpx) plus an L-BFGS step. Random weights (speed and
memory do not depend on them). Headline: `peak_mib: <AdaIN's peak RSS at the largest size>`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(1024, 512), (1280, 720), (1920, 1080), (2560, 1440), (3840, 2160)]
QUICK_GATYS = 2  # Gatys sizes in the default run (the first two)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(method: str, width: int, height: int, device: str) -> dict:
    """Runs inside the child process: one measurement, printed as JSON."""
    import resource

    import torch

    sys.path.insert(0, str(ROOT))
    from classic import adain, gatys
    from classic.inputs import fit_content
    from classic.vgg import load_vgg19
    from styleprompt.plumbing.images import load_image, pil_to_tensor

    shared = ROOT.parent / "shared" / "data"
    if (shared / "content" / "chicago.jpg").is_file():
        content_img = load_image(shared / "content" / "chicago.jpg").resize((width, height))
        style_img = load_image(shared / "style" / "starry_night.jpg")
    else:
        from PIL import Image

        content_img = Image.effect_noise((width, height), 40).convert("RGB")
        style_img = Image.effect_noise((512, 512), 80).convert("RGB")
    vgg = load_vgg19(random_weights=True, device=device)
    result: dict = {"method": method, "size": f"{width}x{height}", "device": device}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if method == "adain":
        decoder = adain.load_decoder(random_weights=True, device=device)
        result["baseline_mib"] = _rss_mib()
        start = time.perf_counter()
        out = adain.stylize(content_img, [style_img], vgg=vgg, decoder=decoder, device=device, show_progress=False)
        sync()
        result["seconds"] = time.perf_counter() - start
        result["tiled"] = width * height > adain.AUTO_TILE_PIXELS
        assert out.size == (width, height)
    else:
        content = pil_to_tensor(content_img).to(device)
        style = pil_to_tensor(fit_content(style_img, max(width, height))).to(device)
        result["baseline_mib"] = _rss_mib()
        start = time.perf_counter()
        objective = gatys.GatysObjective(vgg, content, [style], [1.0], gatys.GatysOptions())
        sync()
        result["setup_seconds"] = time.perf_counter() - start
        x = torch.nn.Parameter(content.clone())
        history = gatys._lbfgs_history(x.numel(), None)
        opt = torch.optim.LBFGS([x], lr=1, max_iter=1, max_eval=2, history_size=history)

        def closure():
            loss, grad, _ = objective(x.detach())
            x.grad = grad
            return torch.tensor(loss)

        start = time.perf_counter()
        closure()  # one evaluation: loss and gradient ...
        sync()
        result["seconds"] = time.perf_counter() - start
        opt.step(closure)  # ... and a whole L-BFGS step after it, for the memory of its history
        result["tiles"] = 1 if objective.plan is None else len(objective.plan)
        result["lbfgs_history"] = history
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_child(method: str, width: int, height: int, device: str, timeout: int) -> dict:
    command = [sys.executable, __file__, "--child", method, str(width), str(height), "--device", device]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "size": f"{width}x{height}", "error": f"over {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"method": method, "size": f"{width}x{height}", "error": tail[:120]}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="Gatys at every size (default: up to 1280x720)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="adain,gatys")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    parser.add_argument("--sizes", default=None, help="only these sizes, e.g. 2560x1440,3840x2160")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "W", "H"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, w, h = args.child
        print(json.dumps(measure(method, int(w), int(h), args.device)), flush=True)
        return 0
    import torch

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"size benchmark on {args.device} ({torch.get_num_threads()} CPU threads), random weights", flush=True)
    rows = []
    for method in methods:
        sizes = SIZES if (method == "adain" or args.full) else SIZES[:QUICK_GATYS]
        if args.sizes:
            sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        for w, h in sizes:
            row = run_child(method, w, h, args.device, args.timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    gpu = args.device.startswith("cuda")
    print(
        "| method | size | Mpx | seconds | set-up s | tiles | peak RSS MiB | baseline MiB |"
        + (" GPU peak MiB |" if gpu else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for r in rows:
        w, h = (int(v) for v in r["size"].split("x"))
        name = "AdaIN (whole stylisation)" if r["method"] == "adain" else "Gatys (one iteration)"
        if "error" in r:
            print(f"| {name} | {r['size']} | {w * h / 1e6:.2f} | failed: {r['error']} | | | | |")
            continue
        tiles = r.get("tiles", "yes" if r.get("tiled") else "no")
        setup = f"{r['setup_seconds']:.1f}" if "setup_seconds" in r else "-"
        line = f"| {name} | {r['size']} | {w * h / 1e6:.2f} | {r['seconds']:.1f} | {setup} | {tiles} | {r['peak_mib']:.0f} | {r['baseline_mib']:.0f} |"
        if gpu:
            line += f" {r.get('gpu_peak_mib', float('nan')):.0f} |"
        print(line)
    adain_rows = [r for r in rows if r["method"] == "adain" and "error" not in r]
    if adain_rows:
        print(f"peak_mib: {adain_rows[-1]['peak_mib']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
