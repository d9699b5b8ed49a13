"""The web console in a real browser: Debian's chromium driven by Playwright, against the whole platform on
a real socket (the `live_url` gateway, the session's workers) and the scripted OpenAI-protocol coder
(tests/coder_fake.py) as the model. One user goes from an API key to tested code: sign in, settings,
a project, a spec through the form (an error shown at its field), completing the specs and watching the
run end without a reload, why it failed, the diff between two rounds, the zip, a second run compared with
the first, and a knowledge search. Then a viewer, another tenant's URL, a phone-sized window and axe-core
(vendored in tests/vendor) on the main pages. The screenshots go to docs/console/ for the README."""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "console"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RUN_S = 120_000  # ms a run may take to end (the scripted coder answers at once; the sandbox runs the tests)


@pytest.fixture(scope="module")
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium here: `make test` installs it as root, or run  sudo apt-get install -y chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        await chromium.close()


async def _page(browser, live_url, *, width=1280, height=860, bypass_csp=False):
    context = await browser.new_context(
        base_url=live_url,
        viewport={"width": width, "height": height},
        timezone_id="Asia/Tokyo",
        locale="en-GB",
        bypass_csp=bypass_csp,
    )
    return context, await context.new_page()


async def _sign_in(page, key: str, then: str = "/console") -> None:
    await page.goto(then)
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def _until(page, check, timeout: float = 30) -> None:
    """Reload a page that is not live (the project's) until `check(page)` holds."""

    async def ready():
        await page.reload()
        return await check(page)

    await wait_for(ready, timeout=timeout, interval=0.3)


