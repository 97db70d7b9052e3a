"""The preference study: a blind A/B page built from a comparison run, and the tally of answers.

Why it works this way:
- The page is one static HTML file with the pictures inlined, so it can be mailed or opened
  from disk; no server runs and nothing is uploaded. Answers leave the page only as a JSON file
  the rater downloads and sends back.
- It is blind: the page holds pair ids and sides "A"/"B", never method names (not even in its
  source). Which method was A and which B lives in survey-key.json beside it, which only the
  person running the study reads, through `styleprompt survey-results`.
- Pairs and sides are shuffled with a seed, so a study can be rebuilt identically, and the
  same method is not always on the left.
"""

from __future__ import annotations

import html
import itertools
import json
import random
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from styleprompt.evaluation.compare_run import CompareRun, read_manifest
from styleprompt.evaluation.report import fit_into, image_data_uri
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import read_json, shown_path, write_text_atomic
from styleprompt.plumbing.images import load_image

PAGE_NAME = CompareRun.SURVEY_PAGE  # the run folder's names belong to CompareRun
KEY_NAME = CompareRun.SURVEY_KEY
KEY_FORMAT = "styleprompt-survey-key"
ANSWERS_FORMAT = "styleprompt-survey-answers"
QUESTIONS = {
    "style": "Which carries the style better?",
    "favourite": "Which is your favourite?",
}
CHOICES = ("A", "B", "tie")
CHOICE_LABELS = {"A": "A", "B": "B", "tie": "neither / can&#39;t tell"}
IMAGE_SIDE = 512  # px: enough to judge brush work, small enough to keep the page a few MB


@dataclass
class Pair:
    id: str
    content_index: int
    a: str  # method shown as A
    b: str  # method shown as B
    a_image: str
    b_image: str


def make_pairs(manifest: dict, seed: int = 0) -> list[Pair]:
    """Every pair of methods that both produced a picture for the same content image, shuffled."""
    rng = random.Random(seed)
    by_content: dict[int, list[dict]] = {}
    for cell in manifest.get("cells", []):
        if cell.get("status") == "ok" and cell.get("image"):
            by_content.setdefault(int(cell["content_index"]), []).append(cell)
    raw = []
    for index, cells in sorted(by_content.items()):
        for left, right in itertools.combinations(cells, 2):
            if rng.random() < 0.5:
                left, right = right, left
            raw.append((index, left, right))
    rng.shuffle(raw)
    return [
        Pair(f"p{k + 1:03d}", index, left["method"], right["method"], left["image"], right["image"])
        for k, (index, left, right) in enumerate(raw)
    ]


def build_survey(
    compare_dir: str | Path,
    *,
    output: str | Path | None = None,
    seed: int = 0,
    title: str = "Which carries the style better?",
) -> tuple[Path, Path]:
    """Write survey.html (for raters) and survey-key.json (for you) from a compare run."""
    root = Path(compare_dir)
    manifest = read_manifest(root)
    pairs = make_pairs(manifest, seed)
    if not pairs:
        raise UserError(
            f"{root} has fewer than two methods with a picture for the same content image; nothing to compare"
        )
    run = CompareRun(root)
    page_path = Path(output) if output else run.survey_page
    key_path = page_path.with_name(KEY_NAME) if output else run.survey_key
    survey_id = secrets.token_hex(8)
    styles = [image_data_uri(load_image(root / s), 256, "JPEG") for s in manifest.get("styles", [])[:6]]
    blocks = []
    for number, pair in enumerate(pairs, 1):
        blocks.append(_pair_html(number, len(pairs), pair, root))
    page = _PAGE.format(
        title=html.escape(title),
        survey_id=survey_id,
        styles="".join(f'<img src="{uri}" alt="style reference">' for uri in styles),
        more=(
            f"<p class=small>(and {len(manifest['styles']) - len(styles)} more)</p>"
            if len(manifest.get("styles", [])) > len(styles)
            else ""
        ),
        pairs="\n".join(blocks),
        count=len(pairs),
        questions=json.dumps(list(QUESTIONS)),
        answers_format=ANSWERS_FORMAT,
    )
    key = {
        "format": KEY_FORMAT,
        "survey_id": survey_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "compare_dir": str(root.resolve()),
        "questions": QUESTIONS,
        "labels": manifest.get("labels", {}),
        "pairs": [{"id": p.id, "content_index": p.content_index, "A": p.a, "B": p.b} for p in pairs],
    }
    write_text_atomic(key_path, json.dumps(key, indent=2))
    write_text_atomic(page_path, page)
    return page_path, key_path


