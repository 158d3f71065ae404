"""The dashboard (issue 15) in a real browser: Debian's headless Chromium driven by Playwright.

The pages show real data from the Anvil deployment (a dataset, a model trained on it, a task
settled with attribution spans, a royalty claim, an IMO with a buyer), served both ways: at /ui by
a running `tributa oracle run` (token required: one is set), and by `tributa dashboard` (open on
loopback), which reads the chain and that oracle's HTTP API alone, with an empty data dir of its own.
Screenshots go under each test's tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import httpx
import pytest

from tests.helpers import OracleParts, advance_time, ensure_agent, post_raw_task, signer_for
from tributa.store import cid as cidlib

TOKEN = "dashboard-test-token"
MOON = (
    "The Moon orbits the Earth once every twenty seven days, and the same face of the Moon always "
    "points toward us because its spin is locked to its orbit by the pull of the Earth. "
) * 3
QUOTE = "the same face of the Moon always points toward us because its spin is locked to its orbit"
ROLES = ("oracle", "agent", "requester", "creator", "publisher", "buyer")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert proc.alive(), proc.log_tail()
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout_s:.0f}s:\n{proc.log_tail()}")


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (`make setup` installs it: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def world(deployed, contracts, tmp_path_factory):
    """The deployment's data, then the oracle and the standalone dashboard over it."""
    from oracle.attribution.service import DatasetIndexes, OracleAttributor
    from tests.oracle.test_settlement import _submit
    from tributa import imo as imo_lib
    from tributa.datasets import register_dataset
    from tributa.ml.embeddings import load_embedder
    from tributa.ml.tokenizer import load_tokenizer
    from tributa.processes import ManagedProcess, start_oracle
    from tributa.publish import register_model
    from tributa.royalties import claim_all

    w3 = contracts.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    root = tmp_path_factory.mktemp("dashboard")
    signers = {role: signer_for(contracts, role) for role in ROLES}
    member = signer_for(contracts, "16")
    settings = deployed.with_overrides(data_dir=root / "oracle-data", oracle_url=f"http://127.0.0.1:{_free_port()}")
    parts = OracleParts(contracts, signers, settings.data_dir)
    indexes = DatasetIndexes(root / "indexes", load_tokenizer(), load_embedder())

    (root / "moon.txt").write_text(MOON)
    contributors = sorted([signers["creator"].address, member.address], key=lambda a: int(a, 16))
    dataset_id = register_dataset(
        contracts,
        signers["creator"],
        parts.store,
        root / "moon.txt",
        contributors,
        [5000, 5000],
        "CC0",
        "moon",
        lambda cid, text: indexes.build(cid, text).token_count,
    ).dataset_id
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "dashboard": True}))
    model_id = register_model(
        contracts, signers["publisher"], parts.store, "moon-model", folder, [], {dataset_id: 10_000}, 10**15
    ).model_id
    ensure_agent(contracts, signers["agent"], [model_id])
    # A successful IMO first, so the task's model fee goes to its token's holders.
    imo_id, _, _ = imo_lib.launch(
        contracts,
        signers["publisher"],
        model_id,
        "Moon",
        "MOON",
        1_000_000,
        10**14,
        2 * 10**18,
        60 * 10**18,
        3600,
        2000,
        86_400,
    )
    imo_lib.buy(contracts, signers["buyer"], imo_id, 2 * 10**18)
    advance_time(w3, 3601)
    imo_lib.finalize(contracts, signers["buyer"], imo_id)
    imo_lib.claim(contracts, signers["buyer"], imo_id)  # its tokens, out of custody

    parts.settler.attributor = OracleAttributor(contracts, parts.store, indexes)
    input_cid = str(parts.store.put_bytes(b'{"prompt":"Why do we always see the same side of the Moon?"}'))
    task_id = post_raw_task(contracts, signers["requester"], model_id, cidlib.cid_to_digest(input_cid))
    parts.ingestor.poll_once()
    offer = parts.book.lease(signers["agent"].address, {model_id}, parts.chain_time())
    output = json.dumps({"kind": "generate", "text": f"Because {QUOTE}, as astronomers say."}).encode()
    _submit(parts, signers["agent"], offer, output, task_id)
    assert parts.settler.settle_ready() == 1
    claimed, _ = claim_all(contracts, member)
    _, revenue = imo_lib.claim(contracts, signers["buyer"], imo_id)  # its share of the model fee
    assert revenue > 0
    parts.db.engine.dispose()  # the oracle process takes over this data dir

    oracle = start_oracle(
        settings, root / "oracle.log", ["--no-attribution", "--text-logs"], env={"TRIBUTA_UI_TOKEN": TOKEN}
    )
    standalone_url = f"http://127.0.0.1:{_free_port()}"
    standalone = ManagedProcess(
        "dashboard",
        ["dashboard", "--port", standalone_url.rsplit(":", 1)[1], "--oracle-url", settings.oracle_url],
        settings.with_overrides(data_dir=root / "empty"),
        root / "dashboard.log",
        env={"TRIBUTA_UI_TOKEN": ""},
    )
    try:
        _wait_for(standalone_url + "/ui", standalone)
        yield {
            "oracle_url": settings.oracle_url,
            "standalone_url": standalone_url,
            "task_id": task_id,
            "model_id": model_id,
            "dataset_id": dataset_id,
            "imo_id": imo_id,
            "claimed": claimed,
            "member": member.address,
            "signers": signers,
            "contracts": contracts,
        }
    finally:
        standalone.stop()
        oracle.stop()
        w3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture(params=["oracle", "standalone"])
