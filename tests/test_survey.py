"""The preference study: a blind, shuffled A/B page from a compare run, and the per-method tally."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleprompt import cli
from styleprompt.evaluation.survey import ANSWERS_FORMAT, build_survey, make_pairs, read_key, tally
from styleprompt.plumbing.errors import UserError

METHODS = ["gatys", "adain", "token-txt2img"]
LABELS = {"gatys": "Gatys", "adain": "AdaIN", "token-txt2img": "token text->image"}


def fake_compare_run(root: Path, contents: int = 2, skipped: tuple[str, ...] = ()) -> Path:
    """A compare folder as `run_compare` writes it: inputs/, images/, compare.json."""
    rng = np.random.default_rng(0)
    (root / "inputs").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "inputs" / "style-01.png")
    cells = []
    for k in range(contents):
        for method in METHODS:
            if method in skipped:
                cells.append({"content_index": k, "method": method, "status": "skipped: no weights", "image": None})
                continue
            rel = f"images/{k + 1:02d}-c{k}/{method}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shape = (32, 32, 3) if method.startswith("token") else (40, 48, 3)  # like the tiny model vs Gatys
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / rel)
            cells.append({"content_index": k, "method": method, "status": "ok", "image": rel})
    manifest = {
        "format": "styleprompt-compare",
        "version": 1,
        "methods": METHODS,
        "labels": LABELS,
        "styles": ["inputs/style-01.png"],
        "cells": cells,
        "contents": [{"name": f"c{k}", "class": "city", "image": ""} for k in range(contents)],
    }
    (root / "compare.json").write_text(json.dumps(manifest))
    return root


def answers_file(path: Path, key: dict, choose, response_id: str = "r1", saved: str = "2026-11-25T10:00:00Z") -> Path:
    """An answers file in the page's format; `choose(pair) -> (style_choice, favourite_choice)`."""
    answers = []
    for pair in key["pairs"]:
        style, favourite = choose(pair)
        answers.append({"pair": pair["id"], "style": style, "favourite": favourite})
    doc = {
        "format": ANSWERS_FORMAT,
        "survey_id": key["survey_id"],
        "response_id": response_id,
        "rater": "t",
        "saved": saved,
        "answers": answers,
    }
    path.write_text(json.dumps(doc))
    return path


def side_of(pair: dict, method: str) -> str:
    return "A" if pair["A"] == method else "B"


def test_page_is_blind_and_holds_every_pair(tmp_path):
    run = fake_compare_run(tmp_path / "cmp")
    page, key_path = build_survey(run, seed=3)
    key = read_key(key_path)
    text = page.read_text()
    assert len(key["pairs"]) == 2 * 3  # 2 contents x C(3, 2) method pairs
    for method, label in LABELS.items():  # no method name anywhere in what raters get
        assert method not in text and label not in text
    assert 'src="http' not in text and "images/" not in text  # pictures inlined, nothing fetched
    assert text.count('class="pair"') == 6 and text.count("data:image/jpeg;base64,") >= 12
    assert all(q in text for q in ("Which carries the style better?", "Which is your favourite?"))
    pairs = {(p["content_index"], frozenset((p["A"], p["B"]))) for p in key["pairs"]}
    assert len(pairs) == 6  # each unordered pair once per content image
    assert key["survey_id"] in text
    import base64
    import io

    pictures = re.findall(
        r'alt="[AB]" src="data:image/jpeg;base64,([^"]+)"|src="data:image/jpeg;base64,([^"]+)" alt="[AB]"', text
    )
    sizes = {Image.open(io.BytesIO(base64.b64decode(a or b))).size for a, b in pictures}
    assert len(pictures) == 12 and len(sizes) == 1  # same square for every picture: size tells nothing


def test_pairs_are_shuffled_reproducibly_and_sides_vary():
    manifest = json.loads(
        json.dumps(
            {
                "cells": [
                    {"content_index": k, "method": m, "status": "ok", "image": f"{k}/{m}.png"}
                    for k in range(4)
                    for m in METHODS
                ]
            }
        )
    )
    first, again, other = make_pairs(manifest, 1), make_pairs(manifest, 1), make_pairs(manifest, 2)
    assert [(p.a, p.b, p.content_index) for p in first] == [(p.a, p.b, p.content_index) for p in again]
    assert [(p.a, p.b, p.content_index) for p in first] != [(p.a, p.b, p.content_index) for p in other]
    assert [p.content_index for p in first] != sorted(p.content_index for p in first)  # not in content order
    lefts = {p.a for p in first if {p.a, p.b} == {"gatys", "adain"}}
    assert lefts == {"gatys", "adain"}  # over 4 contents, each of the two appears on the left


def test_skipped_methods_are_left_out(tmp_path):
    run = fake_compare_run(tmp_path / "cmp", skipped=("adain",))
    _, key_path = build_survey(run)
    key = read_key(key_path)
    assert all("adain" not in (p["A"], p["B"]) for p in key["pairs"]) and len(key["pairs"]) == 2


def test_one_method_is_not_a_survey(tmp_path):
    run = fake_compare_run(tmp_path / "cmp", contents=1, skipped=("adain", "gatys"))
    with pytest.raises(UserError, match="fewer than two methods"):
        build_survey(run)


