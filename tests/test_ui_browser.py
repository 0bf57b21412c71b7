"""The app in a real browser: `paraplan ui` on a free 127.0.0.1 port, headless system Chromium via
selenium; the Plan page must show the ranked table and a chart and no exception; screenshots saved."""

from __future__ import annotations

import pytest

from ui import screenshot

REASON = screenshot.browser_available()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.xdist_group("dist")
@pytest.mark.skipif(REASON is not None, reason=f"browser test needs Debian's chromium: {REASON}")
def test_plan_and_detail_pages_render_in_chromium(tmp_path):
    with screenshot.serve(log_path=tmp_path / "server.log") as url, screenshot.chrome() as driver:
        small = "?nodes=1"  # the Plan page with the default model, on one node: a quick search
        screenshot.open_page(driver, f"{url}/{small}", wait_for=('[data-testid="stDataFrame"]',
                                                   '[data-testid="stVegaLiteChart"]'))
        body = driver.find_element("tag name", "body").text
        assert "Ranked plans" in body and "No plan fits" not in body and "1 x 8" in body
        plan_png = screenshot.save_png(driver, tmp_path / "plan.png")
        assert plan_png.stat().st_size > 10_000

        screenshot.open_page(driver, f"{url}/detail{small}", wait_for=('[data-testid="stVegaLiteChart"]',
                                                               '[data-testid="stDownloadButton"]'))
        body = driver.find_element("tag name", "body").text
        assert "Pipeline timeline" in body and "Downloads" in body
        assert screenshot.page_exceptions(driver) == []
        assert screenshot.save_png(driver, tmp_path / "plan_detail.png").stat().st_size > 10_000
