"""Drive the app in a real browser: start `paraplan ui` on a free port, open pages in headless
Chromium (selenium + the system chromedriver), wait for results, check for exceptions, screenshot.

Used by the browser test and to refresh the README's screenshot:

    python -m ui.screenshot docs/img/plan_detail.png --page detail \
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
           "page_exceptions", "save_png", "main"]

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
def serve(*, port: int | None = None, log_path: Path | None = None, timeout_s: float = 90.0) -> Iterator[str]:
    """Run `paraplan ui` on 127.0.0.1 and yield its URL once healthy; always stop it (process group)."""
    port = port or free_port()
    log_path = log_path or Path(tempfile.mkdtemp(prefix="paraplan-ui-")) / "server.log"
    argv = [sys.executable, "-m", "planner.cli", "ui", "--port", str(port)]
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


_WAIT = {
    "plan": ('[data-testid="stDataFrame"]', '[data-testid="stVegaLiteChart"]'),
    "detail": ('[data-testid="stVegaLiteChart"]', '[data-testid="stDownloadButton"]'),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--page", default="detail", choices=sorted(_WAIT))
    parser.add_argument("--query", default="", help="URL query presetting inputs, e.g. 'model=gpt3-13b&nodes=2'")
    parser.add_argument("--height", type=int, default=1700, help="browser window height in pixels")
    args = parser.parse_args(argv)
    reason = browser_available()
    if reason:
        print(f"screenshot: {reason}", file=sys.stderr)
        return 2
    query = f"?{args.query.lstrip('?')}" if args.query else ""
    with serve() as url, chrome(height=args.height) as driver:
        open_page(driver, f"{url}/{'' if args.page == 'plan' else args.page}{query}", wait_for=_WAIT[args.page],
                  timeout_s=600)
        print(save_png(driver, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
