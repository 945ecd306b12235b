"""The web UI in a real browser: Playwright driving Debian's Chromium against a real gateway with the demo.

One gateway per module (a real process, local provider, a file:// model store in a temporary
folder), the product-matching demo deployed from the repository's stack.yml with classifiers trained
here, plus a monitored ``scorer`` function for the drift screens. The browser logs in once; each
test opens its own context from that login. Screenshots of every screen go to tests/ui/screenshots/
(git-ignored). Nothing is mocked.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.gateway_fixtures import Gateway, http, python_spec, write_handler
from tests.ui.axe import axe_script

pytestmark = [pytest.mark.process, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
SEED = REPO / "functions" / "pm-features" / "product-matching-request.json"
PAGES = ["/ui/functions", "/ui/functions/product-matching", "/ui/pipelines", "/ui/models",
         "/ui/models/pm-classifier", "/ui/monitoring", "/ui/monitoring/scorer", "/ui/async"]
STREAMS = ["/ui/events/functions", "/ui/events/functions/pm-features", "/ui/events/logs/pm-features",
           "/ui/events/async"]

SCORER = '''
def handle(payload, context):
    rows = payload if isinstance(payload, list) else [payload]
    return [{"label": r["x"] > 0, "score": round(r["x"] * 0.5 + 0.1, 6)} for r in rows]
'''
SCORER_SIGNATURE = {
    "inputs": [{"name": "x", "dtype": "float64", "shape": [-1]}, {"name": "y", "dtype": "float64", "shape": [-1]},
               {"name": "plan", "dtype": "string", "shape": [-1]}],
    "outputs": [{"name": "label", "dtype": "bool", "shape": [-1]},
                {"name": "score", "dtype": "float64", "shape": [-1]}],
}


# ---- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's own hydro home (store, state): the gateway process inherits it."""
    home = tmp_path_factory.mktemp("ui-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYDRO_HOME", str(home))
        mp.setenv("HYDRO_STORE", f"file://{home / 'store'}")
        mp.setenv("HYDRO_CACHE", str(home / "cache"))
        mp.setenv("HYDRO_STATE", str(home / "state"))
        for var in ("HYDRO_TOKEN", "HYDRO_GATEWAY"):
            mp.delenv(var, raising=False)
        yield home


@pytest.fixture(scope="module")
def gw(env: Path) -> Iterator[Gateway]:
    """A real gateway with the demo (trained here) and a monitored scorer deployed."""
    from hydro_serving.demo.provision import ensure_models, with_store
    from hydro_serving.demo.training import train_all
    from hydro_serving.gateway.client import GatewayClient
    from hydro_serving.stack import load_stack
    from hydro_serving.store import open_store

    store = open_store()
    stack = load_stack(REPO / "stack.yml", env={})
    trained = train_all(env / "models")
    ensure_models(store, stack, train=lambda _out: trained)
    gateway = Gateway(env / "state")
    gateway.start()
    try:
        GatewayClient(gateway.url, gateway.token).deploy_stack(with_store(stack, store.url))
        folder = write_handler(env / "scorer", SCORER)
        gateway.deploy(python_spec("scorer", folder, signature=SCORER_SIGNATURE,
                                   monitoring={"sample": 1.0, "window": {"rows": 60, "time": "1h"}}))
        yield gateway
    finally:
        gateway.replica_pids()
        gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _password(gw: Gateway) -> str:
    return json.loads((gw.state_dir / "credentials.json").read_text())["password"]


