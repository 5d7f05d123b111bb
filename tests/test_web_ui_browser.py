"""The chat page in a real headless browser (Debian's chromium driven by Playwright) against a live `mistralpy serve
--ui --api-key` on the embedded model: the key prompt, a streamed answer equal to the API's own, Stop aborting the
server's request, conversations surviving a reload, settings and JSON mode in the request, hostile Markdown made
harmless, labels and keyboard, and a phone-width layout. A missing browser fails these tests: they never skip."""

from __future__ import annotations

import shutil
import signal
import time

import httpx
import pytest

from .server_process import KEY, ServerProcess, metrics
from .web_ui_page import MODEL, api_answer, fake_answer, open_chat, send, stored, wait_answer

STORY = "Write a long story about a dragon."
INSTALL = "install it as the README's test command does: apt-get install -y chromium; pip install playwright"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed: {INSTALL}")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(f"the UI tests need Debian's chromium, and it is not on PATH: {INSTALL}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium)  # never `playwright install`
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui_server():
    """The embedded model (float32: the same request twice gives the same tokens) with the page and an API key."""
    args = ("--ui", "--api-key", KEY, "--served-model-name", MODEL, "--dtype", "float32", "--max-num-seqs", "4")
    server = ServerProcess(*args)
    try:
        yield server.wait_ready()
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    ctx.set_default_timeout(30_000)
    yield ctx
    ctx.close()


