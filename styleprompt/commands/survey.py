"""`styleprompt survey DIR`: a blind A/B preference page from a `styleprompt compare` run."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "survey",
        help="make a blind preference page (A/B pairs) from a compare run",
        description="Writes survey.html (open it in any browser; answers are saved as a JSON download) and "
        "survey-key.json (which method was A and B; keep it to yourself). Tally with `styleprompt survey-results`.",
    )
    parser.add_argument("folder", help="the --output folder of `styleprompt compare`")
    parser.add_argument("--output", default=None, help="where to write the page (default: FOLDER/survey.html)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the pairs and sides (default: %(default)s)")
    parser.add_argument("--title", default="Which carries the style better?", help="page title")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from styleprompt.evaluation.survey import build_survey

    page, key = build_survey(args.folder, output=args.output, seed=args.seed, title=args.title)
    print(f"wrote {page} (send this page to raters; it needs no server and uploads nothing)")
    print(f"wrote {key} (the answer key: keep it; raters must not see it)")
    print(
        f"raters press 'Save answers' and send back the JSON file; then run: styleprompt survey-results {key} ANSWERS.json ..."
    )
    return 0
