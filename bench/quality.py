"""NIQE and BRISQUE on the shared photos: our values, their time, the agreement with the
packages' own numbers, and how they rank blurred and noisy copies.

    python bench/quality.py ../shared/data/content [--reference REF.txt] [--long-side N]

REF.txt is what bench/quality_reference.py printed in its throw-away venv (name niqe brisque per
line); --long-side shrinks the photos first (the reference numbers are for full size). The ranking table uses the distortions of tests/test_quality.py: Gaussian blur sigma
0, 1, 2, 4 and white noise sigma 0, 5, 15, 30 (on 0-255), photos at most 768 px on the long side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from styleprompt.evaluation.quality import brisque, niqe


def distorted(rgb: np.ndarray) -> dict[str, list[Image.Image]]:
    noise = np.random.default_rng(0).normal(0, 1, rgb.shape)
    arrays = {
        "blur": [rgb if s == 0 else gaussian_filter(rgb, (s, s, 0)) for s in (0, 1, 2, 4)],
        "noise": [rgb + s * noise for s in (0, 5, 15, 30)],
    }
    return {k: [Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8)) for a in v] for k, v in arrays.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--long-side", type=int, default=None)
    args = parser.parse_args()
    reference = {}
    if args.reference:
        for line in args.reference.read_text().splitlines():
            name, a, b = line.split()
            reference[name] = (float(a), float(b))
    print("| photo | size | niqe | s | rel. diff to skvideo | brisque | s | rel. diff to brisque pkg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ranks: dict[tuple[str, str], list[float]] = {}
    for path in sorted(args.folder.glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        if args.long_side:
            img.thumbnail((args.long_side, args.long_side), Image.Resampling.LANCZOS)
        t0 = time.perf_counter()
        n = niqe(img)
        t1 = time.perf_counter()
        b = brisque(img)
        t2 = time.perf_counter()
        ref = reference.get(path.name)
        dn = f"{abs(n - ref[0]) / ref[0]:.1e}" if ref else "-"
        db = f"{abs(b - ref[1]) / ref[1]:.1e}" if ref else "-"
        print(
            f"| {path.name} | {img.width}x{img.height} | {n:.4f} | {t1 - t0:.2f} | {dn} | {b:.4f} | {t2 - t1:.2f} | {db} |"
        )
        img.thumbnail((768, 768), Image.Resampling.LANCZOS)
        for kind, pictures in distorted(np.asarray(img, dtype=np.float64)).items():
            for metric in (niqe, brisque):
                scores = [metric(p) for p in pictures]
                ranks.setdefault((metric.__name__, kind), []).append(float(spearmanr(range(4), scores).statistic))
    print("\n| metric | distortion | photos ranked perfectly (Spearman 1) | mean Spearman | lowest |")
    print("| --- | --- | --- | --- | --- |")
    for (metric, kind), rhos in ranks.items():
        print(
            f"| {metric} | {kind} | {sum(r == 1 for r in rhos)} of {len(rhos)} | {np.mean(rhos):.2f} | {min(rhos):.2f} |"
        )


if __name__ == "__main__":
    main()
