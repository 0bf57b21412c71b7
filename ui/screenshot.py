"""Drive the app in a real browser: start `paraplan ui` on a free port, open pages in headless
Chromium (selenium + the system chromedriver), wait for results, check for exceptions, screenshot.

Used by the browser test and to refresh the README's screenshots (every page, `PAGES`):

    python -m ui.screenshot docs/img --all --runs runs
    python -m ui.screenshot docs/img/detail.png --page detail \
        --query "model=llama3-70b&nodes=4&global_batch=256&seq_len=4096"
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHROMIUM", "CHROMEDRIVER", "browser_available", "free_port", "serve", "chrome", "open_page",
           "page_exceptions", "save_png", "wait_for_text", "click_table_row", "PAGES", "main"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars"]


def browser_available() -> str | None:
    """None when Debian's chromium and chromium-driver are installed, else the reason they are not."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (apt-get install -y chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(*, port: int | None = None, log_path: Path | None = None, timeout_s: float = 90.0,
          runs_dir: Path | None = None) -> Iterator[str]:
    """Run `paraplan ui` on 127.0.0.1 (file watcher off; runs kept in `runs_dir` when given) and yield its
    URL once healthy; always stop it (process group)."""
    port = port or free_port()
    log_path = log_path or Path(tempfile.mkdtemp(prefix="paraplan-ui-")) / "server.log"
    argv = [sys.executable, "-m", "planner.cli", "ui", "--address", "127.0.0.1", "--port", str(port)]
    if runs_dir is not None:
        argv += ["--runs", str(runs_dir)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"paraplan ui exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"paraplan ui did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


@contextlib.contextmanager
def chrome(*, width: int = 1500, height: int = 1700) -> Iterator:
    """Headless system Chromium with a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="paraplan-chrome-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def page_exceptions(driver) -> list[str]:  # noqa: ANN001 (selenium WebDriver)
    """Texts of exceptions Streamlit shows in the page."""
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]


def open_page(driver, url: str, *, wait_for: tuple[str, ...], timeout_s: float = 120.0) -> None:  # noqa: ANN001
    """Load `url` and wait until every CSS selector in `wait_for` is present and the script is idle;
    raise AssertionError at once if the page shows an exception."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.monotonic() + timeout_s
    while True:
        errors = page_exceptions(driver)
        if errors:
            raise AssertionError(f"the page at {url} shows an exception: {errors[0][:2000]}")
        present = all(driver.find_elements(By.CSS_SELECTOR, css) for css in wait_for)
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if present and not running:
            break
        if time.monotonic() > deadline:
            missing = [css for css in wait_for if not driver.find_elements(By.CSS_SELECTOR, css)]
            raise TimeoutError(f"{url}: still missing {missing} after {timeout_s:.0f} s")
        time.sleep(0.5)
    time.sleep(1.5)  # let charts finish drawing


def save_png(driver, path: str | os.PathLike[str], *, max_width: int = 1200, colors: int = 128) -> Path:  # noqa: ANN001
    """Screenshot to `path`, scaled to `max_width` and palette-quantized to stay small; written atomically."""
    from io import BytesIO

    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    return path


def wait_for_text(driver, text: str, *, timeout_s: float = 120.0) -> str:  # noqa: ANN001
    """Wait until the page's text contains `text` and the script is idle; the page's text."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout_s
    while True:
        errors = page_exceptions(driver)
        if errors:
            raise AssertionError(f"the page shows an exception: {errors[0][:2000]}")
        body = driver.find_element(By.TAG_NAME, "body").text
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if text in body and not running:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} did not appear within {timeout_s:.0f} s; the page shows: {body[-1500:]}")
        time.sleep(0.5)


def click_table_row(driver, row: int, *, table: int = 0, header_px: int = 35, row_px: int = 35) -> None:  # noqa: ANN001
    """Tick the selection box of `row` (0-based) of the `table`-th st.dataframe (a canvas grid: the
    click lands on the row-marker column at the row's height)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    grid = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')[table]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", grid)
    time.sleep(0.5)
    size = grid.size
    x = -size["width"] / 2 + 20  # offsets from the element's centre (selenium 4)
    y = -size["height"] / 2 + header_px + row_px * row + row_px / 2
    ActionChains(driver).move_to_element_with_offset(grid, int(x), int(y)).pause(0.3).click().perform()


_WAIT = {
    "plan": ('[data-testid="stDataFrame"]', '[data-testid="stVegaLiteChart"]'),
    "detail": ('[data-testid="stVegaLiteChart"]', '[data-testid="stDownloadButton"]'),
    "compare": ('[data-testid="stDataFrame"]', '[data-testid="stVegaLiteChart"]'),
    "whatif": ('[data-testid="stDataFrame"]', '[data-testid="stVegaLiteChart"]'),
    "run": ('[data-testid="stButton"]',),
    "calibrate": ('[data-testid="stMetric"]', '[data-testid="stVegaLiteChart"]'),
}
PAGES = {  # page -> (URL query, window height) of the README's screenshots
    "plan": ("model=llama3-70b&nodes=64&global_batch=1024&seq_len=8192", 2000),
    "detail": ("model=llama3-70b&nodes=4&global_batch=256&seq_len=4096", 2600),
    "compare": ("model=llama3-70b&nodes=4&global_batch=256&seq_len=4096&compare=1,2", 2300),
    "whatif": ("model=llama3-70b&nodes=4&global_batch=256&seq_len=4096&vary=gpu"
               "&values=h100-sxm,a100-80gb,h200,b200", 2300),
    "run": ("", 3600),
    "calibrate": ("", 2000),
}


def _page_url(url: str, page: str, query: str) -> str:
    return f"{url}/{'' if page == 'plan' else page}" + (f"?{query.lstrip('?')}" if query else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write (with --all: the folder for <page>.png)")
    parser.add_argument("--page", default="detail", choices=sorted(_WAIT))
    parser.add_argument("--all", action="store_true", help="every page, with the README's queries (PAGES)")
    parser.add_argument("--query", default="", help="URL query presetting inputs, e.g. 'model=gpt3-13b&nodes=2'")
    parser.add_argument("--height", type=int, default=1700, help="browser window height in pixels")
    parser.add_argument("--runs", default=None, help="runs folder the app lists (the Run page's history)")
    args = parser.parse_args(argv)
    reason = browser_available()
    if reason:
        print(f"screenshot: {reason}", file=sys.stderr)
        return 2
    shots = ({page: (query, height, Path(args.out) / f"{page}.png") for page, (query, height) in PAGES.items()}
             if args.all else {args.page: (args.query, args.height, Path(args.out))})
    with serve(runs_dir=Path(args.runs).resolve() if args.runs else None) as url:
        for page, (query, height, out) in shots.items():
            with chrome(height=height) as driver:
                open_page(driver, _page_url(url, page, query), wait_for=_WAIT[page], timeout_s=600)
                print(save_png(driver, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