@pytest.fixture(scope="module")
def logged_in(gw: Gateway, browser: Any) -> dict[str, Any]:
    """The storage state (session cookie) of one login through the form."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(gw.url + "/ui/functions")
    page.fill("#password", _password(gw))
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/functions")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def page(browser: Any, logged_in: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(storage_state=logged_in, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def _no_redirect(method: str, url: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request that does not follow redirects (to see the 303 itself), without cookies."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kw: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


# ---- login and the doors ------------------------------------------------------------------------------


def test_login_refused_with_a_wrong_password_then_admitted(gw: Gateway, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(gw.url + "/ui/pipelines")
    assert "/ui/login" in page.url and response.status == 200
    page.fill("#password", "not-the-password")
    with page.expect_response(lambda r: r.url.endswith("/ui/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert page.text_content("#login-error") == "wrong user or password"
    assert not [c for c in context.cookies() if c["name"] == "hydro_ui"]
    page.fill("#password", _password(gw))
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/pipelines")  # back where the login started
    cookie = next(c for c in context.cookies() if c["name"] == "hydro_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain HTTP here
    assert page.evaluate("document.cookie") .find("hydro_ui=") == -1  # scripts never see the session
    page.click("text=Log out")
    page.wait_for_url("**/ui/login")
    page.goto(gw.url + "/ui/functions")
    assert "/ui/login" in page.url  # the session is gone on the server
    context.close()


def test_every_page_redirects_and_every_stream_and_form_refuses_without_a_session(gw: Gateway) -> None:
    for path in PAGES:
        status, headers, _ = _no_redirect("GET", gw.url + path)
        assert status == 303, path
        assert headers["Location"] == "/ui/login?next=" + urllib.parse.quote(path, safe="/")
    for path in STREAMS:
        status, headers, body = _no_redirect("GET", gw.url + path)
        assert status == 401 and headers["Content-Type"].startswith("application/json"), path
        assert json.loads(body)["code"] == "unauthorized"
    for path in ("/ui/functions/scorer/try", "/ui/models/pm-classifier/alias", "/ui/logout", "/ui/async/redrive",
                 "/ui/async/purge", f"/ui/async/{'0' * 8}-0000-0000-0000-{'0' * 12}/redrive"):
        status, _, body = http("POST", gw.url + path, b"csrf=x&alias=prod&version=1",
                               {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 401, path
        assert "Traceback" not in body.decode()
    # a forged session cookie is no session
    status, _, _ = http("GET", gw.url + "/ui/events/functions", headers={"Cookie": "hydro_ui=forged"})
    assert status == 401


def test_forms_without_the_csrf_token_or_from_another_site_are_refused(gw: Gateway, page: Any, env: Path) -> None:
    page.goto(gw.url + "/ui/models/pm-classifier")
    before = _aliases(env, "pm-classifier")
    form = {"alias": "stolen", "version": "1", "confirm": "yes"}
    answer = page.request.post(gw.url + "/ui/models/pm-classifier/alias", form=form)
    assert answer.status == 403 and answer.json()["field"] == "csrf"
    answer = page.request.post(gw.url + "/ui/models/pm-classifier/alias", form={**form, "csrf": "wrong"})
    assert answer.status == 403
    token = page.get_attribute("#alias-form input[name=csrf]", "value")
    answer = page.request.post(gw.url + "/ui/models/pm-classifier/alias", form={**form, "csrf": token},
                               headers={"Origin": "http://evil.example"})
    assert answer.status == 400 and answer.json()["field"] == "Origin"
    assert _aliases(env, "pm-classifier") == before  # nothing moved
    # the login form has its own token: a post without it is refused before any password is compared
    status, _, body = http("POST", gw.url + "/ui/login", b"user=admin&password=x",
                           {"Content-Type": "application/x-www-form-urlencoded", "Cookie": "hydro_ui_login=abc"})
    assert status == 403 and json.loads(body)["field"] == "csrf"


def test_hostile_urls_get_an_error_page_naming_the_field_never_a_traceback(gw: Gateway, page: Any) -> None:
    cases = {
        "/ui/functions/%3Cscript%3Ealert(1)%3C%2Fscript%3E": (404, "is not deployed"),
        "/ui/models/..%2F..%2Fetc": (400, "name"),
        "/ui/models/pm-classifier?version=abc": (400, "version"),
        "/ui/models/pm-classifier?version=0": (400, "version"),
        "/ui/models/no-such-model": (404, "no-such-model"),
        "/ui/monitoring/drifty-nope": (404, "is not deployed"),
        "/ui/monitoring/pm-features": (404, "is not monitored"),
        "/ui/monitoring/scorer?window=-1": (400, "window"),
    }
    for path, (status, words) in cases.items():
        response = page.goto(gw.url + path)
        text = page.text_content(".error")
        assert response.status == status and words in text, (path, response.status, text)
        assert "Traceback" not in page.content() and page.query_selector("main script") is None
    answer = page.request.post(gw.url + "/ui/functions/nope/try", form={"csrf": "x"})
    assert answer.status == 403  # the token is checked before anything else
    token = page.goto(gw.url + "/ui/functions/scorer") and page.get_attribute("#raw-form input[name=csrf]", "value")
    answer = page.request.post(gw.url + "/ui/functions/nope/try", form={"csrf": token, "mode": "json", "body": "{}"})
    assert answer.status == 404 and answer.json()["function"] == "nope"
    answer = page.request.post(gw.url + "/ui/functions/scorer/try", form={"csrf": token, "mode": "xml", "body": "{}"})
    assert answer.status == 400 and "mode must be form, json or v2" in answer.text()


def test_login_is_rate_limited(gateway_factory: Any, browser: Any) -> None:
    gw = gateway_factory()
    context = browser.new_context()
    page = context.new_page()
    page.goto(gw.url + "/ui/login?next=//evil.example/x")
    statuses = []
    for _ in range(7):
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.fill("#password", "guess")
            page.click("button[type=submit]")
        statuses.append(answer.value.status)
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429
    assert "too many login attempts" in page.text_content("#login-error")
    context.close()
    context = browser.new_context()
    page = context.new_page()
    page.goto(gw.url + "/ui/login")
    page.fill("#password", _password(gw))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 429  # the right password too: the bucket refills at one try per 5 s
    context.close()


def test_login_never_redirects_off_site(gw: Gateway) -> None:
    status, headers, body = _no_redirect("GET", gw.url + "/ui/login?next=https://evil.example/")
    token = re.search(r'name="csrf" value="([^"]+)"', body.decode()).group(1)
    cookie = headers["Set-Cookie"].split(";")[0]
    form = urllib.parse.urlencode({"csrf": token, "user": "admin", "password": _password(gw),
                                   "next": "https://evil.example/"}).encode()
    status, headers, _ = _no_redirect("POST", gw.url + "/ui/login", form,
                                      {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    assert status == 303 and headers["Location"] == "/ui/functions"


# ---- screens ------------------------------------------------------------------------------------------


def _row_cell(page: Any, fn: str, col: str) -> str:
    return page.text_content(f'tr[data-fn="{fn}"] td[data-col="{col}"]').strip()


def test_functions_change_state_live_while_requests_arrive(gw: Gateway, page: Any) -> None:
    gw.admin("POST", "/system/scale-function/scorer", {"replicas": 0})
    gw.wait_for(lambda: gw.status("scorer")["replicas"] == 0, what="scorer at zero")
    page.goto(gw.url + "/ui/functions")
    for fn in ("pm-features", "pm-classifier", "pm-classifier-gb", "product-matching", "scorer"):
        assert page.is_visible(f'tr[data-fn="{fn}"]'), fn
    assert "(at zero)" in _row_cell(page, "scorer", "replicas")
    before = int(_row_cell(page, "scorer", "invocations"))
    rng = np.random.default_rng(1)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            gw.invoke("scorer", _rows(rng, 3))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:  # no reload: the SSE stream moves the cells
        page.wait_for_function(
            "([b]) => { const r = document.querySelector('tr[data-fn=\"scorer\"]');"
            " return r.querySelector('[data-col=invocations]').textContent > b + 5"
            " && r.querySelector('[data-col=replicas]').textContent.startsWith('1/1')"
            " && r.querySelector('[data-col=p50]').textContent.endsWith('ms'); }", arg=[before], timeout=20000)
    finally:
        stop.set()
        thread.join(30)
    assert _row_cell(page, "scorer", "cold") != "0"
    assert page.text_content("#live-status").startswith("updated")
    shot(page, "functions")
    # filter and sort are the server's, readable without JavaScript
    page.fill("#q", "pm-class")
    page.select_option("#sort", "name")
    page.select_option("#dir", "desc")
    page.click("text=Apply")
    names = page.eval_on_selector_all("tbody tr[data-fn]", "rows => rows.map(r => r.dataset.fn)")
    assert names == ["pm-classifier-gb", "pm-classifier"]


def test_try_it_on_product_matching_with_the_seed_request(gw: Gateway, page: Any) -> None:
    seed = SEED.read_text()
    page.goto(gw.url + "/ui/functions/product-matching")
    labels = page.eval_on_selector_all("#try-form label", "ls => ls.map(l => l.textContent.split(' ')[0])")
    assert labels == ["Title1", "ItemSpecifics1", "Title2", "ItemSpecifics2"]  # from pm-features' signature
    page.select_option("#mode", "json")
    page.fill("#body", seed)
    page.click("text=Send raw")
    page.wait_for_selector("#try-result")
    assert page.text_content("#result-status") == "200"
    body = json.loads(page.text_content("#result-body"))
    assert [row["match"] for row in body] == [False, True]  # the seed: no match, then match
    headers = dict(page.eval_on_selector_all("#result-headers tbody tr",
                                             "rs => rs.map(r => [...r.cells].map(c => c.textContent))"))
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["x-cold-start"] in ("true", "false") and len(headers["x-request-id"]) == 32, headers
    assert json.loads(headers["x-hydro-stage-timings"])[0]["name"] == "pm-features"  # the router's stage timings
    assert re.fullmatch(r"\d+\.\d ms", page.text_content("#result-time"))
    shot(page, "function")
    # the form built from the signature: the second pair of the seed, field by field
    pair = json.loads(seed)[1]
    for field, value in pair.items():
        page.fill(f"#field-{field}", value)
    page.click("#try-form button[type=submit]")
    page.wait_for_selector("#try-result")
    assert page.text_content("#result-status") == "200"
    assert json.loads(page.text_content("#result-body"))[0]["match"] is True


def test_try_it_shows_errors_inline_and_escapes_what_it_echoes(gw: Gateway, page: Any) -> None:
    page.goto(gw.url + "/ui/functions/scorer")
    page.fill("#field-x", "not a number")
    page.fill("#field-y", "1")
    page.fill("#field-plan", "a")
    page.click("#try-form button[type=submit]")
    assert "x must be a number" in page.text_content("#try-error")
    page.select_option("#mode", "json")
    page.fill("#body", "{not json")
    page.click("text=Send raw")
    assert "not valid JSON" in page.text_content("#try-error")
    # the function's own refusal (its signature) is shown as its status and body
    page.select_option("#mode", "json")
    page.fill("#body", json.dumps([{"x": 1, "plan": "<img src=x onerror=alert(1)>"}]))
    page.click("text=Send raw")
    assert page.text_content("#result-status") == "400"
    assert "y" in json.loads(page.text_content("#result-body"))["field"]
    assert "<img src=x onerror=alert(1)>" in page.text_content("#body")  # shown as text
    assert page.query_selector("img[src=x]") is None and page.dialogs == []


def test_a_cold_start_split_is_shown(gw: Gateway, page: Any, env: Path) -> None:
    folder = write_handler(env / "coldfn")
    gw.deploy(python_spec("coldfn", folder))
    page.goto(gw.url + "/ui/functions/coldfn")
    assert page.text_content("#cold-split") == "no cold start seen since the gateway started"
    page.select_option("#mode", "json")
    page.fill("#body", '{"hello": "ui"}')
    page.click("text=Send raw")
    assert page.text_content("#result-status") == "200"
    split = page.text_content("#cold-split")
    match = re.fullmatch(r"process start (\d+) ms \+ model load (\d+) ms", split)
    assert match, split
    assert int(match.group(1)) > 0
    headers = page.text_content("#result-headers")
    assert "X-Cold-Start" in headers and "true" in headers
    assert "1/1" in page.text_content('[data-field="replicas"]')
    page.wait_for_function("() => document.getElementById('logs').textContent.length > 0", timeout=15000)
    # the Open Inference (V2) mode posts to /function/<name>/v2/models/<name>/infer
    page.select_option("#mode", "v2")
    page.fill("#body", json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.5]}]}))
    page.click("text=Send raw")
    assert page.text_content("#result-status") == "200"
    v2 = json.loads(page.text_content("#result-body"))
    assert v2["model_name"] == "coldfn" and v2["outputs"][0]["data"] == ["{'x': [1.5]}"]  # the tensor as a column


TALKER = '''
import sys


def handle(payload, context):
    print("talker says", payload["say"], flush=True)
    sys.stderr.write("talker warns " + payload["say"] + "\\n")
    return {"said": payload["say"]}
'''


def test_live_logs_arrive_without_a_reload(gw: Gateway, page: Any, env: Path) -> None:
    folder = write_handler(env / "talker", TALKER)
    gw.deploy(python_spec("talker", folder))
    page.goto(gw.url + "/ui/functions/talker")
    assert "marker-7f3" not in page.text_content("#logs")
    for _ in range(2):
        assert gw.invoke("talker", {"say": "marker-7f3 <b>bold</b>"})[0] == 200
    page.wait_for_function("() => document.getElementById('logs').textContent.includes('talker says marker-7f3')",
                           timeout=20000)
    assert "talker warns marker-7f3 <b>bold</b>" in page.text_content("#logs")  # text, never markup
    assert page.query_selector("#logs b") is None


def _store(env: Path) -> Any:
    """The module's store (the autouse fixture points HYDRO_STORE of each test elsewhere)."""
    from hydro_serving.store import open_store

    return open_store(f"file://{env / 'store'}")