async def test_from_an_api_key_to_tested_code_without_curl(browser, live_url, api, tenant, coder):
    from playwright.async_api import expect

    coder.script(
        "console_add",
        first="def console_add(a, b):\n    return a - b\n",
        repair="def console_add(a, b):\n    return a + b\n",
    )
    coder.script("console_even", first="def console_even(n):\n    return n % 2 == 1\n")
    context, page = await _page(browser, live_url)
    await _sign_in(page, tenant.api_key)
    await expect(page.get_by_role("heading", name="Projects")).to_be_visible()

    # the tenant's defaults, as an admin sets them: the scripted coder, one repair round
    await page.goto("/console/settings")
    await page.get_by_label("Model").fill("openai_api")
    await page.get_by_label("Repair rounds (debug_rounds)").fill("1")
    await page.get_by_role("button", name="Save the settings").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")

    await page.goto("/console/projects")
    await page.get_by_label("Name").fill("calculator")
    await page.get_by_role("button", name="Create the project").click()
    await expect(page.get_by_role("heading", name="calculator")).to_be_visible()
    project_url = page.url

    async def writable(p):
        return await p.get_by_role("link", name="Add a spec").count() == 1

    await _until(page, writable)

    async def add_spec(name: str, description: str, tests: str) -> None:
        await page.goto(project_url)
        await page.get_by_role("link", name="Add a spec").click()
        await page.get_by_role("link", name="python-function@1.1.0").click()
        await page.get_by_label("Function name").fill(name)
        await page.get_by_label("Description").fill(description)
        await page.get_by_label("Tests").fill(tests)
        await page.get_by_role("button", name="Add the spec").click()

    await add_spec("console_add", "Add two integers.", "assert console_add(1, 2) == 3\nprint('not a test')")
    error = page.locator("#f-tests-error")
    await expect(error).to_contain_text("line 2:")
    await expect(page.get_by_label("Tests")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Function name")).to_have_value("console_add")  # nothing typed is lost
    await _shot(page, "spec-form-error")
    await page.get_by_label("Tests").fill("assert console_add(1, 2) == 3\nassert console_add(2, 2) == 4")
    await page.get_by_role("button", name="Add the spec").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    await add_spec("console_even", "Whether n is even.", "assert console_even(2) is True")
    await expect(page.get_by_role("status")).to_have_text("Saved.")

    # complete the specs: the run's page follows it to its end on the event stream, without a reload
    await page.goto(project_url)
    await page.get_by_role("button", name="Complete the specs and generate").click()
    await expect(page.get_by_role("heading", name="Run of calculator")).to_be_visible()
    first_run = page.url
    await page.evaluate("window.__not_reloaded = true")
    await expect(page.locator("#run-state")).to_have_text("failed", timeout=RUN_S)
    assert await page.evaluate("window.__not_reloaded === true")
    await expect(page.get_by_role("status").filter(has_text="The run has ended.")).to_be_visible()
    # its progress, as the workflow recorded it: both rounds ran, one function passes
    progress = page.locator("#run-progress")
    await expect(progress).to_contain_text("Round 2 of 2: 1 passed, 1 failed, 0 generated, 0 waiting")
    await expect(progress.locator("li", has_text="console_even")).to_contain_text("failed round 2")
    card = page.locator("#why-failed")
    await expect(card).to_contain_text("console_even")
    await expect(card).to_contain_text("assert console_even(2) is True")
    await expect(card.locator("dt", has_text="Expected").locator("+ dd")).to_have_text("True")
    await expect(card.locator("dt", has_text="Actual").locator("+ dd")).to_have_text("False")
    await expect(page.locator("time").first).not_to_contain_text("T")  # shown in the browser's zone
    await _shot(page, "run-failed")

    # the file of console_add: highlighted, its tests per round, and what changed between the rounds
    await page.goto(project_url)
    await page.get_by_role("link", name="console_add.py").click()
    await expect(page.locator(".highlight")).to_contain_text("return a + b")
    await _shot(page, "artifact")
    await page.get_by_role("link", name="What changed from the attempt before").click()
    await expect(page.locator(".diff .del")).to_contain_text("return a - b")
    await expect(page.locator(".diff .add")).to_contain_text("return a + b")
    await expect(page.locator("#turned")).to_contain_text("assert console_add(1, 2) == 3")
    await expect(page.locator("#turned")).to_contain_text("failed → passed")
    await _shot(page, "diff")

    await page.goto(project_url)
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="Download the files (zip)").click()
    download = await downloading.value
    archive = zipfile.ZipFile(io.BytesIO(Path(await download.path()).read_bytes()))
    assert "console_add.py" in archive.namelist() and "return a + b" in archive.read("console_add.py").decode()

    # the run is pinned to the values it ran with: a spec edited since shows what changed
    await page.goto(project_url)
    await page.get_by_role("link", name="console_add", exact=True).click()
    await page.get_by_label("Description").fill("Add two integers, exactly.")
    await page.get_by_role("button", name="Save the spec").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    await page.goto(first_run)
    await page.get_by_role("link", name="The spec values this run generated from").click()
    spec = page.locator("section").filter(has_text="console_add")
    await expect(spec).to_contain_text("changed since: description")
    await expect(spec).to_contain_text('"description": "Add two integers."')

    # a second run after the model got console_even right, compared with the first
    coder.script("console_even", first="def console_even(n):\n    return n % 2 == 0\n")
    await page.goto(project_url)
    await page.get_by_role("button", name="Start a run").click()
    await expect(page.locator("#run-state")).to_have_text("completed", timeout=RUN_S)
    await page.goto(project_url)
    for box in await page.get_by_role("checkbox").all():
        await box.check()
    await page.get_by_role("button", name="Compare the two runs ticked").click()
    await expect(page.get_by_role("heading", name="Two runs compared")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="console_even")
    await expect(row).to_contain_text("failed")
    await expect(row).to_contain_text("passed")
    await _shot(page, "compare")
    await page.goto(project_url)
    await _shot(page, "project")
    await page.goto("/console/projects")
    await _shot(page, "projects")

    # knowledge: add a snippet, find it
    await page.goto("/console/knowledge")
    await page.get_by_label("Description").fill("clamp a value between bounds")
    await page.get_by_label("Code").fill("def clamp(x, lo, hi):\n    return max(lo, min(x, hi))")
    await page.get_by_role("button", name="Add the snippet").click()

    async def found(p):
        await p.goto("/console/knowledge?q=clamp+between+bounds&mode=hybrid")
        return await p.locator(".search-hit").filter(has_text="def clamp").count() > 0

    await wait_for(lambda: found(page), timeout=20, interval=0.3)
    await _shot(page, "knowledge")
    await context.close()


