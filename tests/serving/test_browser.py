"""The web page in a real browser: Playwright drives Debian's chromium against a live server.

Needs ``playwright`` (in the test extra) and a chromium binary on PATH; Playwright's own browser
download is not used, so no network is needed at test time. On Debian/Ubuntu:
``apt-get install chromium``. Skipped, saying so, where either is missing.
"""

from __future__ import annotations

import re
import shutil

import pytest

from captioner.serving.app import create_app
from captioner.serving.settings import ServerSettings


def chromium_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Debian chromium not installed: apt-get install chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                                  args=["--no-sandbox", "--disable-gpu"])
        except Exception as error:  # e.g. a chromium too old for this Playwright
            pytest.skip(f"cannot start {executable} under Playwright: {str(error).splitlines()[0]}")
        yield launched
        launched.close()


def test_uploading_a_photo_on_the_page_shows_its_caption_and_word_heatmaps(
    browser, tiny_captioner, serve_in_thread, make_jpeg, tmp_path
):
    from playwright.sync_api import expect

    photo = tmp_path / "stripes.jpg"
    photo.write_bytes(make_jpeg((240, 160)))
    app = create_app(tiny_captioner, ServerSettings())
    with serve_in_thread(app) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        assert page.get_by_label("Choose a photo").count() == 1
        page.get_by_label("Choose a photo").set_input_files(str(photo))

        caption = page.locator("#caption")
        # Locator waits, not wait_for_function: the page's CSP forbids the eval that one uses.
        expect(caption).to_have_text(re.compile(r"\w"), timeout=30_000)
        text = caption.text_content()
        (expected,) = tiny_captioner.caption([photo], beam_size=3)
        assert text == expected.caption
        assert page.locator("#photo").get_attribute("alt") == text  # the caption becomes the alt text
        assert text in page.locator("#status").text_content()

        words = page.locator("#words button")
        assert words.count() == len(expected.words)
        words.nth(0).hover()
        heatmap = page.locator("#heatmap")
        assert heatmap.get_attribute("data-word") == expected.words[0]
        assert words.nth(0).get_attribute("aria-pressed") == "true"
        shaded = page.evaluate("""() => {
            const canvas = document.getElementById('heatmap');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
            return {painted, total: pixels.length / 4, width: canvas.width};
        }""")
        assert shaded["width"] > 1 and shaded["painted"] > 0.2 * shaded["total"], shaded

        # Keyboard: Tab onto the last word shows its map; Escape clears it.
        words.nth(len(expected.words) - 1).focus()
        assert heatmap.get_attribute("data-word") == expected.words[-1]
        page.keyboard.press("Escape")
        assert heatmap.get_attribute("data-word") == ""

        # Guidance off: the request asks for the decoder alone (this model has no classifier, so
        # the caption is the same and no labels are shown).
        assert page.get_by_label("Name what the image classifier recognises").is_checked()
        page.get_by_label("Name what the image classifier recognises").uncheck()
        again = tmp_path / "stripes_again.jpg"  # the same file twice would not fire a change
        again.write_bytes(photo.read_bytes())
        with page.expect_request(lambda request: "/caption?" in request.url) as sent:
            page.get_by_label("Choose a photo").set_input_files(str(again))
        assert "guidance=false" in sent.value.url
        expect(caption).to_have_text(text, timeout=30_000)
        assert page.locator("#labels").is_hidden()

        # A file that is not a picture gets the server's reason in the alert region.
        bad = tmp_path / "notes.jpg"
        bad.write_text("just text")
        page.get_by_label("Choose a photo").set_input_files(str(bad))
        expect(page.locator("#error")).to_contain_text("not an image", timeout=30_000)
        assert errors == []
        page.close()