def _aliases(env: Path, name: str) -> dict[str, int]:
    return _store(env).aliases(name)


def test_move_an_alias_with_confirmation(gw: Gateway, page: Any, env: Path) -> None:
    store = _store(env)
    manifest = store.get_manifest("pm-classifier:1")
    if len(store.versions("pm-classifier")) < 2:  # a second version to move the alias to
        folder = env / "v2"
        store.pull("pm-classifier:1", folder)
        store.upload(folder, "pm-classifier", framework=manifest.framework, signature=manifest.signature)
    store.set_alias("pm-classifier", 1, "prod")
    page.goto(gw.url + "/ui/models")
    assert "pm-classifier" in page.text_content("#models")
    page.click('a[href="/ui/models/pm-classifier"]')
    page.wait_for_url("**/ui/models/pm-classifier")
    assert page.text_content("h1") == "Model pm-classifier:2"  # the latest version first
    page.click('nav[aria-label=Versions] >> text="1"')
    page.wait_for_url("**/ui/models/pm-classifier?version=1")
    assert re.search(r"[0-9a-f]{64}", page.text_content("#files"))  # file digests
    assert "title_jaccard" in page.text_content("#signature")
    assert page.text_content("#signer").strip() == "unsigned"
    assert page.query_selector_all("figure svg")  # the training profile as histograms
    shot(page, "models")
    page.fill("#alias", "prod")
    page.select_option("#alias-version", "2")
    page.click("text=Move alias…")
    assert "points at version 1" in page.text_content("#confirm-text")
    assert _aliases(env, "pm-classifier")["prod"] == 1  # nothing moved before the confirmation
    page.click("#confirm-move")
    assert page.text_content("#alias-moved") == "Moved pm-classifier:prod -> pm-classifier:2"
    assert _aliases(env, "pm-classifier")["prod"] == 2
    # the store's own validation, inline: 'latest' cannot be set
    page.fill("#alias", "latest")
    page.click("text=Move alias…")
    page.click("#confirm-move")
    assert "'latest' is implicit" in page.text_content("#alias-error")


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0, plans: tuple[str, ...] = ("a", "b")) -> list[dict]:
    return [{"x": round(float(rng.normal(shift, 1)), 6), "y": round(float(rng.normal(5, 2)), 6),
             "plan": str(rng.choice(plans))} for _ in range(n)]


