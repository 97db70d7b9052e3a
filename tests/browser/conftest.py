"""Browser tests: `app.py --model tiny` in a subprocess on a free localhost port, driven by
Debian's Chromium through Playwright.

Why Debian's Chromium and not `playwright install`: this machine cannot download Playwright's
browser builds; `.ci/run` apt-installs chromium instead. Without Chromium these tests follow
the suite's one rule for things outside pip (`require_outside_pip` in tests/conftest.py):
skipped with how to get it, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.app_server import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_TIMEOUT = 180


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)  # a served app and a real browser: never in the quick loop


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, artifacts):
    """`python app.py --model tiny` on a free port; stopped (and its log kept) at the end."""
    folder = tmp_path_factory.mktemp("browser-app")
    port = free_port()
    log_path = folder / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("GRADIO_TEMP_DIR", None)  # app.py puts Gradio's cache inside its own output folder
    command = [
        sys.executable,
        str(ROOT / "app.py"),
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--output",
        str(folder / "outputs"),
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log_path.read_text()[-3000:]
            pytest.fail(f"app.py did not start on {url} (exit code {proc.poll()}); its log ends:\n{tail}")
        time.sleep(0.5)
    yield SimpleNamespace(url=url, output=folder / "outputs", proc=proc)
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
    shutil.copyfile(log_path, artifacts / "server.log")


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory, chromium):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir every run
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.set_default_timeout(30_000)
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser_context, app_server):
    """One page for a module's tests, so its steps share one browser session (train, then use)."""
    page = browser_context.new_page()
    page.goto(app_server.url)
    page.wait_for_selector("#train-start")
    yield page
    page.close()
