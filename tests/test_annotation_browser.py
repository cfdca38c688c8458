"""The ranking page in a real browser (Debian chromium through playwright; `make test` installs chromium)."""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from annotation_helpers import LiveServer, tell_tale_gallery
from PIL import Image

from annotation_app.config import AppConfig
from annotation_app.store import Store
from annotation_app.toy_gallery import TOY_GENERATORS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 20_000  # two slow, shared cores: playwright's 5 s default is too short
# Set ITERCOMP_SCREENSHOT=docs/annotation_screenshot.png to refresh the README's picture.
SCREENSHOT_ENV = "ITERCOMP_SCREENSHOT"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)"
)


def _wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_log_in_rank_submit_next(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    records = tell_tale_gallery(tmp_path / "gallery", prompts_per_aspect=2)
    tell_tales = [*TOY_GENERATORS, *(r.image_id for r in records)]
    store = Store(tmp_path / "db.sqlite")
    store.add_user("alice", "correct horse")
    server = LiveServer(store, AppConfig(db=store.url, gallery_run=tmp_path / "gallery", overlap=1))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(server.url + "/", timeout=TIMEOUT_MS)

            # A wrong password is refused and nothing of the ranking page shows.
            page.get_by_label("username").fill("alice")
            page.get_by_label("password").fill("wrong horse")
            page.get_by_role("button", name="Login").click()
            expect(page.get_by_text("Incorrect Credentials")).to_be_visible()
            expect(page.locator("#submit-ranking")).to_have_count(0)

            # The form clears the username after a failed attempt.
            page.get_by_label("username").fill("alice")
            page.get_by_label("password").fill("correct horse")
            page.get_by_role("button", name="Login").click()
            prompt = page.locator("#prompt-text")
            expect(prompt).to_contain_text("“")
            first_prompt = prompt.inner_text()
            expect(page.locator("#guideline")).to_contain_text("Judge")
            expect(page.locator("#progress")).to_contain_text("you: 0 done")
            slots = page.locator(".rank-control:visible")
            n = slots.count()
            assert n == 4  # the toy gallery has four generators

            # Blind: image URLs and bytes do not name the generator (the gallery's PNGs carry a text chunk that does).
            expect(page.locator(".candidate img")).to_have_count(4)
            for src in page.locator(".candidate img").evaluate_all("images => images.map(i => i.src)"):
                assert not [t for t in tell_tales if t in src], src
                served = page.request.get(src)
                assert served.ok and not [t for t in tell_tales if t.encode() in served.body()]
                with Image.open(io.BytesIO(served.body())) as image:
                    assert image.text == {}

            # Invalid: two images share rank 1 and two have none -> refused with the reason, nothing stored.
            page.locator("#rank-A input[value='1']").check()
            page.locator("#rank-B input[value='1']").check()
            page.locator("#submit-ranking").click()
            expect(page.get_by_text(re.compile("Give every image a rank: C, D have none yet"))).to_be_visible()
            assert store.count_rankings() == 0

            # Valid, by keyboard: letters give ranks best to worst, Enter submits.
            page.locator("#rank-B input[value='2']").check()
            page.locator("#rank-C input[value='3']").check()
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("d")
            expect(page.locator("#rank-D input[value='4']")).to_be_checked()
            page.get_by_test_id("toast-close").first.click()  # the refusal's toast, out of the picture
            expect(page.get_by_test_id("toast-body")).to_have_count(0)
            screenshot = tmp_path / "ranking_page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            page.keyboard.press("Enter")

            assert _wait_for(lambda: store.count_rankings() == 1), "the ranking never reached the database"
            stored = store.stored_rankings()[0]
            shown = stored.ranking.shown_order
            assert stored.ranking.annotator == "alice"
            assert stored.ranking.order == shown  # A, B, C, D were ranked 1, 2, 3, 4
            assert stored.ranking.seconds_spent > 0

            # The next task loads with every control cleared.
            expect(prompt).not_to_have_text(first_prompt)
            expect(page.locator("#progress")).to_contain_text("you: 1 done")
            expect(page.locator(".rank-control input:checked")).to_have_count(0)
            expect(page.locator(".rank-control:visible")).to_have_count(4)

            # Logging out ends the session: the login form comes back, and a reload does not skip it.
            page.get_by_text("Log out", exact=True).click()
            expect(page.get_by_role("button", name="Login")).to_be_visible()
            page.reload()
            expect(page.get_by_role("button", name="Login")).to_be_visible()
            browser.close()
    finally:
        server.stop()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, Path(os.environ[SCREENSHOT_ENV]))
