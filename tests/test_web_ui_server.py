"""The chat page's serving (no browser here; tests/test_web_ui_browser.py drives it): /ui only with --ui, open
without the key and while the model loads, its security headers, every file it names shipped as package data, and
`mistralpy ui` opening it in the browser ($BROWSER) once the model is ready."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from starlette.testclient import TestClient

from mistralpy.config import EngineConfig
from mistralpy.engine.async_engine import AsyncEngine
from mistralpy.server.app import create_app

from .server_process import free_port

ROOT = Path(__file__).resolve().parent.parent
UI_PACKAGE = ROOT / "mistralpy" / "server" / "ui"
STATIC = UI_PACKAGE / "static"


@contextmanager
def loading_client(**kwargs) -> Iterator[TestClient]:
    """A client of an app whose model never loads: only what needs no engine answers."""
    release = threading.Event()

    def loader():
        release.wait(30)
        raise RuntimeError("not loaded in this test")

    with TestClient(create_app(loader, "m", **kwargs)) as client:
        try:
            yield client
        finally:
            release.set()  # before the app's shutdown, which waits for the loader's thread


def test_ui_is_served_only_with_the_flag():
    with loading_client(ui=False) as client:
        assert client.get("/ui/").status_code == 503  # no such route: the loading server's answer to everything
    with loading_client(ui=True, api_key="sk-k") as client:
        r = client.get("/ui", follow_redirects=False)
        assert r.status_code == 308 and r.headers["location"] == "/ui/"
        page = client.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="app.js"></script>' in page.text
        script = client.get("/ui/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert client.get("/ui/missing.js").status_code == 404
        assert client.get("/ui/%2e%2e/%2e%2e/pyproject.toml").status_code == 404  # no way out of the folder
        # the API itself still needs the key, then the model
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sk-k"}).status_code == 503
        assert client.get("/uix").status_code == 401  # only /ui and what is under it are open


def test_without_ui_flag_there_is_no_page(tiny_llama):
    engine = AsyncEngine.from_config(EngineConfig(model=str(tiny_llama[2]), dtype="float32"))
    with TestClient(create_app(engine, "m")) as client:
        assert client.get("/v1/models").status_code == 200
        assert client.get("/ui/").status_code == 404
        assert client.get("/ui", follow_redirects=False).status_code == 404


def test_security_headers_forbid_inline_and_foreign_code():
    with loading_client(ui=True) as client:
        headers = client.get("/ui/").headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def _referenced_files() -> set[str]:
    """Every file the page loads: index.html's src/href and the modules' relative imports."""
    names = set(re.findall(r'(?:src|href)="([^"#:]+)"', (STATIC / "index.html").read_text()))
    for module in STATIC.glob("*.js"):
        names |= set(re.findall(r'from "\./([^"]+)"', module.read_text()))
    return names


def test_every_file_the_page_loads_is_shipped_as_package_data():
    referenced = _referenced_files()
    assert {"app.js", "app.css", "vendor/marked.umd.js", "vendor/purify.min.js", "vendor/highlight.min.js"} <= (
        referenced
    )
    # the package-data line (its TOML array of strings is JSON), globbed as setuptools globs it: in the package
    line = re.search(r'^"mistralpy\.server\.ui" = (\[.*\])$', (ROOT / "pyproject.toml").read_text(), re.M)
    shipped = {p.relative_to(STATIC).as_posix() for pattern in json.loads(line[1]) for p in UI_PACKAGE.glob(pattern)}
    on_disk = {p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()}
    assert referenced <= on_disk and shipped == on_disk
    for vendored in ("marked", "dompurify", "highlightjs"):  # each library with its licence
        assert list((STATIC / "vendor").glob(f"LICENSE-{vendored}.*"))


def test_ui_command_opens_the_page_when_the_model_is_ready(tiny_llama, tmp_path):
    opened, browser, log = tmp_path / "opened.txt", tmp_path / "browser.py", tmp_path / "server.log"
    # webbrowser runs $BROWSER with the page's URL; this one notes it and what /health answered at that moment
    browser.write_text(
        f"#!{sys.executable}\nimport sys, urllib.request\nurl = sys.argv[1]\n"
        "health = urllib.request.urlopen(url.removesuffix('/ui/') + '/health').status\n"
        f"open({str(opened)!r}, 'a').write(f'{{url}} {{health}}\\n')\n"
    )
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    port = free_port()
    args = [sys.executable, "-m", "mistralpy", "ui", "-m", str(tiny_llama[2]), "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(args, env={**os.environ, "BROWSER": str(browser)}, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not opened.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/ui/"
        assert opened.exists() and opened.read_text().split() == [url, "200"], log.read_text()  # opened once ready
        assert httpx.get(url).status_code == 200
        assert f"the chat page is at {url}" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_ui_command_needs_a_fixed_port():
    out = subprocess.run([sys.executable, "-m", "mistralpy", "ui", "--port", "0", "--no-browser"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "needs a fixed --port" in out.stderr
