"""The console in a real headless browser (Debian's chromium through Selenium) against the local stack.

A person launches deploybot from the launch form, sees the approval appear on the thread page (live
updates, no reload), clicks Approve or Reject with a comment, and watches the deploy and the end land.
Hostile text in a thread (a user message, a tool result, a model's arguments, an error arriving live)
is shown as text and never runs. `make console-screenshot` runs the approval test with
UPDATE_SCREENSHOT=1, which writes the README's screenshot.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.helpers import ConversationScripts, intent, opening
from tests.support import poll_until
from twelvefactor import cli, runtime
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.commands.console import local_console
from twelvefactor.core.events import (
    ApprovalRequested,
    ApprovalRequestedData,
    Error,
    ErrorData,
    Thread,
    ToolCall,
    ToolCallData,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
    dump_thread,
)
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.stack import LocalStack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "console-thread.png"
NEWEST_TAG = "v1.2.3"
WAIT_SECONDS = 60
# Marks each way a hostile string could run: a script element, an event handler, a javascript: link.
XSS = (
    '<script>window.__xss = "script"; alert(1)</script>'
    "<img src=x onerror=\"window.__xss = 'img'\">"
    "<a href=\"javascript:window.__xss='link'\">link</a>"
)


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} is not installed: `make test` installs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver)"
        )
    return found


@pytest.fixture(scope="module")
def console_url(stack: LocalStack) -> Iterator[str]:
    with local_console(stack.api_url, stack.llm.output_mode) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(_executable("chromedriver")))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(browser: WebDriver, css: str, text: str | None = None) -> WebElement:
    """The element once it is on the page (and holds ``text``): live updates put it there, or not."""

    def found(driver: WebDriver) -> WebElement | bool:
        try:
            for element in driver.find_elements(By.CSS_SELECTOR, css):
                if text is None or text in element.text:
                    return element
        except StaleElementReferenceException:  # the page was navigating or being updated: look again
            pass
        return False

    element: WebElement = WebDriverWait(browser, WAIT_SECONDS, poll_frequency=0.2).until(found)
    return element


def _launch(browser: WebDriver, console_url: str, message: str) -> str:
    browser.get(f"{console_url}/launch")
    Select(browser.find_element(By.ID, "agent")).select_by_visible_text("deploybot")
    browser.find_element(By.ID, "message").send_keys(message)
    browser.find_element(By.ID, "launch").click()
    _wait_for(browser, "p.notice", "Thread launched.")
    match = re.search(r"/threads/([A-Za-z0-9_-]+)", browser.current_url)
    assert match, browser.current_url
    return match.group(1)


def _deploy_script(scripts: ConversationScripts, text: str, done: str | None = None) -> str:
    """Tags, then a production deploy; ``done`` is the model's answer after a rejection (a deploy
    that ran ends the turn with deploybot's own message: the model is not asked)."""
    answers = [intent("list_git_tags"), intent("deploy_backend", tag=NEWEST_TAG, environment="production")]
    if done is not None:
        answers.append(intent("done_for_now", message=done))
    return scripts.add(opening(text), *answers)


