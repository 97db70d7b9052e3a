"""Load test of the web app: N concurrent Generate requests through gradio_client.

`python app.py --model tiny` runs in a subprocess on a free localhost port; N clients (separate
sessions, like N people) each upload the same style token and ask for one image at the same
moment. The app's queue runs `--app-concurrency` generations at a time. The reference is the
same N generations called directly through the library in this process, one after another, on
the same model: the ratio says what the HTTP, queue, upload and copy-to-cache layers cost.

Run: .venv/bin/python bench/app_load.py            (defaults: 20 requests, 10 steps, tiny model)
Ends with the headline line "<failures> failures out of <N>".
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "<load-style>"
PROMPT = f"a {TOKEN} style of a lighthouse"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), without numpy."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def write_token(path: Path) -> Path:
    """A 2-vector token for the tiny model (width 32): random but fixed, as a user's file would be."""
    import torch

    from styleprompt.diffusion.tokens import save_diffusers_embedding

    return save_diffusers_embedding(path, TOKEN, torch.randn(2, 32, generator=torch.Generator().manual_seed(0)) * 0.02)


def start_app(output: Path, port: int, concurrency: int) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("GRADIO_TEMP_DIR", None)
    log = open(output / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--port",
            str(port),
            "--output",
            str(output / "app"),
            "--concurrency",
            str(concurrency),
            "--queue-size",
            "256",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}; see {output / 'server.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("app.py did not start within 180 s")


def generate_args(token_file: Path, steps: int, seed: int) -> list:
    from gradio_client import handle_file

    # model, uploads, recent, style scale, prompt, negative, steps, guidance, scheduler, seed, count, content, strength
    return ["tiny", [handle_file(str(token_file))], [], 1.0, PROMPT, "", steps, 7.5, "ddim", seed, 1, None, 0.6]


def run_app(url: str, token_file: Path, n: int, steps: int) -> tuple[list[float], list[str], float]:
    from gradio_client import Client

    warm = Client(url, verbose=False, download_files=False)
    warm.predict(*generate_args(token_file, steps, 999), api_name="/generate")  # model load, token view
    clients = [Client(url, verbose=False, download_files=False) for _ in range(n)]
    latencies: list[float] = [0.0] * n
    errors: list[str] = []
    gate = threading.Barrier(n + 1)

    def one(i: int) -> None:
        gate.wait()
        t0 = time.perf_counter()
        try:
            status, gallery, params = clients[i].predict(*generate_args(token_file, steps, i), api_name="/generate")
            if 'data-state="done"' not in status or len(gallery) != 1 or int(params["seed"]) != i:
                raise RuntimeError(f"unexpected answer: {status[:120]!r}, {len(gallery)} images")
            if not Path(gallery[0]["image"]["path"]).is_file():
                raise RuntimeError("the gallery names a file that does not exist")
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"request {i}: {type(exc).__name__}: {exc}")
        latencies[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def reference_model(token_file: Path):
    from styleprompt.diffusion.generate import load_embeddings
    from styleprompt.diffusion.models import load_pipeline

    loaded = load_pipeline("tiny", device="cpu")
    return loaded, load_embeddings(loaded, [str(token_file)])


def run_reference(loaded, tokens: list[str], n: int, steps: int) -> tuple[list[float], float]:
    """The same n generations, one after another, straight through the library (no server)."""
    from styleprompt.diffusion.generate import GenerateConfig, generate

    def one(seed: int) -> None:
        cfg = GenerateConfig(prompt=PROMPT, steps=steps, guidance=7.5, scheduler="ddim", seed=seed, count=1)
        generate(loaded, cfg, tokens, show_progress=False)

    one(999)  # warm-up, as the app's warm-up request
    times = []
    t0 = time.perf_counter()
    for i in range(n):
        t1 = time.perf_counter()
        one(i)
        times.append(time.perf_counter() - t1)
    return times, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="concurrent generate requests (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps per image (default: %(default)s)")
    parser.add_argument(
        "--app-concurrency", type=int, default=1, help="generations the app runs at once (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import torch

    with tempfile.TemporaryDirectory(prefix="app-load-") as tmp:
        folder = Path(tmp)
        token_file = write_token(folder / "load-style.safetensors")
        loaded, tokens = reference_model(token_file)
        # The reference runs before and after the app's burst, so a change in the machine's load
        # during the benchmark (it is shared) weighs on both sides alike.
        before, before_wall = run_reference(loaded, tokens, args.requests, args.steps)
        port = free_port()
        proc = start_app(folder, port, args.app_concurrency)
        try:
            latencies, errors, wall = run_app(f"http://127.0.0.1:{port}/", token_file, args.requests, args.steps)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        after, after_wall = run_reference(loaded, tokens, args.requests, args.steps)
        ref_times, ref_wall = before + after, (before_wall + after_wall) / 2

    n = args.requests
    print(
        f"\nApp load test: {n} concurrent Generate requests, tiny model, {args.steps} steps, 128 px, "
        f"app concurrency {args.app_concurrency}, torch {torch.__version__}, {os.cpu_count()} CPUs\n"
    )
    print("| | requests | failures | wall s | req/s | p50 s | p90 s | p95 s | p99 s | max s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    row = [percentile(latencies, q) for q in (50, 90, 95, 99)] + [max(latencies)]
    print(
        f"| app (gradio_client) | {n} | {len(errors)} | {wall:.2f} | {n / wall:.2f} | "
        + " | ".join(f"{v:.2f}" for v in row)
        + " |"
    )
    ref_row = [percentile(ref_times, q) for q in (50, 90, 95, 99)] + [max(ref_times)]
    print(
        f"| reference (library, sequential; mean of the runs before and after) | {n} | 0 | {ref_wall:.2f} | "
        f"{n / ref_wall:.2f} | " + " | ".join(f"{v:.2f}" for v in ref_row) + " |"
    )
    print(f"\nreference wall before / after the app's burst: {before_wall:.2f} s / {after_wall:.2f} s")
    print(
        f"wall-time ratio app / reference: {wall / ref_wall:.2f} "
        f"(mean per-image service time in the reference: {statistics.mean(ref_times):.3f} s)"
    )
    for line in errors:
        print(line)
    print(f"{len(errors)} failures out of {n}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