async def test_a_viewer_another_tenant_a_phone_and_accessibility(browser, live_url, api, tenant, other_tenant):
    from playwright.async_api import expect

    project = (await api.post("/api/projects", json={"name": "shared"}, headers=tenant.headers)).json()
    theirs = (await api.post("/api/projects", json={"name": "theirs"}, headers=other_tenant.headers)).json()
    viewer_key = (await api.post("/api/keys", json={"name": "r", "role": "viewer"}, headers=tenant.headers)).json()

    context, page = await _page(browser, live_url)
    await _sign_in(page, viewer_key["api_key"], f"/console/projects/{project['id']}")
    await expect(page.get_by_role("heading", name="shared")).to_be_visible()  # back to the page asked for
    assert await page.get_by_role("button").filter(has_text=re.compile("Complete|Start|Create|Save")).count() == 0
    await page.goto("/console/projects")
    assert await page.get_by_role("button", name="Create the project").count() == 0
    csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
    forced = await page.request.post(f"{live_url}/console/projects", form={"name": "forced", "csrf": csrf})
    assert forced.status == 403 and "Not allowed" in await forced.text()
    missing = await page.goto(f"/console/projects/{theirs['id']}")
    assert missing is not None and missing.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await context.close()

    phone, small = await _page(browser, live_url, width=390, height=844)
    await _sign_in(small, tenant.api_key)
    for url in ("/console/projects", f"/console/projects/{project['id']}", "/console/knowledge"):
        await small.goto(url)
        overflow = await small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{url} scrolls sideways by {overflow}px on a phone"
    await small.goto("/console/projects")
    await _shot(small, "phone-projects")
    await phone.close()

    checked, page = await _page(browser, live_url, bypass_csp=True)  # axe is injected as a script
    await _sign_in(page, tenant.api_key)
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to the content"
    pages = [
        "/console/projects",
        f"/console/projects/{project['id']}",
        "/console/knowledge",
        "/console/models",
        "/console/keys",
        "/console/settings",
        "/console/sign-in",
    ]
    for url in pages:
        await page.goto(url)
        await page.add_script_tag(path=str(AXE))
        result = await page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
        bad = [(v["id"], v["impact"], v["help"]) for v in result if v["impact"] in ("serious", "critical")]
        assert not bad, f"{url}: {bad}"
    await checked.close()


async def test_the_api_docs_authorize_with_a_key_and_try_it_out(browser, live_url, api, tenant):
    """/docs in the browser, offline: "Try it out" on GET /api/projects is a 401 until Authorize is given the
    API key; then the same call answers 200 with the tenant's projects (the header the scheme names sent)."""
    mine = (await api.post("/api/projects", json={"name": "tried out"}, headers=tenant.headers)).json()
    context, page = await _page(browser, live_url)
    try:
        await page.goto("/docs")
        op = page.locator(".opblock-get", has=page.locator('.opblock-summary-path[data-path="/api/projects"]'))
        await op.locator(".opblock-summary").click()
        await op.get_by_role("button", name="Try it out").click()

        async def execute() -> str:
            await op.get_by_role("button", name="Execute").click()
            status = op.locator(".live-responses-table .response .response-col_status")
            await status.first.wait_for()
            return (await status.first.inner_text()).strip()

        assert (await execute()).startswith("401")
        await page.locator(".auth-wrapper").get_by_role("button", name="Authorize").click()
        section = page.locator(".modal-ux .auth-container", has_text="ApiKey")
        await section.get_by_label("Value:").fill(tenant.api_key)
        await section.get_by_role("button", name="Apply credentials").click()
        await section.get_by_role("button", name="Close").click()
        await op.get_by_role("button", name="Clear").click()
        assert (await execute()).startswith("200")
        body = await op.locator(".live-responses-table .response-col_description pre").first.inner_text()
        assert mine["id"] in body
    finally:
        await context.close()