def _deploys(stack: LocalStack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{stack.services_url}/deploys").json()["deploys"]
    return found


def _summaries(browser: WebDriver) -> list[str]:
    return [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#timeline .summary")]


def _nothing_ran(browser: WebDriver) -> None:
    assert browser.execute_script("return window.__xss === undefined") is True
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is how Selenium asks
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src)")
    assert all(src.endswith("/static/console.js") for src in scripts), scripts
    assert browser.find_elements(By.CSS_SELECTOR, "#main img, #main a[href^='javascript']") == []


def test_launch_then_approve_in_the_browser_shows_the_deploy_and_done(
    stack: LocalStack, scripts: ConversationScripts, console_url: str, browser: WebDriver
) -> None:
    # Given a conversation that lists tags and asks to deploy to production
    text = _deploy_script(scripts, "Can you deploy the backend?")
    deploys_before = len(_deploys(stack))

    # When a person launches it from the launch form
    thread_id = _launch(browser, console_url, text)

    # Then the approval appears on the thread page by itself, naming the call
    approve = _wait_for(browser, "#approve")
    assert "deploy_backend(" in browser.find_element(By.ID, "pending").text
    assert "production" in browser.find_element(By.ID, "pending").text
    browser.find_element(By.CSS_SELECTOR, "#event-2 details summary").click()  # a tool result, as tagged
    if os.environ.get("UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
    else:
        browser.save_screenshot(str(ROOT / ".cache" / "console-thread.png"))

    # When they click Approve
    approve.click()

    # Then the thread shows the deploy's result and done, and the deployment service did deploy
    _wait_for(browser, "#timeline .summary", "done: Deployed backend v1.2.3 to production (deployment ")
    summaries = _summaries(browser)
    assert any(line.startswith("approved") for line in summaries), summaries
    assert any(line.startswith("tool result: deploy_backend") for line in summaries), summaries
    assert browser.find_element(By.ID, "status").text == "done"
    assert [deploy["tag"] for deploy in _deploys(stack)[deploys_before:]] == [NEWEST_TAG]
    assert browser.find_elements(By.ID, "approve") == []
    # ... its cost is unknown (the scripted fake model has no price), never shown as $0
    assert browser.find_element(By.ID, "cost").text == "unknown"
    # ... and the thread list files it under finished, with its tokens and cost
    browser.get(f"{console_url}/?filter=finished")
    assert browser.find_elements(By.CSS_SELECTOR, f"a[href='/threads/{thread_id}']")
    row = browser.find_element(By.XPATH, f"//a[@href='/threads/{thread_id}']/ancestor::tr")
    assert row.find_element(By.CSS_SELECTOR, "td.cost").text == "unknown"
    browser.get(f"{console_url}/?filter=waiting")
    assert browser.find_elements(By.CSS_SELECTOR, f"a[href='/threads/{thread_id}']") == []


def test_reject_with_a_comment_reaches_the_model_and_nothing_is_deployed(
    stack: LocalStack,
    scripts: ConversationScripts,
    console_url: str,
    browser: WebDriver,
    fake_llm: FakeOpenAI,
) -> None:
    # Given a thread waiting for approval, launched from the console
    text = _deploy_script(scripts, "Deploy the backend now", "Understood, nothing was deployed.")
    deploys_before = len(_deploys(stack))
    _launch(browser, console_url, text)
    _wait_for(browser, "#reject")

    # When the person rejects it with a comment
    browser.find_element(By.ID, "comment").send_keys("not during the freeze")
    browser.find_element(By.ID, "reject").click()

    # Then the rejection and its reason are in the thread, the model saw them, and nothing deployed
    _wait_for(browser, "#timeline .summary", "done: Understood, nothing was deployed.")
    assert any(
        line.startswith("rejected by ") and line.endswith(": not during the freeze")
        for line in _summaries(browser)
    )
    last_prompt = next(
        request["messages"][-1]["content"] for request in reversed(fake_llm.requests) if text in str(request)
    )
    assert "not during the freeze" in last_prompt
    assert len(_deploys(stack)) == deploys_before


def test_a_question_from_the_agent_is_answered_in_the_browser(
    scripts: ConversationScripts, console_url: str, browser: WebDriver, fake_llm: FakeOpenAI
) -> None:
    # Given a conversation in which the agent asks a question, then finishes with the answer
    text = scripts.add(
        opening("Deploy something"),
        intent("request_human_input", question="Which environment: staging or production?"),
        intent("done_for_now", message="Noted: staging."),
    )
    _launch(browser, console_url, text)

    # When the question appears and the person types an answer and sends it
    _wait_for(browser, "#pending", "Which environment: staging or production?")
    browser.find_element(By.ID, "answer-text").send_keys("staging, please")
    browser.find_element(By.ID, "answer").click()

    # Then the answer is in the thread, the model read it, and the thread ends
    _wait_for(browser, "#timeline .summary", "done: Noted: staging.")
    assert any(line.endswith(": staging, please") for line in _summaries(browser)), _summaries(browser)
    last_prompt = next(
        request["messages"][-1]["content"] for request in reversed(fake_llm.requests) if text in str(request)
    )
    assert "staging, please" in last_prompt


def test_hostile_text_in_a_thread_is_shown_and_never_runs(
    stack: LocalStack, console_url: str, browser: WebDriver
) -> None:
    # Given a thread whose user message, tool result and model arguments carry markup and scripts
    thread_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    call = ToolCallData(call_id="c1", intent="list_git_tags", arguments={})
    deploy = ToolCallData(
        call_id="c2", intent="deploy_backend", arguments={"tag": XSS, "environment": "staging"}
    )
    events = [
        UserMessage(at=now, data=UserMessageData(text=f"Deploy {XSS}")),
        ToolCall(at=now, data=call),
        ToolResult(at=now, data=ToolResultData(call_id="c1", intent="list_git_tags", result={"tags": [XSS]})),
        ToolCall(at=now, data=deploy),
        ApprovalRequested(
            at=now,
            data=ApprovalRequestedData(call_id="c2", intent="deploy_backend", arguments=deploy.arguments),
        ),
    ]
    store = runtime.current().store
    store.create(ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=now), events)

    # When the person opens it and unfolds every event, as the model sees it and raw
    browser.get(f"{console_url}/threads/{thread_id}")
    for summary in browser.find_elements(By.CSS_SELECTOR, "#timeline details summary"):
        summary.click()

    # Then the text is there to read, literally, and nothing in it ran
    page = browser.find_element(By.ID, "main").text
    assert '<script>window.__xss = "script"; alert(1)</script>' in page
    assert "<img src=x onerror=" in page
    _nothing_ran(browser)

    # When an error carrying a script arrives while the page is open (a live update, not a reload)
    browser.execute_script("window.__same_page = true")
    hostile_error = Error(at=datetime.now(UTC), data=ErrorData(source="tool", message=f"boom {XSS}"))
    store.append(thread_id, [hostile_error], expected_last_seq=len(events) - 1)

    # Then it shows up as text too, and still nothing ran
    _wait_for(browser, "#timeline .summary", "error (tool): boom <script>")
    assert browser.execute_script("return window.__same_page") is True
    _nothing_ran(browser)
    # ... and the browser reported no script error or blocked script (the CSP would have)
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == [], problems


def test_the_exact_request_of_a_decision_is_what_prompt_render_prints(
    stack: LocalStack,
    scripts: ConversationScripts,
    console_url: str,
    browser: WebDriver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a thread that decided twice and waits for approval
    text = _deploy_script(scripts, "Roll out the backend")
    thread_id = _launch(browser, console_url, text)
    _wait_for(browser, "#approve")

    # When the person follows the "exact request" link of the second decision (the deploy call)
    decision = browser.find_element(By.CSS_SELECTOR, "#event-3 a.request")
    decision.click()
    shown = browser.find_element(By.ID, "request").text

    # Then it is `twelvefactor prompt render` on the thread as it stood before that decision
    events = runtime.current().store.load(thread_id)[1].events
    thread_file = tmp_path / "thread.json"
    thread_file.write_text(dump_thread(Thread(id=thread_id, agent="deploybot", events=events[:3])))
    capsys.readouterr()
    mode = stack.llm.output_mode
    assert cli.main(["prompt", "render", "deploybot", "--thread", str(thread_file), "--mode", mode]) == 0
    rendered = capsys.readouterr().out
    page = httpx.get(f"{console_url}/threads/{thread_id}/requests/3").text
    found = re.search(r'<pre class="request" id="request">(.*?)</pre>', page, re.DOTALL)
    assert found is not None
    assert html.unescape(found.group(1)) == rendered
    assert "<list_git_tags_result>" in shown and NEWEST_TAG in shown  # what the model had seen


def test_cancel_asks_for_confirmation_then_cancels(
    stack: LocalStack, scripts: ConversationScripts, console_url: str, browser: WebDriver
) -> None:
    # Given a thread waiting for approval
    text = _deploy_script(scripts, "Deploy the backend please")
    thread_id = _launch(browser, console_url, text)
    _wait_for(browser, "#approve")

    # When the person clicks Cancel, nothing happens until they confirm
    browser.find_element(By.ID, "cancel").click()
    assert "Cancel thread" in browser.find_element(By.TAG_NAME, "h1").text
    assert httpx.get(f"{stack.api_url}/threads/{thread_id}").json()["status"] == "awaiting_approval"
    browser.find_element(By.ID, "confirm-cancel").click()

    # Then the thread is cancelled, and the page says so
    _wait_for(browser, "p.notice", "The thread was cancelled.")
    assert browser.find_element(By.ID, "status").text == "cancelled"
    assert any(line.startswith("cancelled") for line in _summaries(browser))


def test_a_post_without_the_csrf_token_or_from_another_host_changes_nothing(
    stack: LocalStack, scripts: ConversationScripts, console_url: str, browser: WebDriver
) -> None:
    # Given a thread waiting for approval
    text = _deploy_script(scripts, "Deploy the backend today")
    thread_id = _launch(browser, console_url, text)
    _wait_for(browser, "#approve")

    # When a form posts an approval without the token, or with it but from another site or host name
    form = {"action": "approve", "comment": ""}
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.page_source)
    assert token is not None
    without = httpx.post(f"{console_url}/threads/{thread_id}/responses", data=form)
    cross_site = httpx.post(
        f"{console_url}/threads/{thread_id}/responses",
        data={**form, "csrf_token": token.group(1)},
        headers={"Origin": "http://attacker.example"},
    )
    rebound = httpx.get(f"{console_url}/threads/{thread_id}", headers={"Host": f"attacker.example:{80}"})

    # Then each is refused, and the thread still waits
    assert (without.status_code, cross_site.status_code, rebound.status_code) == (403, 403, 421)
    assert "CSRF token" in without.text
    poll_until(lambda: httpx.get(f"{stack.api_url}/threads/{thread_id}").json()["status"], bool)
    assert httpx.get(f"{stack.api_url}/threads/{thread_id}").json()["status"] == "awaiting_approval"
