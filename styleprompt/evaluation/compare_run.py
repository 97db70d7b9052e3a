"""A comparison's run folder: every file name in it, its manifest (compare.json) written and read
back, the survey's files beside it, and what `--overwrite` may remove.

Why one owner: `compare` writes the folder, the report links into it, `survey` and
`survey-results` read it back, the app shows it and `--overwrite` clears it. When each of them
spelled the names, a new file was four edits and one forgotten list (what `--overwrite`
removes) mixed an old run's pictures into a new one. Here a new file is one edit.

    OUTPUT/
      compare.json               the manifest: methods, labels, statuses, cells (paths relative)
      grid.png  metrics.csv  metrics.md  report.html
      inputs/content-NN.png      the contents as the methods saw them
      inputs/style-NN.png        copies of the style images (384 px)
      images/NN-name/METHOD.png  each output, with its parameters in PNG text
      images/NN-name/METHOD.reference.png   what a text->image method's style gain is measured over
      survey.html  survey-key.json  survey-results.json   (styleprompt survey / survey-results)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from styleprompt.evaluation.report import Cell
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import read_json, write_text_atomic

MANIFEST_FORMAT = "styleprompt-compare"
MANIFEST_VERSION = 1


class CompareRun:
    """The layout of one comparison folder (`root`)."""

    MANIFEST = "compare.json"
    GRID = "grid.png"
    CSV = "metrics.csv"
    MARKDOWN = "metrics.md"
    HTML = "report.html"
    INPUTS = "inputs"
    IMAGES = "images"
    SURVEY_PAGE = "survey.html"
    SURVEY_KEY = "survey-key.json"
    SURVEY_RESULTS = "survey-results.json"
    # What a run of `compare` (and the survey on it) writes directly in its folder: what
    # `--overwrite` removes. Anything else there (the user's notes) stays.
    OWN = (INPUTS, IMAGES, GRID, CSV, MARKDOWN, HTML, MANIFEST, SURVEY_PAGE, SURVEY_KEY, SURVEY_RESULTS)
    # The run's own JSON files: never taken for a rater's answers file.
    NOT_ANSWERS = (SURVEY_KEY, MANIFEST, SURVEY_RESULTS)

    def __init__(self, root: str | Path, manifest_name: str | None = None):
        self.root = Path(root)
        self.manifest_name = manifest_name or self.MANIFEST  # another name: a manifest given as a file

    # -- names ------------------------------------------------------------------------------------

    @property
    def manifest(self) -> Path:
        return self.root / self.manifest_name

    @property
    def grid(self) -> Path:
        return self.root / self.GRID

    @property
    def csv(self) -> Path:
        return self.root / self.CSV

    @property
    def markdown(self) -> Path:
        return self.root / self.MARKDOWN

    @property
    def html(self) -> Path:
        return self.root / self.HTML

    @property
    def survey_page(self) -> Path:
        return self.root / self.SURVEY_PAGE

    @property
    def survey_key(self) -> Path:
        return self.root / self.SURVEY_KEY

    def content_input(self, index: int) -> Path:
        """The index-th content image (0-based) as the methods saw it."""
        return self.root / self.INPUTS / f"content-{index + 1:02d}.png"

    def style_input(self, index: int) -> Path:
        return self.root / self.INPUTS / f"style-{index + 1:02d}.png"

    def output_image(self, content_index: int, content_name: str, method: str) -> Path:
        return self.root / self.IMAGES / f"{content_index + 1:02d}-{content_name}" / f"{method}.png"

    def reference_image(self, content_index: int, content_name: str, method: str) -> Path:
        """The picture a method without a content input started from (its style gain's baseline)."""
        return self.output_image(content_index, content_name, method).with_suffix(".reference.png")

    def relative(self, path: Path | None) -> str | None:
        return None if path is None else str(Path(path).relative_to(self.root))

    # -- the folder ---------------------------------------------------------------------------------

    def locked(self) -> Any:
        """This folder's run lock (`run_folder_lock`, re-entrant in one thread): one comparison at a time
        writes it, and `--overwrite` never clears a running one's files. Creates the folder."""
        from styleprompt.plumbing.run_folder import run_folder_lock

        return run_folder_lock(self.root, "comparison")

    def claim(self, *, overwrite: bool) -> Path:
        """Check the folder before a run writes it (new or empty; with `overwrite`, this run's files removed)."""
        from styleprompt.plumbing.run_folder import claim_run_folder

        return claim_run_folder(self.root, self.OWN, overwrite=overwrite)

    # -- the manifest -------------------------------------------------------------------------------

    def write_manifest(
        self,
        *,
        status: dict[str, str],
        labels: dict[str, str],
        cells: Sequence[Cell],
        contents: Sequence[str],
        style_files: Sequence[Path],
        token: str | None,
        embedding: str | None,
        seed: int,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """compare.json: what the survey and later tools read back (paths relative to the run)."""
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "methods": list(status),
            "labels": labels,
            "status": status,
            "token": token or None,
            "embedding": embedding or None,
            "seed": seed,
            "contents": [
                {
                    "name": name,
                    "class": next((c.cls for c in cells if c.content_index == k), ""),
                    "image": self.relative(self.content_input(k)),
                }
                for k, name in enumerate(contents)
            ],
            "styles": [self.relative(p) for p in style_files],
            "cells": [
                {
                    "content_index": c.content_index,
                    "method": c.method,
                    "status": c.status,
                    "image": self.relative(c.image),
                    "seconds": c.seconds,
                    "peak_mib": c.peak_mib,
                    "memory_measure": c.memory_kind,
                    "method_weights": c.method_weights,
                    "metrics": {
                        k: {"value": v.value, "better": v.better, "weights": v.weights} for k, v in c.metrics.items()
                    },
                    "unavailable": c.unavailable,
                }
                for c in cells
            ],
            **(extra or {}),
        }
        return write_text_atomic(self.manifest, json.dumps(manifest, indent=2, default=str))

    def read_manifest(self) -> dict:
        """This run's compare.json, checked enough that the survey can trust its paths."""
        path = self.manifest
        if not path.is_file():
            raise UserError(
                f"{self.root} is not a comparison folder (no {self.MANIFEST}); run `styleprompt compare` first"
            )
        data = read_json(path, "comparison manifest")  # a plain file, nesting bounded: one line otherwise
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise UserError(f"{path} is not a styleprompt comparison manifest")
        _check_manifest(data, path)
        return data


def read_manifest(folder: str | Path) -> dict:
    """A compare run's compare.json (the folder, or the manifest file itself)."""
    root = Path(folder)
    return (CompareRun(root.parent, root.name) if root.is_file() else CompareRun(root)).read_manifest()


def _check_manifest(data: dict, path: Path) -> None:
    """The fields the survey reads, with the right types, and every image inside the run folder.

    Why the folder rule: survey.html embeds these pictures and is mailed to raters, so a crafted
    compare.json naming `/home/me/.ssh/id_rsa.png` or `../../private.jpg` must not put that file
    in the page. Paths are taken relative to the folder, resolved (links followed), and kept
    only when they stay inside it.
    """
    root = path.parent.resolve()
    bad = f"{path} is damaged or was edited"
    cells, styles, labels = data.get("cells", []), data.get("styles", []), data.get("labels", {})
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise UserError(f"{bad}: 'cells' is not a list of objects")
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise UserError(f"{bad}: 'styles' is not a list of file names")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise UserError(f"{bad}: 'labels' is not an object of names")
    for cell in cells:
        index, method, image = cell.get("content_index"), cell.get("method"), cell.get("image")
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(method, str):
            raise UserError(f"{bad}: a cell's content_index or method is missing or of the wrong type")
        if not isinstance(cell.get("status", ""), str) or not (image is None or isinstance(image, str)):
            raise UserError(f"{bad}: a cell's status or image is of the wrong type")
    for name in styles + [c["image"] for c in cells if c.get("image")]:
        target = (root / name).resolve()
        if not target.is_relative_to(root):
            raise UserError(
                f"{path} names the image {name!r}, which is outside its run folder {root}; "
                "only the run's own pictures are read"
            )
        if not target.is_file():
            raise UserError(f"{path} names the image {name!r}, which is not in {root}; was the folder moved in parts?")
