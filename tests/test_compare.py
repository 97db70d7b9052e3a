"""`styleprompt compare` on the tiny model with random VGG/AdaIN weights: every file, every
method row, skipped methods reported with their reason, one failure never losing the others."""

from __future__ import annotations

import csv
import importlib.util
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from styleprompt import cli
from styleprompt.diffusion.tiny import build_tiny_pipeline
from styleprompt.diffusion.tokens import save_diffusers_embedding
from styleprompt.evaluation.compare import measure, method_names, read_manifest, run_compare
from styleprompt.evaluation.methods import AdainStylizer
from styleprompt.plumbing.errors import UserError
from tests.conftest import make_artworks
from tests.real_weights import hide_shared_weights

FAST = dict(size=64, options={"iterations": 2, "steps": 2}, cell_size=96, show_progress=False)
QUICK = dict(FAST, metrics=False)  # where a test is not about the metrics, skip their cost
HAS_GHIASI = importlib.util.find_spec("classic.ghiasi") is not None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp-inputs")
    styles = make_artworks(root / "styles", 2, prefix="art", size=(96, 80))
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:72, 0:96]
    photo = np.stack([xx * 2, yy * 3, (xx + yy)], -1) % 255 + rng.integers(0, 30, (72, 96, 3))
    content = root / "photo.png"
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(content)
    # A token of the tiny model's width (32): random vectors are a valid, if meaningless, style.
    table = build_tiny_pipeline().text_encoder.get_input_embeddings().weight.detach()
    vectors = torch.randn(2, table.shape[1], generator=torch.Generator().manual_seed(0)) * table.std()
    embedding = save_diffusers_embedding(root / "learned_embeds.safetensors", "<cmp>", vectors)
    return {"styles": sorted(styles.iterdir()), "content": content, "embedding": embedding, "root": root}


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp-run")
    messages = []
    result = run_compare(
        [inputs["content"]],
        inputs["styles"],
        embedding=str(inputs["embedding"]),
        classes=["a city"],
        model="tiny",
        output=out,
        random_weights=True,
        device="cpu",
        progress=lambda message, fraction: messages.append((message, fraction)),
        **FAST,
    )
    return result, messages