def _pair_html(number: int, total: int, pair: Pair, root: Path) -> str:
    questions = []
    for q, text in QUESTIONS.items():
        options = "".join(
            f'<label><input type="radio" name="{pair.id}-{q}" value="{c}"> {CHOICE_LABELS[c]}</label>' for c in CHOICES
        )
        questions.append(f"<fieldset><legend>{html.escape(text)}</legend>{options}</fieldset>")
    # Both pictures in the same square, re-encoded: neither size (the tiny model paints 128 px,
    # Gatys 512) nor PNG metadata (which names the method) may tell a rater which is which.
    a = image_data_uri(fit_into(load_image(root / pair.a_image), IMAGE_SIDE), fmt="JPEG")
    b = image_data_uri(fit_into(load_image(root / pair.b_image), IMAGE_SIDE), fmt="JPEG")
    return (
        f'<section class="pair" data-pair="{pair.id}"><h2>Pair {number} of {total}</h2>'
        f'<div class="ab"><figure><img src="{a}" alt="A"><figcaption>A</figcaption></figure>'
        f'<figure><img src="{b}" alt="B"><figcaption>B</figcaption></figure></div>{"".join(questions)}</section>'
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #151515; }}
.refs img {{ height: 128px; margin: 0 6px 6px 0; border: 1px solid #bbb; }}
.pair {{ border-top: 1px solid #ccc; padding: 0.8em 0; }}
.ab {{ display: flex; gap: 1em; flex-wrap: wrap; }}
figure {{ margin: 0; text-align: center; }} figure img {{ width: 480px; max-width: 44vw; border: 1px solid #bbb; }}
figcaption {{ font-weight: bold; font-size: 1.2em; }}
fieldset {{ display: inline-block; margin: 0.4em 1em 0 0; border: 1px solid #ccc; }}
label {{ margin-right: 1em; }} .small {{ color: #555; font-size: 0.9em; }}
#bar {{ position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ccc; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Each pair shows two pictures made in the style of the reference artworks below. For each pair answer
both questions. The pictures are shuffled and unlabelled on purpose. When you are done, press
<b>Save answers</b>: your browser downloads a small JSON file; send that file back. Nothing is uploaded.</p>
<div class="refs">{styles}</div>{more}
<div id="bar"><label>Your name or initials (optional): <input id="rater" type="text" maxlength="60"></label>
<span id="progress" class="small"></span> <button id="save" type="button">Save answers</button></div>
{pairs}
<script>
(function () {{
  "use strict";
  var SURVEY = "{survey_id}", QUESTIONS = {questions}, TOTAL = {count}, STORE = "styleprompt-survey-" + SURVEY;
  var saved = {{}};
  try {{ saved = JSON.parse(localStorage.getItem(STORE) || "{{}}"); }} catch (e) {{ saved = {{}}; }}
  if (!saved.response_id) {{
    var bytes = new Uint8Array(8); (window.crypto || {{getRandomValues: function (a) {{ for (var i = 0; i < a.length; i++) a[i] = Math.floor(Math.random() * 256); return a; }}}}).getRandomValues(bytes);
    saved.response_id = Array.prototype.map.call(bytes, function (x) {{ return ("0" + x.toString(16)).slice(-2); }}).join("");
    saved.answers = {{}};
  }}
  function remember() {{ try {{ localStorage.setItem(STORE, JSON.stringify(saved)); }} catch (e) {{}} }}
  function collect() {{
    var answers = [];
    document.querySelectorAll("section.pair").forEach(function (section) {{
      var id = section.getAttribute("data-pair"), entry = {{pair: id}}, any = false;
      QUESTIONS.forEach(function (q) {{
        var picked = section.querySelector('input[name="' + id + "-" + q + '"]:checked');
        entry[q] = picked ? picked.value : null; any = any || !!picked;
      }});
      if (any) answers.push(entry);
    }});
    return answers;
  }}
  function update() {{
    var answers = collect(), complete = answers.filter(function (a) {{
      return QUESTIONS.every(function (q) {{ return a[q]; }});
    }}).length;
    document.getElementById("progress").textContent = complete + " of " + TOTAL + " pairs answered";
    saved.answers = {{}}; answers.forEach(function (a) {{ saved.answers[a.pair] = a; }});
    saved.rater = document.getElementById("rater").value; remember();
  }}
  Object.keys(saved.answers || {{}}).forEach(function (id) {{
    QUESTIONS.forEach(function (q) {{
      var v = saved.answers[id][q];
      var input = v && document.querySelector('input[name="' + id + "-" + q + '"][value="' + v + '"]');
      if (input) input.checked = true;
    }});
  }});
  if (saved.rater) document.getElementById("rater").value = saved.rater;
  document.addEventListener("change", update);
  document.getElementById("rater").addEventListener("input", update);
  document.getElementById("save").addEventListener("click", function () {{
    update();
    var doc = {{format: "{answers_format}", survey_id: SURVEY, response_id: saved.response_id,
               rater: saved.rater || "", saved: new Date().toISOString(), answers: collect()}};
    var blob = new Blob([JSON.stringify(doc, null, 2)], {{type: "application/json"}});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "survey-answers-" + (saved.rater || "anonymous").replace(/[^A-Za-z0-9_-]+/g, "_") + "-" + saved.response_id + ".json";
    document.body.appendChild(link); link.click(); link.remove();
  }});
  update();
}})();
</script>
</body></html>
"""


# -- tallying ---------------------------------------------------------------------------------------


@dataclass
class Score:
    wins: int = 0
    ties: int = 0
    losses: int = 0

    @property
    def comparisons(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float | None:
        """Share of comparisons won, a tie counting half; None when never compared."""
        n = self.comparisons
        return None if n == 0 else (self.wins + 0.5 * self.ties) / n


@dataclass
class Tally:
    survey_id: str
    responses: int
    answered_pairs: int
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # question -> method -> Score
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "survey_id": self.survey_id,
            "responses": self.responses,
            "answered_pairs": self.answered_pairs,
            "questions": {
                q: {
                    m: {
                        "wins": s.wins,
                        "ties": s.ties,
                        "losses": s.losses,
                        "comparisons": s.comparisons,
                        "win_rate": s.rate,
                    }
                    for m, s in by_method.items()
                }
                for q, by_method in self.scores.items()
            },
        }

    def table(self) -> str:
        """A plain-text table per question, best first."""
        lines = [
            f"survey {self.survey_id}: {self.responses} response(s), {self.answered_pairs} answered pair(s)",
            "win rate = (wins + ties/2) / comparisons",
        ]
        for q, by_method in self.scores.items():
            lines += ["", QUESTIONS.get(q, q)]
            ranked = sorted(by_method.items(), key=lambda kv: -1 if kv[1].rate is None else kv[1].rate, reverse=True)
            width = max([len(self.labels.get(m, m)) for m in by_method] + [6])
            lines.append(f"  {'method':<{width}}  wins  ties  losses  n    win rate")
            for method, s in ranked:
                rate = "-" if s.rate is None else f"{s.rate:.2f}"
                lines.append(
                    f"  {self.labels.get(method, method):<{width}}  {s.wins:>4}  {s.ties:>4}  {s.losses:>6}  {s.comparisons:<3}  {rate}"
                )
        return "\n".join(lines)


def _read_json(path: Path, what: str) -> dict:
    """A plain file only (a FIFO or a device gets its reason), nesting bounded: `read_json`."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise UserError(f"{shown_path(path)} is not a {what}")
    return data


def read_key(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = CompareRun(p).survey_key
    if not p.exists():
        raise UserError(f"no survey key at {shown_path(p)}; run `styleprompt survey DIR` first (it writes {KEY_NAME})")
    key = _read_json(p, "survey key")
    if key.get("format") != KEY_FORMAT or not isinstance(key.get("pairs"), list):
        raise UserError(f"{shown_path(p)} is not a styleprompt survey key")
    pairs_ok = all(
        isinstance(q, dict) and all(isinstance(q.get(k), str) for k in ("id", "A", "B")) for q in key["pairs"]
    )
    labels = key.get("labels", {})
    if not (pairs_ok and isinstance(key.get("survey_id"), str) and isinstance(labels, dict)):
        raise UserError(
            f"{shown_path(p)} is a damaged survey key (its pairs, survey_id or labels have the wrong shape)"
        )
    return key


def _check_answers(doc: dict, path: Path) -> list[dict]:
    """An answers file's shape (a rater's browser wrote it, but anyone can edit it): the answers list."""
    answers = doc.get("answers") or []
    fields_ok = all(isinstance(doc.get(k, ""), str) for k in ("response_id", "saved", "survey_id"))
    if not fields_ok or not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise UserError(
            f"{shown_path(path)} is a damaged survey answers file (its answers or ids have the wrong shape); "
            "ask the rater to save it again"
        )
    return answers


def answer_files(paths: Sequence[str | Path]) -> list[Path]:
    """Answer files as given; folders expanded to their *.json files (the key excluded)."""
    files: list[Path] = []
    for value in paths:
        p = Path(value)
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.json") if f.name not in CompareRun.NOT_ANSWERS))
        elif p.exists():  # a FIFO or a device is refused with its reason when read
            files.append(p)
        else:
            raise UserError(f"answers file {shown_path(p)} does not exist")
    if not files:
        raise UserError("no answer files given; pass the survey-answers-*.json files the raters sent back")
    return files


def tally(key: dict, answers: Iterable[Path]) -> Tally:
    """Wins, ties and losses per method and question over every response.

    A rater who saved twice (same response id) counts once, with their later file.
    """
    pairs = {p["id"]: p for p in key["pairs"]}
    methods = sorted({p["A"] for p in key["pairs"]} | {p["B"] for p in key["pairs"]})
    latest: dict[str, tuple[str, dict, Path]] = {}
    for path in answers:
        doc = _read_json(path, "survey answers file")
        if doc.get("format") != ANSWERS_FORMAT:
            raise UserError(f"{shown_path(path)} is not a styleprompt survey answers file")
        _check_answers(doc, path)
        if doc.get("survey_id") != key["survey_id"]:
            raise UserError(
                f"{shown_path(path)} answers survey {doc.get('survey_id')!r}, but the key is for survey {key['survey_id']!r}"
            )
        rid = str(doc.get("response_id") or path.name)
        saved = str(doc.get("saved") or "")
        if rid not in latest or saved >= latest[rid][0]:
            latest[rid] = (saved, doc, path)
    result = Tally(
        key["survey_id"],
        len(latest),
        0,
        {q: {m: Score() for m in methods} for q in QUESTIONS},
        labels=key.get("labels", {}),
    )
    for _, doc, path in latest.values():
        for answer in _check_answers(doc, path):
            pair = pairs.get(str(answer.get("pair")))
            if pair is None:
                raise UserError(
                    f"{shown_path(path)} answers pair {answer.get('pair')!r}, which this survey does not have"
                )
            counted = False
            for q in QUESTIONS:
                choice = answer.get(q)
                if choice is None:
                    continue
                if not isinstance(choice, str) or choice not in CHOICES:
                    raise UserError(
                        f"{shown_path(path)}: pair {pair['id']} has answer {choice!r}; expected A, B or tie"
                    )
                _score(result.scores[q], pair["A"], pair["B"], choice)
                counted = True
            result.answered_pairs += counted
    return result


def _score(scores: dict[str, Score], a: str, b: str, choice: str) -> None:
    if choice == "tie":
        scores[a].ties += 1
        scores[b].ties += 1
    else:
        winner, loser = (a, b) if choice == "A" else (b, a)
        scores[winner].wins += 1
        scores[loser].losses += 1
