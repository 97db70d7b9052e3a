"""Reference NIQE / BRISQUE numbers from the published packages' own code (not ours).

Run in a throw-away venv, never in the project's (it needs OpenCV and libsvm, which the project
does not depend on):

    python3 -m venv /tmp/qref && /tmp/qref/bin/pip install "numpy<2" scikit-video==1.1.11 brisque==0.2.0 \
        "opencv-python-headless<4.11" && /tmp/qref/bin/python -W ignore bench/quality_reference.py ../shared/data/content/*.jpg

Prints `name niqe brisque` per photo; tests/test_quality.py records these numbers. numpy < 2:
brisque 0.2.0 calls float() on 1-element arrays, an error since numpy 2.

scikit-video 1.1.11's `niqe` predates numpy 1.24 and scipy 1.3: it calls `np.int` and
`scipy.misc.imresize`. Both are restored here for the call only: `np.int` is `int`, and
`imresize` is scipy 1.2's own code (toimage(mode='F') -> PIL resize -> array), copied below.
The luminance is scikit-video's own `rgb2gray` (0.2989, 0.5870, 0.1140 on 0-255).
`brisque` is called as its README shows: BRISQUE(url=False).score(RGB uint8 array).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.misc
from PIL import Image


def _imresize(arr, size, interp="bilinear", mode=None):  # scipy 1.2's scipy.misc.imresize, mode 'F' path
    data = np.asarray(arr, dtype=np.float32)
    im = Image.frombytes("F", (data.shape[1], data.shape[0]), data.tobytes())
    if isinstance(size, float):
        size = tuple((np.array(im.size) * size).astype(int))
    func = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "cubic": 3}
    return np.array(im.resize(size, resample=func[interp]))


def main(paths: list[str]) -> None:
    np.int = int  # removed in numpy 1.24; skvideo.measure.niqe uses it for the patch size
    scipy.misc.imresize = _imresize
    import skvideo.measure
    import skvideo.utils
    from brisque import BRISQUE

    brisque = BRISQUE(url=False)
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        grey = skvideo.utils.rgb2gray(rgb.astype(np.float64))
        niqe = float(skvideo.measure.niqe(grey)[0])
        score = float(brisque.score(rgb))
        print(f"{Path(path).name} {niqe!r} {score!r}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
