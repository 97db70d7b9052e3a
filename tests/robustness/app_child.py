"""Serve the app (tiny model) under an address-space limit, for the app's hostile-input test.

Run as `python -m tests.robustness.app_child OUT GIB`: prints the URL on one line, serves until
stdin closes. Why a child: RLIMIT_AS applies to a whole process, and the test's own process
must not be held to it.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def main() -> None:
    out, gib = Path(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (gib * 2**30, gib * 2**30))
    from tests.app_server import serve_app

    with serve_app(out) as demo:
        print(demo.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