def test_monitoring_after_drifted_traffic(gw: Gateway, page: Any, env: Path) -> None:
    folder = write_handler(env / "drifty", SCORER)  # its own windows: other tests' traffic stays out of them
    gw.deploy(python_spec("drifty", folder, signature=SCORER_SIGNATURE,
                          monitoring={"sample": 1.0, "window": {"rows": 60, "time": "1h"}}))
    rng = np.random.default_rng(7)
    answers = []
    for n, (shift, plans) in enumerate(((0.0, ("a", "b")), (0.0, ("a", "b")), (2.5, ("c",))), start=1):
        for _ in range(6):  # 60-row windows: baseline, normal, drifted
            status, headers, body = gw.invoke("drifty", _rows(rng, 10, shift, plans))
            assert status == 200
            answers.append((headers["X-Request-Id"], body))
        gw.wait_for(lambda n=n: len(gw.admin("GET", "/system/monitoring/drifty")[1]["windows"]) >= n,
                    timeout=30, what=f"window {n}")
    page.goto(gw.url + "/ui/monitoring")
    row = page.text_content('#monitoring tr:has(a[href="/ui/monitoring/drifty"])')
    assert "drifting" in row and "x, plan" in row
    page.click('a[href="/ui/monitoring/drifty"]')
    page.wait_for_url("**/ui/monitoring/drifty")
    assert page.text_content("#drift-state") == "drifting"
    table = page.eval_on_selector_all("#drift-table tbody tr",
                                      "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
    status = {row[0]: row[-1] for row in table}
    assert status == {"x": "drifted", "y": "ok", "plan": "drifted"}
    titles = page.eval_on_selector_all("svg.hist title", "ts => ts.map(t => t.textContent)")
    assert any(t.startswith("x: training") for t in titles)  # training vs production on the same bins
    share = page.text_content("svg.bars title")
    shares = [float(v) for v in share.removeprefix("drifty: drifted share per window: ").split(", ")]
    assert len(shares) == 3 and shares[0] == 0 and shares[2] > 0.5  # baseline, then 2 of 3 fields drifted
    assert "No feedback yet" in page.text_content("section[aria-labelledby=h-quality]")
    shot(page, "monitoring")
    # ground truth for the drifted window (the label is the sign of x: every answer right)
    labels = [{"request_id": rid, "row": i, "label": rec["label"]} for rid, body in answers[12:]
              for i, rec in enumerate(body)]
    assert gw.admin("POST", "/system/feedback/drifty", {"labels": labels})[0] == 202
    page.reload()
    quality = page.eval_on_selector_all("#quality tbody tr",
                                        "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
    assert quality == [["(all)", "3", "60", "100.0%", "\u2013"]]
    page.goto(gw.url + "/ui/monitoring/drifty?window=99")
    assert "has no window 99" in page.text_content(".error")


def test_pipeline_graph_with_weights_and_the_observed_split(gw: Gateway, page: Any) -> None:
    for _ in range(10):
        assert gw.invoke("product-matching", json.loads(SEED.read_text()))[0] == 200
    page.goto(gw.url + "/ui/pipelines")
    title = page.text_content("svg.graph title")
    assert title == "pipeline product-matching: pm-features 100% then pm-classifier 90% or pm-classifier-gb 10%"
    rows = page.eval_on_selector_all("section.pipeline tbody tr",
                                     "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
    by_fn = {r[1]: r for r in rows}
    assert by_fn["pm-features"][3] == "100%" and int(by_fn["pm-features"][4]) >= 10
    observed = [by_fn[f][3] for f in ("pm-classifier", "pm-classifier-gb")]
    assert all(o.endswith("%") for o in observed) and sum(int(o[:-1]) for o in observed) in (99, 100, 101)
    assert by_fn["pm-classifier"][7] in ("closed", "half-open", "open")  # read from the router's /metrics
    shot(page, "pipelines")


BROKEN = '''
def handle(payload, context):
    raise RuntimeError("broken on purpose")
'''
FIXED = '''
def handle(payload, context):
    return {"fixed": payload["n"]}
'''


def _async_spec(folder: Path) -> dict[str, Any]:
    return python_spec("flaky", folder, **{"async": {"retries": 0}})


def _axe_serious(page: Any, script: str) -> list[Any]:
    page.add_script_tag(content=script)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
            if v["impact"] in ("serious", "critical")]


def test_async_dead_letters_redriven_and_purged_from_the_ui(gw: Gateway, page: Any, browser: Any,
                                                            logged_in: dict[str, Any], env: Path) -> None:
    gw.deploy(_async_spec(write_handler(env / "flaky-broken", BROKEN)))
    ids = []
    for n in range(3):
        status, headers, _ = http("POST", gw.url + "/async-function/flaky", {"n": n})
        assert status == 202
        ids.append(headers["X-Call-Id"])
    page.goto(gw.url + "/ui/async")
    # retries: 0, so one 500 each and they are dead; the counts move by the event stream, no reload
    page.wait_for_function("() => document.querySelector('tr[data-fn=\"flaky\"] [data-col=dead]')"
                           ".textContent === '3'", timeout=30000)
    assert _cells(page, "#async-counts", "flaky")[1:] == ["0", "0", "0", "0", "3"]
    page.reload()
    listed = page.eval_on_selector_all("#async-calls tbody tr", "rs => rs.map(r => [r.dataset.call,"
                                       " ...[...r.cells].slice(1, 4).map(c => c.textContent.trim())])")
    assert listed == [[i, "flaky", "dead", "1"] for i in reversed(ids)]  # newest first
    shot(page, "async")
    # the refusals: no CSRF token, a hostile call id or function, the store's own rules, shown inline
    answer = page.request.post(gw.url + "/ui/async/redrive", form={"function": "flaky", "confirm": "yes"})
    assert answer.status == 403 and answer.json()["field"] == "csrf"
    answer = page.request.post(gw.url + f"/ui/async/{ids[0]}/purge", form={"confirm": "yes"})
    assert answer.status == 403 and answer.json()["field"] == "csrf"
    token = page.get_attribute("#async-counts input[name=csrf]", "value")
    answer = page.request.post(gw.url + "/ui/async/not-a-call/redrive", form={"csrf": token, "confirm": "yes"})
    assert answer.status == 400 and "not a call id" in answer.text() and "Traceback" not in answer.text()
    answer = page.request.post(gw.url + "/ui/async/purge",
                               form={"csrf": token, "function": "flaky", "status": "queued", "confirm": "yes"})
    assert answer.status == 400 and "status must be one of" in answer.text()  # live calls are never purged
    answer = page.request.post(gw.url + "/ui/async/redrive",
                               form={"csrf": token, "function": "<script>x</script>", "confirm": "yes"})
    assert answer.status == 400 and "<script>x" not in answer.text()
    assert [c["status"] for c in gw.admin("GET", "/system/async?function=flaky")[1]] == ["dead"] * 3  # untouched
    # one call's detail, then fixed and redriven from there
    page.click(f'a[href="/ui/async/{ids[0]}"]')
    assert page.text_content("#call-status").strip() == "dead"
    assert page.text_content("#call-attempts") == "1"
    assert page.text_content("#call-response-status") == "500"
    gw.deploy(_async_spec(write_handler(env / "flaky-fixed", FIXED)))
    gw.wait_for(lambda: gw.invoke("flaky", {"n": -1})[0] == 200, timeout=30, what="the fixed flaky")
    page.click("#redrive-call")
    assert page.text_content("#confirm-text") == f"Run async call {ids[0]} again from its first attempt?"
    assert gw.admin("GET", f"/system/async/{ids[0]}")[1]["status"] == "dead"  # nothing before the confirmation
    page.click("#confirm-async")
    assert page.text_content("#async-done") == "Redriven: the call is queued again"
    gw.wait_for(lambda: gw.admin("GET", f"/system/async/{ids[0]}")[1]["status"] == "succeeded", timeout=30,
                what="the redriven call")
    page.goto(gw.url + f"/ui/async/{ids[0]}")
    assert page.text_content("#call-status").strip() == "succeeded"
    assert json.loads(page.text_content("#call-body")) == {"fixed": 0}
    assert page.query_selector("#redrive-call") is None  # a succeeded call is not redriven: no button
    answer = page.request.post(gw.url + f"/ui/async/{ids[0]}/redrive", form={"csrf": token, "confirm": "yes"})
    assert answer.status == 409 and "only dead or failed calls are redriven" in answer.text()
    # the rest of the dead-letter queue, for the function
    page.goto(gw.url + "/ui/async")
    page.click("#redrive-flaky")
    assert page.text_content("#confirm-text") == "Run every dead async call of flaky again?"
    page.click("#confirm-async")
    assert page.text_content("#async-done") == "Redriven 2 dead call(s) of flaky"
    page.wait_for_function("() => { const r = document.querySelector('tr[data-fn=\"flaky\"]');"
                           " return r.querySelector('[data-col=succeeded]').textContent === '3'"
                           " && r.querySelector('[data-col=dead]').textContent === '0'; }", timeout=30000)
    # purge the finished calls, after a confirmation
    page.select_option("#purge-status-flaky", "succeeded")
    page.click("#purge-flaky")
    assert page.text_content("#confirm-text") == "Forget every succeeded async call of flaky?"
    assert len(gw.admin("GET", "/system/async?function=flaky")[1]) == 3
    page.click("#confirm-async")
    assert page.text_content("#async-done") == "Purged 3 succeeded call(s) of flaky"
    assert gw.admin("GET", "/system/async?function=flaky")[1] == []
    page.goto(gw.url + f"/ui/async/{ids[1]}")
    assert "no async call" in page.text_content(".error")
    # accessibility of the new screens, with a row and a call in them
    status, headers, _ = http("POST", gw.url + "/async-function/flaky", {"n": 9})
    assert status == 202
    gw.wait_for(lambda: gw.admin("GET", f"/system/async/{headers['X-Call-Id']}")[1]["status"] == "succeeded",
                timeout=30, what="one more call")
    context = browser.new_context(storage_state=logged_in, bypass_csp=True)
    checker = context.new_page()
    problems = {}
    for path in ("/ui/async", f"/ui/async/{headers['X-Call-Id']}"):
        checker.goto(gw.url + path)
        problems[path] = _axe_serious(checker, axe_script())
    checker.goto(gw.url + "/ui/async")
    checker.click("#purge-flaky")
    problems["confirm"] = _axe_serious(checker, axe_script())
    context.close()
    assert problems == {"/ui/async": [], f"/ui/async/{headers['X-Call-Id']}": [], "confirm": []}
    # and one call purged from its own page
    page.goto(gw.url + f"/ui/async/{headers['X-Call-Id']}")
    page.click("#purge-call")
    page.click("#confirm-async")
    assert page.text_content("#async-done") == f"Purged async call {headers['X-Call-Id']}"
    assert gw.admin("GET", f"/system/async/{headers['X-Call-Id']}")[0] == 404


def _cells(page: Any, table: str, fn: str) -> list[str]:
    return page.eval_on_selector(f'{table} tr[data-fn="{fn}"]',
                                 "r => [...r.cells].slice(0, 6).map(c => c.textContent.trim())")


def test_no_serious_accessibility_violations_on_any_page(gw: Gateway, browser: Any,
                                                       logged_in: dict[str, Any]) -> None:
    script = axe_script()
    # the pages forbid inline scripts (Content-Security-Policy): only this test's context may inject axe
    context = browser.new_context(storage_state=logged_in, bypass_csp=True)
    page = context.new_page()
    problems = {}
    for path in [*PAGES, "/ui/functions/scorer"]:
        page.goto(gw.url + path)
        page.add_script_tag(content=script)
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
        if bad:
            problems[path] = bad
    context.close()
    context = browser.new_context(bypass_csp=True)  # the login page, logged out
    page = context.new_page()
    page.goto(gw.url + "/ui/login")
    page.add_script_tag(content=script)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    problems["/ui/login"] = [(v["id"], v["impact"]) for v in result["violations"]
                             if v["impact"] in ("serious", "critical")] or None
    context.close()
    assert {k: v for k, v in problems.items() if v} == {}


def test_keyboard_reaches_every_control(gw: Gateway, page: Any) -> None:
    page.goto(gw.url + "/ui/functions")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    seen = set()
    for _ in range(12):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert {"Functions", "Pipelines", "Models", "Monitoring", "Log out", "q", "sort", "dir"} <= seen
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !(e.labels && e.labels.length)).map(e => e.name)")
    assert unlabelled == []
