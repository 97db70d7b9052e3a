"""Prompt templates for textual inversion.

Why these: the "a painting in the style of {}" family is the style list of the original textual
inversion paper and of diffusers' example; "a {} style of a {}" over many classes is what a user
types at generation time ("a <S> style of a lighthouse"), so training on it makes the token
compose with arbitrary subjects instead of memorising the training pictures' content.
`{token}` is the placeholder, `{class}` a subject, `[filewords]` the image's caption file.
"""

from __future__ import annotations

import torch

STYLE_TEMPLATES: list[str] = [
    "a painting in the style of {token}",
    "a rendering in the style of {token}",
    "a cropped painting in the style of {token}",
    "the painting in the style of {token}",
    "a clean painting in the style of {token}",
    "a dirty painting in the style of {token}",
    "a dark painting in the style of {token}",
    "a picture in the style of {token}",
    "a cool painting in the style of {token}",
    "a close-up painting in the style of {token}",
    "a bright painting in the style of {token}",
    "a good painting in the style of {token}",
    "a rendition in the style of {token}",
    "a nice painting in the style of {token}",
    "a small painting in the style of {token}",
    "a weird painting in the style of {token}",
    "a large painting in the style of {token}",
    "a {token} style of a {class}",
    "a {token} style painting of a {class}",
    "a {class} in the style of {token}",
    "an artwork of a {class}, {token} style",
]

# With a caption file beside an image: its words describe the content, the token the style.
FILEWORDS_TEMPLATES: list[str] = [
    "a painting of [filewords] in the style of {token}",
    "a {token} style of [filewords]",
    "[filewords], in the style of {token}",
]

OBJECT_TEMPLATES: list[str] = [
    "a photo of a {token}",
    "a rendering of a {token}",
    "a cropped photo of the {token}",
    "the photo of a {token}",
    "a photo of a clean {token}",
    "a close-up photo of a {token}",
    "a good photo of the {token}",
]

CLASS_NAMES: list[str] = [
    "lighthouse",
    "city",
    "house",
    "tree",
    "dog",
    "cat",
    "woman",
    "man",
    "boat",
    "bridge",
    "mountain",
    "river",
    "street",
    "flower",
    "bird",
    "horse",
    "car",
    "castle",
    "forest",
    "portrait",
    "landscape",
    "still life",
    "harbor",
    "village",
    "church",
    "garden",
    "cafe",
    "train",
]

DEFAULT_PREVIEW_PROMPT = "a {token} style of a lighthouse"


def fill(template: str, token: str, cls: str | None = None, filewords: str | None = None) -> str:
    """Fill one template; `cls` defaults to "picture" when the template asks for a class."""
    text = template.replace("{token}", token).replace("{class}", cls or "picture")
    return text.replace("[filewords]", filewords or "a picture")


class PromptSampler:
    """Draws a training prompt for an image from the templates with a seeded generator."""

    def __init__(self, property: str = "style", classes: list[str] | None = None):
        if property not in ("style", "object"):
            raise ValueError(f"unknown learnable property {property!r}")
        self.templates = STYLE_TEMPLATES if property == "style" else OBJECT_TEMPLATES
        self.classes = classes or CLASS_NAMES

    def sample(self, generator: torch.Generator, token: str, filewords: str | None = None) -> str:
        """Draws from the training run's own generator, so a resumed run draws the same prompts.

        With a caption, `{class}` names what the picture shows (the caption) rather than a random
        class: a prompt that contradicts the picture ("a <S> style of a boat" on a house) makes
        the token absorb the picture's content to explain it, which is what a style must not do.
        For the same reason a captioned picture never gets a template that leaves its content
        unnamed ("a painting in the style of <S>"), as in A1111's style_filewords templates.
        """
        if filewords:
            pool = [t for t in self.templates if "{class}" in t] + FILEWORDS_TEMPLATES
        else:
            pool = self.templates
        template = pool[int(torch.randint(len(pool), (1,), generator=generator))]
        cls = self.classes[int(torch.randint(len(self.classes), (1,), generator=generator))]
        return fill(template, token, filewords or cls, filewords)