@pytest.mark.slow
def test_every_file_and_every_method_row(full_run):
    result, _ = full_run
    for path in (result.grid, result.csv, result.md, result.html, result.manifest):
        assert path.is_file() and path.stat().st_size > 0, path
    with open(result.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # By default every method that can run here, the real-weight ones first (issue 25 item 6).
    # With --random-weights every registered method can run: Ghiasi (real) first, then the registry's order.
    real_first = ["ghiasi", *(m for m in method_names() if m != "ghiasi")] if HAS_GHIASI else method_names()
    assert [(r["content"], r["method"]) for r in rows] == [("photo", m) for m in real_first]
    expected_ok = set(method_names()) if HAS_GHIASI else set(method_names()) - {"ghiasi"}
    assert {m for m, s in result.status.items() if s == "ok"} == expected_ok, result.status
    for row in rows:
        if row["method"] in expected_ok:
            assert row["status"] == "ok" and float(row["time_s"]) > 0 and row["peak_memory_mib"] != ""
            # Random VGG/AdaIN and the tiny model's random weights are labelled; Ghiasi's are real.
            assert row["method_weights"] == ("real" if row["method"] == "ghiasi" else "random")
    # The README's tiny compare (random VGG, Gatys after a few iterations) crowns no random column.
    from styleprompt.evaluation.report import front

    assert {m for _, m in front(result.cells)} <= {"ghiasi"}
    assert all(c.metrics["style_gain"].weights == "real" for c in result.cells if "style_gain" in c.metrics)
    grid = Image.open(result.grid)
    assert (
        96 < grid.height < 2 * 96 + 80 and grid.width >= (2 + len(real_first)) * 96
    )  # 1 row; content + the methods + style columns


@pytest.mark.slow
def test_outputs_are_images_with_their_parameters(full_run):
    result, _ = full_run
    manifest = read_manifest(result.output)
    img2img_file = next(c["image"] for c in manifest["cells"] if c["method"] == "token-img2img")
    img2img = Image.open(result.output / img2img_file)
    assert img2img.text["strength"] == "0.6" and img2img.text["method"] == "token-img2img"
    gatys = Image.open(result.output / next(c["image"] for c in manifest["cells"] if c["method"] == "gatys"))
    assert gatys.text["method"] == "gatys" and gatys.text["iterations"] == "2" and gatys.text["weights"] == "random"
    adain_file = next(c["image"] for c in manifest["cells"] if c["method"] == "adain")
    adain = np.asarray(Image.open(result.output / adain_file).convert("RGB"), dtype=float)
    content = np.asarray(Image.open(result.output / "inputs" / "content-01.png").convert("RGB"), dtype=float)
    assert adain.shape == content.shape and np.abs(adain - content).mean() > 5  # it did change the picture


@pytest.mark.slow
def test_metrics_carry_direction_and_weights(full_run):
    result, _ = full_run
    evaluated = [c for c in result.cells if c.ok and c.metrics]
    assert evaluated, [c.unavailable for c in result.cells]
    for cell in evaluated:
        for name, metric in cell.metrics.items():
            assert metric.better in ("higher", "lower"), name
            assert metric.weights in ("real", "random", "none"), name
    vgg_metrics = [m for c in evaluated for n, m in c.metrics.items() if "gram" in n or "content" in n]
    assert vgg_metrics and all(m.weights == "random" for m in vgg_metrics)  # random VGG is labelled so
    txt2img = next(c for c in evaluated if c.method == "token-txt2img")
    assert not any(n.startswith("content") or n.startswith("ssim") for n in txt2img.metrics)  # it has no content input
    assert txt2img.unavailable["ssim"] == "text->image has no content input"
    assert "ssim" in next(c for c in evaluated if c.method == "token-img2img").metrics
    if HAS_GHIASI:
        assert list(result.rows[0])[8] == "style_similarity"  # the learned style metric leads the table


@pytest.mark.slow
def test_report_files_say_what_is_random_and_are_self_contained(full_run):
    result, _ = full_run
    md = result.md.read_text()
    html = result.html.read_text()
    for label in ("Gatys", "AdaIN", "Ghiasi", "token text\u2192image", "token image\u2192image"):
        assert label in md and label in html
    assert "\u2020" in md and "random" in md.lower()
    assert "\u2191" in md or "\u2193" in md
    assert re.search(r'<img[^>]+src="data:image/png;base64,', html)
    assert not re.search(r'src="(?!data:)', html)  # no file or network references


@pytest.mark.slow
def test_progress_reaches_the_end(full_run):
    _, messages = full_run
    fractions = [f for _, f in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(messages) > 10


@pytest.mark.slow
def test_a_class_per_content_image(inputs, tmp_path):
    result = run_compare(
        [inputs["content"], inputs["content"]],
        inputs["styles"],
        embedding=str(inputs["embedding"]),
        classes=["a city", "lighthouse"],
        model="tiny",
        output=tmp_path / "out",
        methods=["token-txt2img"],
        device="cpu",
        **QUICK,
    )
    manifest = read_manifest(result.output)
    prompts = [Image.open(result.output / c["image"]).text["prompt"] for c in manifest["cells"]]
    assert prompts == ["a <cmp> style of a city", "a <cmp> style of a lighthouse"]  # "a city" -> no double article
    assert [c["name"] for c in manifest["contents"]] == ["photo", "photo-2"]
    assert result.cells[0].unavailable == {"metrics": "not computed (metrics turned off)"}


def test_missing_weights_and_models_are_reported_not_crashed_on(inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached VGG-19
    hide_shared_weights(monkeypatch, tmp_path)
    result = run_compare(
        [inputs["content"]],
        inputs["styles"],
        embedding=str(inputs["embedding"]),
        classes=["city"],
        model="no-such-org/no-such-model",
        output=tmp_path / "out",
        methods=["gatys", "adain", "token-txt2img", "token-img2img"],
        device="cpu",
        **QUICK,
    )
    assert result.status["adain"].startswith("skipped: ") and "decoder" in result.status["adain"]
    assert result.status["gatys"].startswith("skipped: ") and "VGG" in result.status["gatys"]
    assert (
        result.status["token-txt2img"].startswith("skipped: ")
        and "no-such-org/no-such-model" in result.status["token-txt2img"]
    )
    assert result.status["token-img2img"] == result.status["token-txt2img"]  # loaded (and failed) once
    assert all(p.is_file() for p in (result.grid, result.csv, result.md, result.html))
    assert "skipped" in result.md.read_text()


def test_no_embedding_skips_only_the_token_methods(inputs, tmp_path):
    result = run_compare(
        [inputs["content"]],
        inputs["styles"],
        embedding=None,
        classes=[],
        model="tiny",
        output=tmp_path / "out",
        methods=["adain", "token-txt2img"],
        random_weights=True,
        device="cpu",
        **QUICK,
    )
    assert result.status == {"adain": "ok", "token-txt2img": "skipped: no style token given (--embedding FILE)"}


def test_one_failing_method_keeps_the_others(inputs, tmp_path, monkeypatch):
    def broken(self, content, request):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(AdainStylizer, "stylize", broken)
    result = run_compare(
        [inputs["content"]],
        inputs["styles"],
        embedding=None,
        classes=[],
        model="tiny",
        output=tmp_path / "out",
        methods=["gatys", "adain"],
        random_weights=True,
        device="cpu",
        **QUICK,
    )
    assert result.status["adain"] == "failed: RuntimeError: decoder exploded"
    assert result.status["gatys"] == "ok" and (result.output / "images" / "01-photo" / "gatys.png").is_file()
    assert "decoder exploded" in result.md.read_text()


def test_a_stop_from_progress_ends_the_run(inputs, tmp_path):
    class Stop(Exception):
        pass

    def progress(message, fraction):
        if message.startswith("AdaIN on"):
            raise Stop

    with pytest.raises(Stop):
        run_compare(
            [inputs["content"]],
            inputs["styles"],
            embedding=None,
            classes=[],
            model="tiny",
            output=tmp_path / "out",
            methods=["gatys", "adain"],
            random_weights=True,
            device="cpu",
            progress=progress,
            **QUICK,
        )


def test_bad_requests_are_one_line_errors(inputs, tmp_path):
    common = dict(embedding=str(inputs["embedding"]), model="tiny", output=tmp_path / "o", random_weights=True, **QUICK)
    with pytest.raises(UserError, match="2 classes for 3 content"):
        run_compare([inputs["content"]] * 3, inputs["styles"], classes=["a", "b"], **common)
    with pytest.raises(UserError, match="unknown method 'picasso'"):
        run_compare([inputs["content"]], inputs["styles"], classes=["a"], methods=["picasso"], **common)
    with pytest.raises(UserError, match="--class"):
        run_compare([inputs["content"]], inputs["styles"], classes=[], **common)
    with pytest.raises(UserError, match="style image"):
        run_compare([inputs["content"]], [], classes=["a"], **common)


def test_measure_sees_time_and_memory():
    with measure("cpu") as small:
        time.sleep(0.05)
    with measure("cpu") as big:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        time.sleep(0.05)
        del block
    assert small.seconds >= 0.05 and big.seconds >= 0.05
    assert big.peak_mib > 250 and small.peak_mib < 50
    assert big.kind.startswith("cpu")
    with measure("cpu") as torch_alloc:
        t = torch.ones(256 * 2**20 // 4)  # torch's CPU allocator, which tracemalloc cannot see
        time.sleep(0.03)
        del t
    assert torch_alloc.peak_mib > 200


@pytest.mark.slow
def test_cli_compare_writes_the_report(inputs, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(
        [
            "compare",
            "--model",
            "tiny",
            "--content",
            str(inputs["content"]),
            "--style-images",
            str(inputs["styles"][0].parent),
            "--embedding",
            str(inputs["embedding"]),
            "--class",
            "a city",
            "--output",
            str(out),
            "--random-weights",
            "--methods",
            "adain,token-txt2img",
            "--size",
            "64",
            "--steps",
            "2",
            "--cell-size",
            "96",
            "--device",
            "cpu",
            "--no-metrics",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert re.search(r"adain\s+ok", printed) and re.search(r"token-txt2img\s+ok", printed)
    assert all((out / name).is_file() for name in ("grid.png", "metrics.csv", "metrics.md", "report.html"))
    assert (
        cli.main(
            [
                "compare",
                "--content",
                str(tmp_path / "missing.jpg"),
                "--style-images",
                str(inputs["styles"][0]),
                "--output",
                str(out),
            ]
        )
        == 2
    )
    assert "missing.jpg does not exist" in capsys.readouterr().err
    # a second comparison into the same folder is refused (old and new would mix), until --overwrite
    (out / "notes.txt").write_text("mine")
    again = [
        "compare",
        "--content",
        str(inputs["content"]),
        "--style-images",
        str(inputs["styles"][0]),
        "--output",
        str(out),
        "--random-weights",
        "--methods",
        "adain",
        "--size",
        "64",
        "--cell-size",
        "96",
        "--device",
        "cpu",
        "--no-metrics",
    ]
    assert cli.main(again) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and err.count("\n") == 1
    assert list((out / "images").rglob("token-txt2img.png"))
    assert cli.main([*again, "--overwrite"]) == 0
    assert not list((out / "images").rglob("token-txt2img.png"))  # the old run's cells are gone, not mixed in
    assert (out / "notes.txt").read_text() == "mine"


def test_method_status_is_decided_by_state_not_wording():
    from styleprompt.evaluation.report import Cell, State, Status, method_status

    def cells(*outcomes: Status) -> list[Cell]:
        return [Cell(i, f"c{i}", "city", "adain", outcome=o) for i, o in enumerate(outcomes)]

    sneaky = Status(State.SKIPPED, "ok")  # a reason that reads like success is still a skip
    assert not sneaky.ok and str(sneaky) == "skipped: ok"
    partial = method_status(cells(Status(), Status(State.FAILED, "ValueError: a: b")), Status())
    assert partial.state is State.FAILED and partial.affected == (1, 2)
    assert str(partial) == "failed on 1 of 2 content images: ValueError: a: b"
    assert method_status(cells(Status(), Status()), Status()).ok
    unprepared = Status(State.SKIPPED, "no decoder")
    assert method_status(cells(Status()), unprepared) is unprepared


def test_best_is_the_real_weight_front_of_style_gain_and_fidelity():
    """Issue 27 item 5: raw similarity crowned an almost unchanged photo; "best" is now the front of
    style gain (over the method's own content picture) and SSIM, among real-weight methods that
    stylised the picture."""
    from styleprompt.evaluation.report import STYLE_GAIN, Cell, Metric, best_values, front

    def cell(method: str, gain: float, ssim: float, weights: str = "real") -> Cell:
        c = Cell(0, "photo", "city", method, method_weights=weights)
        c.metrics = {STYLE_GAIN: Metric(gain, "higher", "real"), "ssim": Metric(ssim, "higher", "none")}
        return c

    cells = [
        cell("almost-unchanged", 0.01, 0.97),  # keeps the content best, adds next to no style
        cell("strong", 0.20, 0.50),
        cell("balanced", 0.15, 0.60),
        cell("dominated", 0.10, 0.40),
        cell("demo", 0.50, 0.90, weights="random"),  # random weights: never best
        cell("lost-style", -0.10, 0.99),
    ]
    assert front(cells) == {(0, "strong"), (0, "balanced")}
    assert (0, "strong", STYLE_GAIN) in best_values(cells) and (0, "strong", "ssim") in best_values(cells)
    assert not any(name == "style_similarity" for _, _, name in best_values(cells))


def test_default_methods_are_those_that_run_here_real_first(tmp_path, monkeypatch):
    from styleprompt.evaluation.compare import default_methods
    from styleprompt.evaluation.methods import Sources

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached VGG-19
    hide_shared_weights(monkeypatch, tmp_path)  # and no weight sets (WCT, MicroAST, VGG-19 conv1-3)
    chosen, not_run = default_methods(Sources(files={"embedding": None, "model": "tiny"}))
    assert "gatys" in not_run and "VGG-19" in not_run["gatys"] and "--random-weights" in not_run["gatys"]
    assert "decoder" in not_run["adain"]
    assert "--wct-weights" in not_run["wct"] and "STYLEPROMPT_WEIGHTS" in not_run["wct"]
    assert "--microast-weights" in not_run["microast"]
    assert not_run["token-txt2img"] == "no style token given (--embedding FILE)"
    assert chosen == (["ghiasi"] if HAS_GHIASI else [])
    chosen, not_run = default_methods(
        Sources(random_weights=True, files={"embedding": "e.safetensors", "model": "tiny"})
    )
    assert not not_run and chosen[0] == ("ghiasi" if HAS_GHIASI else chosen[0])
    assert chosen[-2:] == ["token-txt2img", "token-img2img"]  # the tiny model is random weights: after the real


def test_default_methods_take_wct_and_microast_when_their_weights_are_found(tmp_path, monkeypatch):
    from styleprompt.evaluation.compare import default_methods
    from styleprompt.evaluation.methods import Sources
    from tests.real_weights import SHARED_WEIGHTS, require_weights

    for name in ("cd-wct", "microast"):
        require_weights(name)
    monkeypatch.setenv("STYLEPROMPT_WEIGHTS", str(SHARED_WEIGHTS))
    chosen, not_run = default_methods(Sources(files={"embedding": "e.safetensors", "model": "tiny"}))
    assert {"wct", "microast"} <= set(chosen) and "wct" not in not_run and "microast" not in not_run
    assert chosen.index("microast") < chosen.index("token-txt2img")  # real weights before the random tiny model
    chosen, not_run = default_methods(Sources(files={"wct_weights": str(tmp_path / "nowhere"), "model": "tiny"}))
    assert "wct" not in chosen and "no such folder" in not_run["wct"]