def test_tally_counts_wins_ties_and_losses(tmp_path):
    run = fake_compare_run(tmp_path / "cmp")
    _, key_path = build_survey(run)
    key = read_key(key_path)

    def choose(pair):  # style: gatys always wins, else tie; favourite: adain always wins, else A
        style = side_of(pair, "gatys") if "gatys" in (pair["A"], pair["B"]) else "tie"
        favourite = side_of(pair, "adain") if "adain" in (pair["A"], pair["B"]) else "A"
        return style, favourite

    result = tally(key, [answers_file(tmp_path / "a1.json", key, choose)])
    style, fav = result.scores["style"], result.scores["favourite"]
    assert (style["gatys"].wins, style["gatys"].losses, style["gatys"].rate) == (4, 0, 1.0)
    assert (style["adain"].wins, style["adain"].ties, style["adain"].losses) == (0, 2, 2)
    assert style["adain"].rate == pytest.approx(0.25) and style["token-txt2img"].rate == pytest.approx(0.25)
    assert fav["adain"].wins == 4 and fav["adain"].rate == 1.0
    assert fav["gatys"].wins + fav["token-txt2img"].wins == 2  # their mutual pairs went to side A
    assert result.responses == 1 and result.answered_pairs == 6
    assert "Gatys" in result.table()  # results name methods by their labels


def test_a_rater_saving_twice_counts_once_with_the_later_file(tmp_path):
    run = fake_compare_run(tmp_path / "cmp", contents=1)
    _, key_path = build_survey(run)
    key = read_key(key_path)
    early = answers_file(
        tmp_path / "early.json",
        key,
        lambda p: (side_of(p, "adain") if "adain" in (p["A"], p["B"]) else "tie",) * 2,
        saved="2026-11-25T09:00:00Z",
    )
    late = answers_file(
        tmp_path / "late.json",
        key,
        lambda p: (side_of(p, "gatys") if "gatys" in (p["A"], p["B"]) else "tie",) * 2,
        saved="2026-11-25T11:00:00Z",
    )
    other = answers_file(tmp_path / "other.json", key, lambda p: ("tie", "tie"), response_id="r2")
    result = tally(key, [late, early, other])
    assert result.responses == 2
    assert result.scores["style"]["gatys"].wins == 2 and result.scores["style"]["adain"].wins == 0


def test_answers_of_another_survey_or_unknown_pairs_are_refused(tmp_path):
    run = fake_compare_run(tmp_path / "cmp", contents=1)
    _, key_path = build_survey(run)
    key = read_key(key_path)
    wrong = answers_file(tmp_path / "w.json", dict(key, survey_id="someone-else"), lambda p: ("A", "A"))
    with pytest.raises(UserError, match="answers survey"):
        tally(key, [wrong])
    bad = answers_file(
        tmp_path / "b.json", dict(key, pairs=key["pairs"] + [{"id": "p999", "A": "x", "B": "y"}]), lambda p: ("A", "B")
    )
    with pytest.raises(UserError, match="p999"):
        tally(key, [bad])
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable"):
        tally(key, [tmp_path / "junk.json"])


def test_cli_survey_and_results(tmp_path, capsys):
    run = fake_compare_run(tmp_path / "cmp", contents=1)
    assert cli.main(["survey", str(run), "--seed", "5"]) == 0
    key = read_key(run)
    answers_dir = tmp_path / "answers"
    answers_dir.mkdir()
    answers_file(
        answers_dir / "a.json",
        key,
        lambda p: (side_of(p, "token-txt2img") if "token-txt2img" in (p["A"], p["B"]) else "tie", "tie"),
    )
    capsys.readouterr()
    assert (
        cli.main(["survey-results", str(run), str(answers_dir), "--json", "--output", str(tmp_path / "tally.json")])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["questions"]["style"]["token-txt2img"]["win_rate"] == 1.0
    assert json.loads((tmp_path / "tally.json").read_text()) == printed
    assert cli.main(["survey", str(tmp_path / "nowhere")]) == 2
    assert "not a comparison folder" in capsys.readouterr().err


@pytest.mark.browser
def test_page_saves_answers_that_tally(tmp_path, chromium):
    """The real page in Chromium: click answers, press Save, tally the downloaded file."""
    from playwright import sync_api  # a dev dependency: missing means the install line was not run

    run = fake_compare_run(tmp_path / "cmp", contents=1)
    page_path, key_path = build_survey(run, seed=7)
    key = read_key(key_path)

    # Run the browser on a thread of its own: Playwright's sync API refuses a thread where an earlier
    # test (the app's) left an asyncio loop running.
    def click_through() -> Path:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(chromium), headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_context(accept_downloads=True).new_page()
                page.goto(page_path.as_uri())
                for pair in key["pairs"]:  # style: the token always; favourite: always B
                    choice = side_of(pair, "token-txt2img") if "token-txt2img" in (pair["A"], pair["B"]) else "tie"
                    page.check(f'input[name="{pair["id"]}-style"][value="{choice}"]')
                    page.check(f'input[name="{pair["id"]}-favourite"][value="B"]')
                page.fill("#rater", "Ada L.")
                assert re.search(r"3 of 3 pairs answered", page.inner_text("#progress"))
                with page.expect_download() as download:
                    page.click("#save")
                saved = tmp_path / download.value.suggested_filename
                download.value.save_as(saved)
            finally:
                browser.close()
        return saved

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        saved = pool.submit(click_through).result(timeout=240)
    assert saved.name.startswith("survey-answers-Ada_L")
    result = tally(key, [saved])
    assert result.responses == 1 and result.answered_pairs == 3
    assert result.scores["style"]["token-txt2img"].rate == 1.0
    favourite_b = {pair["B"] for pair in key["pairs"]}
    assert sum(result.scores["favourite"][m].wins for m in favourite_b) == 3