def site(request, world, browser):
    """A browser page on one of the two servers, signed in where a token is needed; every request
    the page makes is recorded (nothing may leave the server's origin)."""
    base = world["oracle_url"] if request.param == "oracle" else world["standalone_url"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    if request.param == "oracle":
        assert page.goto(f"{base}/ui?token={TOKEN}").status == 200
        assert "token=" not in page.url  # moved into a cookie, out of the address bar
    yield {"mode": request.param, "base": base, "page": page, "requests": requests}
    context.close()
    assert requests and all(url.startswith(base + "/") for url in requests), requests


def _agent_polls(world) -> None:
    """One signed poll by the agent: the oracle counts it online for a minute (no work waits)."""
    from compute_agent.client import JobClient

    contracts = world["contracts"]
    client = JobClient(
        world["oracle_url"], world["signers"]["agent"].account, contracts.chain_id, contracts.escrow.address
    )
    try:
        assert client.poll(wait_s=0) is None
    finally:
        client.close()


def _shot(page, tmp_path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_pages__real_data_from_the_deployment_on_every_page(site, world, tmp_path):
    page, base = site["page"], site["base"]
    task_id, dataset_id, model_id = world["task_id"], world["dataset_id"], world["model_id"]
    agent = world["signers"]["agent"].address
    _agent_polls(world)

    page.goto(f"{base}/ui/tasks")
    row = page.locator(f"#task-{task_id}")
    assert "settled" in row.inner_text() and row.locator("code").nth(1).inner_text().startswith("0x")
    assert page.locator("#activity svg.chart rect.bar").count() > 0  # tasks per minute, fees per minute
    _shot(page, tmp_path, "tasks")

    page.goto(f"{base}/ui/tasks/{task_id}")
    assert page.locator("#task-state").inner_text() == "settled"
    assert page.locator("#settle-tx").inner_text().startswith("0x")
    assert "Data share" in page.locator("#fee-split").inner_text()
    marked = page.locator("#output mark").all_inner_texts()
    assert any("same face of the Moon" in m for m in marked), marked  # the span, marked in the output …
    excerpt = page.locator("#attribution .dataset-excerpt mark").all_inner_texts()
    assert any("same face of the Moon" in m for m in excerpt), excerpt  # … and in the dataset's text
    assert (
        f"dataset {dataset_id}" in page.locator("#attribution").inner_text()
        and "100.00%" in page.locator("#attribution").inner_text()
    )
    assert "Why do we always see" in page.inner_text("main")  # the input
    _shot(page, tmp_path, "task")

    page.goto(f"{base}/ui/agents")
    row = page.locator(f"#agent-{agent}").inner_text()
    assert "online" in row and "100.0% of 1" in row, row
    page.goto(f"{base}/ui/agents/{agent}")
    assert "100.0% of 1 judged" in page.locator("#agreement").inner_text()
    assert page.locator("svg.chart circle.dot").count() == 1  # agreement over time
    assert "0 times" in page.locator("#slashes").inner_text()
    _shot(page, tmp_path, "agent")

    page.goto(f"{base}/ui/datasets")
    assert page.locator("svg.chart rect.bar").count() >= 1  # royalties by dataset
    page.goto(f"{base}/ui/datasets/{dataset_id}")
    version = page.locator("#version-1").inner_text()
    assert "claimed" in version and world["member"] in version and "50.00%" in version
    _shot(page, tmp_path, "dataset")

    page.goto(f"{base}/ui/models")
    assert f"IMO {world['imo_id']}: succeeded" in page.locator(f"#model-{model_id}").inner_text()
    page.goto(f"{base}/ui/models/{model_id}")
    imo = page.locator("#imo").inner_text()
    assert "raised 2 ETH" in imo and "tokens claimed" in imo
    assert world["signers"]["buyer"].address in page.locator("#holders").inner_text()
    assert (
        page.locator("#revenue-in").inner_text() != "0 ETH" and page.locator("#revenue-claimed").inner_text() != "0 ETH"
    )
    assert page.locator("#imo svg.progress").count() == 2
    _shot(page, tmp_path, "model")

    page.goto(f"{base}/ui/oracle")
    assert "behind" in page.locator("#ingestion").inner_text()
    assert page.locator("#pending").inner_text() == "0"
    assert page.locator("#gas-balance").inner_text().endswith("ETH")
    assert "0 worker passes failed" in page.locator("#rpc-errors").inner_text()
    _shot(page, tmp_path, "oracle")


def test_tasks__a_task_posted_appears_without_a_reload(site, world, tmp_path):
    page = site["page"]
    page.goto(f"{site['base']}/ui/tasks")
    page.evaluate("window.__same_document = true")
    task_id = post_raw_task(world["contracts"], world["signers"]["requester"], world["model_id"], os.urandom(32))

    page.wait_for_selector(f"#task-{task_id}", timeout=15_000)
    assert page.evaluate("window.__same_document") is True  # swapped in by htmx, not reloaded
    assert "open" in page.locator(f"#task-{task_id}").inner_text()
    _shot(page, tmp_path, "live")


@pytest.mark.parametrize(
    "path",
    [
        "/ui/tasks/999999",
        "/ui/tasks/abc",
        "/ui/agents/0xnot-an-address",
        "/ui/agents/0x000000000000000000000000000000000000dEaD",
        "/ui/datasets/999999",
        "/ui/models/0",
        "/ui/no-such-page",
    ],
)
def test_bad_ids__a_404_page(site, path, tmp_path):
    page = site["page"]
    response = page.goto(site["base"] + path)
    assert response.status == 404 and page.locator("h1").inner_text() == "Not found"
    assert page.locator("header nav a").count() == 5  # the site's own page, not a bare error
    _shot(page, tmp_path, "404")


def test_oracle_ui__without_or_with_a_wrong_token__401(world, browser):
    context = browser.new_context()
    page = context.new_page()
    for url in (f"{world['oracle_url']}/ui", f"{world['oracle_url']}/ui/tasks/1?token=wrong"):
        response = page.goto(url)
        assert response.status == 401 and page.locator("h1").inner_text() == "Token required"
    context.close()
    bearer = httpx.get(f"{world['oracle_url']}/ui/oracle", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200 and "health" in bearer.text
    assert httpx.get(f"{world['oracle_url']}/v1/status").json()["pending_txs"] == []  # the JSON views stay open


def test_access__beyond_loopback__a_token_or_locked(contracts):
    from fastapi.testclient import TestClient

    from tributa.dashboard.data import Dashboard
    from tributa.dashboard.sources import HttpOracle
    from tributa.dashboard.web import Access, standalone_app

    dashboard = Dashboard(contracts, HttpOracle("http://127.0.0.1:9", contracts))
    locked = TestClient(standalone_app(dashboard, Access("0.0.0.0")))
    assert locked.get("/ui").status_code == 403 and "--ui-token" in locked.get("/ui").text
    guarded = TestClient(standalone_app(dashboard, Access("0.0.0.0", "s3cret")))
    assert guarded.get("/ui/oracle").status_code == 401
    signed_in = guarded.get("/ui/oracle?token=s3cret", follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/oracle"
    assert "httponly" in signed_in.headers["set-cookie"].lower()
    page = guarded.get("/ui/oracle")  # the cookie from here on
    assert page.status_code == 200 and "unreachable" in page.text  # no oracle at :9, and the page says so
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_dashboard_cli__beyond_loopback_without_a_token__refused(deployed):
    from click.testing import CliRunner

    from tributa.cli import cli

    result = CliRunner(mix_stderr=False).invoke(
        cli,
        [
            "--rpc-url",
            deployed.rpc_url,
            "--deployments",
            str(deployed.deployments_dir),
            "dashboard",
            "--host",
            "0.0.0.0",
        ],
        env={"TRIBUTA_UI_TOKEN": ""},
    )
    assert result.exit_code == 1 and "give the dashboard a token" in result.stderr
