"""Shared fixtures: tiny generated artworks, the shared real images (skip cleanly when absent)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SLOW_NOTICE_S = 30.0  # a test running longer than this is named on the terminal while it runs
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHROMIUM_DEFAULT = "/usr/bin/chromium"


# -- the suite's own temp folder, and naming long tests -----------------------------------------


def pytest_configure(config) -> None:
    """Point the temp folder (TMPDIR, for this process and every child) at one new folder per
    session, removed when the session passes.

    Why: a run once left about 1.9 GB in the shared temp folder: pytest keeps the last three
    sessions' tmp_path trees by default (now only failed tests' ones, see pyproject.toml), and
    whatever a library or a child process writes to the temp folder (Gradio's upload cache,
    torch's inductor folder, a command under test) stayed there for good. Now everything lands
    here; after a failing session it is kept, and its path printed, for inspection. It is
    world-readable because the robustness tests run checks as another user.
    """
    if os.environ.get("STYLEPROMPT_TEST_TMP") or hasattr(config, "workerinput"):
        return  # a nested pytest (or a worker) shares its parent's folder
    _remove_killed_sessions_folders()
    folder = Path(tempfile.mkdtemp(prefix="styleprompt-tests-"))
    folder.chmod(0o755)
    (folder / ".session-pid").write_text(str(os.getpid()))
    config.stash[_TMP_KEY] = (folder, os.environ.get("TMPDIR"), tempfile.tempdir)
    os.environ["TMPDIR"] = os.environ["STYLEPROMPT_TEST_TMP"] = str(folder)
    tempfile.tempdir = str(folder)


def _remove_killed_sessions_folders() -> None:
    """A session that was killed never reached its clean-up: its folder goes now, unless it was
    kept on purpose (a failed session's) or its process still runs."""
    for old in Path(tempfile.gettempdir()).glob("styleprompt-tests-*"):
        try:
            pid = int((old / ".session-pid").read_text())
        except (OSError, ValueError):
            continue  # kept after a failure (the pid file is gone), or not ours
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass  # another user's session, alive


def _size_mb(path: Path) -> float:
    total = 0
    for entry in path.rglob("*"):
        try:
            total += entry.lstat().st_size if not entry.is_dir() else 0
        except OSError:
            pass
    return total / 2**20


def pytest_unconfigure(config) -> None:
    saved = config.stash.get(_TMP_KEY, None)
    if saved is None:
        return
    folder, old_tmpdir, old_tempdir = saved
    if old_tmpdir is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_tmpdir
    os.environ.pop("STYLEPROMPT_TEST_TMP", None)
    tempfile.tempdir = old_tempdir
    if getattr(config, "_styleprompt_failed", False):
        (folder / ".session-pid").unlink(missing_ok=True)  # kept on purpose: a later session leaves it
        print(f"\nthe tests' temp folder is kept for inspection: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    saved = session.config.stash.get(_TMP_KEY, None)
    if saved is None:
        return
    session.config._styleprompt_failed = exitstatus not in (0, 5)  # 5: no tests collected
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    folder = saved[0]
    ours = (f"pytest-of-{_user()}", ".session-pid")
    left = sorted(p for p in folder.iterdir() if p.name not in ours) if folder.is_dir() else []
    if reporter is not None and left:  # what tests wrote outside their tmp_path: name it, so it can be fixed
        listed = ", ".join(f"{p.name} ({_size_mb(p):.1f} MB)" for p in left[:8])
        more = f" and {len(left) - 8} more" if len(left) > 8 else ""
        reporter.write_line(f"written to the temp folder outside tmp_path (removed now): {listed}{more}")


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # noqa: BLE001 - only for a listing
        return "unknown"


_TMP_KEY = pytest.StashKey[tuple]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Name a test on the terminal once it has run SLOW_NOTICE_S, and every minute after: with
    `-q` the suite prints only dots, and a test that runs for minutes looked like a hang."""
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    capture = item.config.pluginmanager.get_plugin("capturemanager")
    started = time.monotonic()
    finished = threading.Event()

    def announce() -> None:
        wait = SLOW_NOTICE_S
        while not finished.wait(wait):
            if reporter is None or capture is None:
                return
            with capture.global_and_fixture_disabled():  # past the test's captured output, to the terminal
                reporter.write_line(f"  ... {item.nodeid} still running ({time.monotonic() - started:.0f} s)")
            wait = 60.0

    watcher = threading.Thread(target=announce, daemon=True, name="slow-test-notice")
    watcher.start()
    try:
        yield
    finally:
        finished.set()


def in_ci() -> bool:
    """True when the CI environment variable says so (`CI=true`, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_outside_pip(thing: Path, what: str, how: str) -> Path:
    """The one rule for a test that needs something pip cannot install (a browser, a system tool).

    Why one rule: the README's two commands must end green on a machine with only Python, yet a
    CI run must never turn green by skipping. So outside CI a missing `thing` skips with a
    one-line reason saying how to get it; with CI=true in the environment it fails instead.
    """
    if thing.is_file():
        return thing
    reason = f"{what} not found at {thing}: {how}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: tests that need it fail instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium for the browser tests (STYLEPROMPT_CHROMIUM overrides the path)."""
    return require_outside_pip(
        Path(os.environ.get("STYLEPROMPT_CHROMIUM") or CHROMIUM_DEFAULT),
        "Chromium",
        "install it with `apt-get install -y chromium` (.ci/run does this) or point STYLEPROMPT_CHROMIUM at one",
    )


def make_artwork(path: Path, seed: int, size: tuple[int, int] = (160, 128)) -> Path:
    """A small striped 'painting' with a per-seed palette: distinct, deterministic, cheap."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    palette = rng.integers(0, 256, size=(3, 3))
    bands = ((xx + yy * rng.uniform(0.2, 1.5)) // rng.integers(6, 20)).astype(int) % 3
    arr = palette[bands] + rng.integers(-20, 20, size=(h, w, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def make_artworks(
    folder: Path, count: int = 3, *, first_seed: int = 0, prefix: str = "a", size: tuple[int, int] = (160, 128)
) -> Path:
    """A new folder of `count` artworks named prefix0.png, prefix1.png, ... (seeds from first_seed)."""
    folder.mkdir(parents=True)
    for i in range(count):
        make_artwork(folder / f"{prefix}{i}.png", seed=first_seed + i, size=size)
    return folder


@pytest.fixture
def artworks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "art"
    folder.mkdir()
    for i, suffix in enumerate([".png", ".jpg", ".webp"]):
        make_artwork(folder / f"art{i}{suffix}", seed=i)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test images not found at {SHARED_DATA}")
    return SHARED_DATA
