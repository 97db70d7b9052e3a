"""A person's path through the app in a real Chromium: train a token for a few steps, paint
with it, compare it with classic transfer. Each step asserts on what the page shows and leaves
a screenshot in test-artifacts/browser/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, make_artwork

TOKEN = "<bt-style>"
TRAIN_STEPS = 6


@pytest.fixture(scope="module")
def artworks(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("browser-art")
    return [make_artwork(folder / f"art{i}.png", seed=i) for i in range(3)]


def record_texts(page, selector: str, name: str) -> None:
    """Keep every text the element shows from now on (live updates are gone once a run ends)."""
    page.evaluate(
        """([selector, name]) => {
            const el = document.querySelector(selector);
            window[name] = [el.innerText];
            new MutationObserver(() => window[name].push(el.innerText))
                .observe(el, {subtree: true, childList: true, characterData: true});
        }""",
        [selector, name],
    )


def test_train_a_token_for_a_few_steps(page, artworks, artifacts):
    page.locator("#train-artworks input[type=file]").set_input_files([str(p) for p in artworks])
    for p in artworks:
        page.locator("#train-artworks").get_by_text(p.stem, exact=True).wait_for()  # name and suffix are two spans
    page.locator("#train-token textarea").fill(TOKEN)
    page.locator("#train-vectors input").fill("2")
    page.locator("#train-steps input").fill(str(TRAIN_STEPS))
    page.get_by_text("More settings").click()
    page.locator("#train-preview-every input").fill("3")
    page.screenshot(path=artifacts / "1-train-filled.png", full_page=True)
    record_texts(page, "#train-status", "__trainStatus")

    page.locator("#train-start").click()
    page.wait_for_selector('#train-status [data-state="done"]', timeout=180_000)

    status = page.locator("#train-status").inner_text()
    assert f"finished {TOKEN}: step {TRAIN_STEPS}/{TRAIN_STEPS}" in status
    seen = page.evaluate("window.__trainStatus")
    assert any("ETA" in text and "step" in text for text in seen), seen  # the live bar was shown
    assert page.locator('#train-status progress[value="%d"]' % TRAIN_STEPS).count() == 1
    # Previews at steps 0, 3 and 6, each with its caption, as real decoded images.
    page.locator("#train-previews img").first.wait_for()
    assert page.locator("#train-previews img").count() == 3
    for caption in ("step 0", "step 3", "step 6"):
        assert page.locator("#train-previews").get_by_text(caption, exact=True).count() == 1
    assert page.locator("#train-previews img").first.evaluate("img => img.complete && img.naturalWidth") == 128
    # The loss curve was drawn and the embedding is offered for download.
    assert page.locator("#train-loss canvas, #train-loss svg").count() >= 1
    page.locator("#train-downloads").get_by_text("learned_embeds", exact=True).wait_for()
    page.screenshot(path=artifacts / "2-train-done.png", full_page=True)