def test_key_prompt_and_a_streamed_answer_equal_to_the_apis(context, ui_server, tmp_path):
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{ui_server.url}/ui/")
    expect(page.locator("#key-dialog")).to_be_visible()  # the server answered 401: the page asks for the key
    expect(page.locator("#key-reason")).to_contain_text("needs a valid API key (401")
    page.fill("#api-key", "sk-wrong")
    page.click("#save-key")
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("401")
    page.fill("#api-key", KEY)
    page.click("#save-key")
    expect(page.locator("#key-dialog")).to_be_hidden()
    listed = httpx.get(f"{ui_server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    options = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert options == [m["id"] for m in listed["data"]] == [MODEL]
    page.evaluate("""() => {  // the answer's text as the page shows it, at each change while it streams
        window.seen = [];
        new MutationObserver(() => {
            const busy = document.querySelector('.msg.assistant[aria-busy="true"] .content');
            if (busy) window.seen.push(busy.textContent.length);
        }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
    }""")
    send(page, "Tell me about the sea.", temperature="0", max_tokens="40")
    stats = wait_answer(page)
    assert len({n for n in page.evaluate("window.seen") if n > 0}) >= 2  # shown in pieces before it ended
    [conversation] = stored(page)
    user, answer = conversation["messages"]
    expected = api_answer(ui_server, [{"role": "user", "content": "Tell me about the sea."}], 40)
    assert answer["content"] == expected["choices"][0]["message"]["content"]
    assert stats.startswith(f"{MODEL} · {expected['usage']['completion_tokens']} tokens · ")
    rate = float(stats.split(" · ")[2].removesuffix(" tok/s"))
    assert rate > 0 and "first token after" in stats
    assert page.get_attribute(".msg.assistant", "aria-busy") == "false"
    page.screenshot(path=str(tmp_path / "ui.png"))
    assert (tmp_path / "ui.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stop_aborts_the_request_and_frees_its_kv(context, ui_server):
    from playwright.sync_api import expect

    page = open_chat(context, ui_server)
    before = metrics(ui_server)['request_finished_total{reason="abort"}']
    send(page, STORY, temperature="0", max_tokens="4000")
    expect(page.locator(".msg.assistant .content").last).not_to_be_empty()
    assert metrics(ui_server)["num_requests_running"] == 1
    page.click("#stop")
    assert wait_answer(page).startswith("Stopped after ")
    expect(page.locator("#status")).to_have_text("Stopped.")
    deadline = time.monotonic() + 10
    while (m := metrics(ui_server))['request_finished_total{reason="abort"}'] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m['request_finished_total{reason="abort"}'] == before + 1
    assert m["num_requests_running"] == 0 and m["kv_cache_usage_perc"] == 0
    assert stored(page)[0]["messages"][1]["content"]  # the partial answer stays in the conversation
    expect(page.locator("#send")).to_be_enabled()


def test_conversations_survive_a_reload(context, ui_server):
    from playwright.sync_api import expect

    page = open_chat(context, ui_server)
    send(page, "First question", max_tokens="4")
    wait_answer(page)
    page.click("#new-chat")
    send(page, "Second question", max_tokens="4")
    wait_answer(page)
    first_answer = stored(page)[0]["messages"][1]["content"]
    page.reload()  # the key lives in sessionStorage: no prompt in the same tab
    titles = page.locator("#conversation-list .open")
    expect(titles).to_have_text(["Second question", "First question"])  # the latest first
    expect(page.locator("#conversation-list .open[aria-current='true']")).to_have_text("Second question")
    page.click("text=First question")
    expect(page.locator(".msg.user .content")).to_have_text(["First question"])
    expect(page.locator(".msg.assistant .stats")).to_contain_text(["4 tokens"])
    # the page renders the answer as markdown (runs of spaces collapse, a leading "1." becomes a list's number)
    shown = page.locator(".msg.assistant .content").inner_text().split()
    assert shown and set(shown) <= set(first_answer.split())
    page.click("[aria-label='Delete conversation: First question']")
    page.reload()
    expect(titles).to_have_text(["Second question"])
    assert [c["title"] for c in stored(page)] == ["Second question"]


def test_settings_and_json_mode_go_into_the_request(context, ui_server):
    from playwright.sync_api import expect

    page = open_chat(context, ui_server)
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    page.fill("#system", "Answer in JSON.")
    page.check("#json")
    send(page, "Give me a user record.", temperature="0.5", top_p="0.9", max_tokens="24", seed="7")
    wait_answer(page)
    assert sent == [{
        "messages": [{"role": "system", "content": "Answer in JSON."},
                     {"role": "user", "content": "Give me a user record."}],
        "stream": True, "stream_options": {"include_usage": True}, "model": MODEL,
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 24, "seed": 7, "response_format": {"type": "json_object"},
    }]  # fmt: skip
    answer = page.locator(".msg.assistant pre code.language-json")  # JSON mode's answer: one highlighted block
    expect(answer).to_have_class("language-json hljs")
    assert answer.inner_text().lstrip().startswith("{")
    page.fill("#max_tokens", "0")  # the server's 400 is shown, and the message goes back into the box
    send(page, "Again")
    expect(page.locator("#status")).to_contain_text("Not sent: Error 400")
    expect(page.locator("#message")).to_have_value("Again")


def test_model_picker_lists_every_model_and_sends_the_pick(context, ui_server):
    """Several models (the server lists one here: its list is answered by the browser with two, after a 503)."""
    from playwright.sync_api import expect

    page = context.new_page()
    listed = {"object": "list", "data": [{"id": MODEL, "object": "model"}, {"id": "second", "object": "model"}]}
    loading = {"error": {"message": "the model is still loading; retry shortly", "type": "server_error"}}
    answers = iter([{"status": 503, "json": loading}])  # first as a server still loading its model answers

    page.route("**/v1/models", lambda route: route.fulfill(**next(answers, {"json": listed})))
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    fake_answer(page, "Hello.")
    page.goto(f"{ui_server.url}/ui/")
    expect(page.locator("#status")).to_have_text("The model is loading…")
    expect(page.locator("#model option")).to_have_text([MODEL, "second"])  # asked again a second later
    expect(page.locator("#status")).to_have_text("")
    page.select_option("#model", "second")
    send(page, "Hi")
    assert wait_answer(page).startswith("second · 3 tokens")
    page.reload()  # the pick is remembered
    expect(page.locator("#model")).to_have_value("second")
    assert [body["model"] for body in sent] == ["second"]


HOSTILE = """# Title

```python
def f():
    return 1
```

<img src=x onerror="window.pwned = 1"><script>window.pwned = 2</script>
[click](javascript:window.pwned=3) <iframe src="javascript:window.pwned=4"></iframe>
<a href="https://example.com" onclick="window.pwned=5">out</a>
"""


def test_markdown_is_rendered_and_hostile_html_is_not(context, ui_server):
    page = open_chat(context, ui_server)
    fake_answer(page, HOSTILE)
    send(page, "anything")
    wait_answer(page)
    content = page.locator(".msg.assistant .content")
    assert content.locator("h1").inner_text() == "Title"
    assert content.locator("pre code.language-python .hljs-keyword").first.inner_text() == "def"
    html = content.inner_html()
    for bad in ("onerror", "<script", "javascript:", "<iframe", "onclick"):
        assert bad not in html
    page.click("text=click")
    assert page.evaluate("window.pwned") is None
    assert content.locator("a[href='https://example.com']").get_attribute("rel") == "noopener noreferrer"


def test_labels_and_keyboard(context, ui_server):
    from playwright.sync_api import expect

    page = open_chat(context, ui_server)
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.id)""")
    assert unlabelled == []
    assert page.get_attribute("#transcript", "aria-live") == "polite"
    page.focus("#message")
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    page.keyboard.type("line two")
    expect(page.locator("#message")).to_have_value("line one\nline two")
    assert page.locator(".msg").count() == 0
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    page.fill("#max_tokens", "4000")
    page.focus("#message")
    page.keyboard.press("Enter")
    expect(page.locator(".msg.user .content")).to_have_text(["line one\nline two"])
    expect(page.locator(".msg.assistant .content")).not_to_be_empty()
    page.keyboard.press("Escape")  # stops the answer, as the Stop button does
    assert wait_answer(page).startswith("Stopped after ")


def test_phone_width_has_no_horizontal_scroll(browser, ui_server, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    try:
        page = open_chat(context, ui_server)
        fake_answer(page, "```\n" + "x = 1  # " + "long " * 80 + "\n```\n\n" + "a" * 300)
        send(page, "w" * 200)
        wait_answer(page)
        width = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        scroll, client = page.evaluate(width)
        assert client == 375 and scroll <= client
        expect(page.locator("#settings")).to_be_hidden()  # the panels fold away behind their buttons
        page.click("#toggle-settings")
        expect(page.locator("#settings")).to_be_visible()
        assert page.get_attribute("#toggle-settings", "aria-expanded") == "true"
        scroll, client = page.evaluate(width)
        assert scroll <= client
        page.screenshot(path=str(tmp_path / "ui-phone.png"))
    finally:
        context.close()
