"""Kept only for `styleprompt/micro/build.py`, which still imports `load_image` from here.

The image I/O lives in `styleprompt.images`; delete this file once build.py imports it there.
"""

from styleprompt.images import load_image

__all__ = ["load_image"]
