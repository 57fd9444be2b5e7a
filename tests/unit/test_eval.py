"""Factor 2, prompts tested like code: eval cases, scoring, `twelvefactor eval`, replay.

The command runs against the scripted OpenAI-compatible server on loopback through the real
adapter, with deploybot's real prompt and the case files shipped in evals/deploybot.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

import agents
from twelvefactor.adapters.llm import OpenAIModel
from twelvefactor.cli import main
from twelvefactor.core import replies, state
from twelvefactor.core.agent import Agent
from twelvefactor.core.errors import LlmUnavailable
from twelvefactor.core.events import Thread, UserMessage, dump_event, dump_thread
from twelvefactor.core.ports import ChatMessage, ModelReply, Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused
from twelvefactor.core.tools import DoneForNow
from twelvefactor.evals.cases import (
    Case,
    CaseError,
    FieldCheck,
    Judge,
    load_case,
    load_cases,
    validate_for,
    why_model_not_asked,
)
from twelvefactor.evals.replay import cases_from_thread
from twelvefactor.evals.scoring import JUDGE_SYSTEM, ask_judge, check_field, judge_messages, lookup, meeting
from twelvefactor.local.fake_openai import Answer, FakeOpenAI, HttpError
from twelvefactor.local.fake_services import run_fake_services
from twelvefactor.local.loopback import send_json
from twelvefactor.local.scripted import ScriptedModel
from twelvefactor.settings import OutputMode

REPO = Path(__file__).resolve().parents[2]
EVALS = REPO / "evals"
MISSING = lookup({}, "nothing")


@pytest.fixture(scope="module")
def deploybot() -> Agent:
    return agents.build_registry().get("deploybot")


@pytest.fixture(scope="module")
def prompts() -> JinjaPrompts:
    # The eval's default output mode (json_schema): the prompt words the answer for it.
    return JinjaPrompts(agents.default_prompts_dir(), output_mode="json_schema")


def check(path: str, raw: Any, value: Any) -> list[str]:
    return check_field(path, FieldCheck.model_validate(raw), value)


# --- scoring primitives -------------------------------------------------------------------------


def test_equals_compares_json_values_and_a_bare_value_means_equals() -> None:
    # Given a bare expected value and an explicit `equals: null`
    bare = FieldCheck.model_validate("v1.2.3")
    null = FieldCheck.model_validate({"equals": None})

    # Then the bare value is an equality check, and null is a real expectation, not "no check"
    assert check_field("tag", bare, "v1.2.3") == []
    assert check_field("tag", bare, "v1.2.2") == ["tag: expected 'v1.2.3', got 'v1.2.2'"]
    assert check_field("comment", null, None) == []
    assert check_field("comment", null, "x") == ["comment: expected None, got 'x'"]


def test_one_of_regex_range_and_mentions() -> None:
    # one_of
    assert check("env", {"one_of": ["staging", "production"]}, "staging") == []
    assert check("env", {"one_of": ["staging"]}, "prod") == ["env: expected one of ['staging'], got 'prod'"]
    # regex searches text, and a non-text value never matches
    assert check("tag", {"regex": r"^v\d+\.\d+\.\d+$"}, "v1.2.3") == []
    assert check("tag", {"regex": r"^v\d"}, "1.2.3") == ["tag: '1.2.3' does not match /^v\\d/"]
    assert check("tag", {"regex": "1"}, 1) == ["tag: 1 does not match /1/"]
    # range is inclusive, open-ended on a missing bound, and refuses booleans
    assert check("n", {"range": {"min": 1, "max": 5}}, 5) == []
    assert check("n", {"range": {"min": 1}}, 10_000) == []
    assert check("n", {"range": {"max": 5}}, 5.5) == ["n: 5.5 is outside [-inf, 5]"]
    assert check("n", {"range": {"min": 0}}, True) == ["n: expected a number, got True"]
    # mentions: every term, case-insensitively; a single term may be given bare
    assert check("message", {"mentions": ["V1.2.3", "staging"]}, "Deployed v1.2.3 to Staging") == []
    assert check("message", {"mentions": "prod"}, "Deployed to staging") == [
        "message: does not mention 'prod'"
    ]
    # several checks on one field must all hold
    assert check("tag", {"regex": "^v", "one_of": ["v2"]}, "v1") == ["tag: expected one of ['v2'], got 'v1'"]


def test_dotted_paths_reach_nested_values_and_a_missing_field_fails() -> None:
    data = {"a": {"b": [{"c": 1}]}}
    assert lookup(data, "a.b.0.c") == 1
    assert lookup(data, "a.b.1.c") is MISSING
    assert check("a.x", {"equals": 1}, lookup(data, "a.x")) == ["a.x: missing"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "needs equals, one_of, regex, range or mentions"),
        ({"regex": "("}, "bad regex"),
        ({"range": {}}, "needs min, max or both"),
        ({"range": {"min": 5, "max": 1}}, "above max"),
        ({"equal": 1}, "Extra inputs are not permitted"),
    ],
)
def test_malformed_checks_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FieldCheck.model_validate(raw)


def test_alternatives_pass_on_any_and_explain_a_miss_by_the_matching_intent(deploybot: Agent) -> None:
    # Given a case that accepts a retry of the same deploy or a question to a person
    case = Case.model_validate(
        {
            "name": "alternatives",
            "thread": [{"user_message": "deploy"}],
            "expect": [
                {"intent": "deploy_backend", "fields": {"tag": "v1.2.3", "environment": "staging"}},
                {"intent": "request_human_input"},
            ],
        }
    )
    intents = deploybot.intents

    # Then either alternative passes, a deploy with another tag is explained by the deploy's checks,
    # and an intent no alternative expected names every expected intent
    question = intents.validate_python({"intent": "request_human_input", "question": "Retry?"})
    assert meeting(case.expect, question)[0] == [case.expect[1]]
    wrong_tag = intents.validate_python(
        {"intent": "deploy_backend", "tag": "v1.2.1", "environment": "staging"}
    )
    assert meeting(case.expect, wrong_tag) == ([], ["tag: expected 'v1.2.3', got 'v1.2.1'"])
    done = intents.validate_python({"intent": "done_for_now", "message": "bye"})
    assert meeting(case.expect, done) == (
        [],
        ["intent: expected deploy_backend or request_human_input, got done_for_now"],
    )


def test_the_judge_is_asked_for_a_structured_yes_or_no() -> None:
    # Given a judge model that says yes, then no, then something unreadable, then fails
    judge = ScriptedModel(
        [
            ModelReply('{"intent": "verdict", "verdict": "yes"}'),
            '{"intent": "verdict", "verdict": "no", "reason": "it never names the frontend"}',
            "Yes!",
            LlmUnavailable("down"),
        ]
    )
    messages: list[ChatMessage] = [{"role": "user", "content": "grade this"}]

    # Then only the yes passes, and every other outcome says why it failed
    assert ask_judge(judge, messages).failures == ()
    assert ask_judge(judge, messages).failures == ("judge: no (it never names the frontend)",)
    assert ask_judge(judge, messages).failures == ("judge: unreadable verdict 'Yes!'",)
    assert ask_judge(judge, messages).failures == ("judge: could not ask the model (down)",)


@pytest.mark.parametrize(
    ("mode", "answer", "passes"),
    [
        ("json_schema", {"step": {"intent": "verdict", "verdict": "yes", "reason": None}}, True),
        ("json_schema", {"intent": "verdict", "verdict": "yes"}, False),
        ("json_object", {"intent": "verdict", "verdict": "yes"}, True),
    ],
)
def test_the_judge_answers_in_the_output_mode_and_its_prompt_does_not_contradict_it(
    mode: OutputMode, answer: dict[str, Any], passes: bool
) -> None:
    # Given a judge behind the real adapter in this output mode
    messages = judge_messages(Judge(rubric="Names the frontend."), DoneForNow(message="frontend"), "<x/>")
    with FakeOpenAI([json.dumps(answer)]) as server:
        model = OpenAIModel(model="judge", output_mode=mode, base_url=server.base_url, max_retries=0)
        outcome = ask_judge(model, messages)
        model.close()

    # Then the verdict counts only in the shape the mode asks for (a bare verdict is not a strict
    # answer), and the judge's prompt names no other shape for it to follow
    assert (outcome.failures == ()) is passes
    assert "JSON" not in messages[0]["content"]


# --- case files ----------------------------------------------------------------------------------


def test_shorthand_expands_to_the_events_the_reducer_would_have_written(tmp_path: Path) -> None:
    # Given a fixture in shorthand: a call, its approval request and a rejection, then an error
    path = tmp_path / "rejected.yaml"
    path.write_text(
        """
thread:
  - user_message: Deploy the backend to production.
  - tool_call: {intent: deploy_backend, arguments: {tag: v1.2.3, environment: production}}
  - approval_requested:
  - approval: {approved: false, comment: staging first}
  - tool_call: {intent: deploy_backend, arguments: {tag: v1.2.3, environment: staging}}
  - error: deployment service down
  - type: human_response
    data: {text: a full envelope works too}
expect: {intent: deploy_backend}
"""
    )

    # When it is loaded
    case = load_case(path)

    # Then call ids follow the reducer's numbering, later events point at the latest call, an error
    # after a call is that tool's, and the result is a valid thread in a known state
    events = case.thread
    assert case.name == "rejected"
    assert [e.type for e in events] == [
        "user_message",
        "tool_call",
        "approval_requested",
        "approval",
        "tool_call",
        "error",
        "human_response",
    ]
    data = [dump_event(event)["data"] for event in events]
    assert data[1]["call_id"] == "call-1"
    assert data[2] == {
        "call_id": "call-1",
        "intent": "deploy_backend",
        "arguments": {"tag": "v1.2.3", "environment": "production"},
    }
    assert data[3]["call_id"] == "call-1"
    assert data[5] == {"source": "tool", "message": "deployment service down", "call_id": "call-4"}
    assert state.status(events[:3]) is state.ThreadStatus.AWAITING_APPROVAL
    assert len({event.id for event in events}) == len(events)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("thread: [{user_message: hi}]\n", "expect: Field required"),
        ("thread: [{user_mesage: hi}]\nexpect: {intent: done_for_now}\n", "neither an event envelope"),
        ("thread: [{tool_result: {result: 1}}]\nexpect: {intent: done_for_now}\n", "no tool call before it"),
        ("thread: [{user_message: hi}]\nexpect: {intent: done_for_now}\nexpected: 1\n", "Extra inputs"),
        ("thread: [{user_message: hi}\n", "not valid YAML"),
    ],
)
def test_a_broken_case_file_is_named_with_its_reason(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(document)
    with pytest.raises(CaseError, match=message) as raised:
        load_case(path)
    assert str(path) in str(raised.value)


def test_cases_are_checked_against_the_agent(tmp_path: Path, deploybot: Agent) -> None:
    # Given cases with a typo in an intent, a field no expected intent has, and a thread that waits
    # for an approval (the reducer never asks the model there)
    (tmp_path / "typo.yaml").write_text("thread: [{user_message: hi}]\nexpect: {intent: list_git_tag}\n")
    (tmp_path / "field.yaml").write_text(
        "thread: [{user_message: hi}]\nexpect: {intent: list_git_tags, fields: {tag: v1}}\n"
    )
    (tmp_path / "waiting.yaml").write_text(
        "thread:\n  - user_message: hi\n"
        "  - tool_call: {intent: deploy_backend, arguments: {tag: v1, environment: production}}\n"
        "  - approval_requested:\n"
        "expect: {intent: done_for_now}\n"
    )
    cases = load_cases(tmp_path)

    # Then validation names every problem, by case
    with pytest.raises(CaseError) as raised:
        validate_for(deploybot, cases, tmp_path)
    text = str(raised.value)
    assert "typo: unknown intent list_git_tag" in text
    assert "field: no intent in list_git_tags has a field 'tag'" in text
    assert "waiting: the thread is awaiting_approval" in text


def test_the_shipped_deploybot_cases_load_and_fit_the_agent(deploybot: Agent) -> None:
    cases = load_cases(EVALS / "deploybot")
    validate_for(deploybot, cases, EVALS / "deploybot")
    expected = {intent for case in cases for intent in case.intents}
    assert expected >= {"list_git_tags", "deploy_backend", "request_human_input", "done_for_now"}


# --- twelvefactor eval deploybot against a scripted OpenAI-compatible server ----------------------


def step(intent: str, **fields: Any) -> dict[str, Any]:
    return {"intent": intent, **fields}


RIGHT = {
    "first_step_lists_tags": step("list_git_tags"),
    "deploy_picks_newest_tag": step("deploy_backend", tag="v1.2.3", environment="staging"),
    "production_deploy_requested": step("deploy_backend", tag="v1.2.3", environment="production"),
    "rejected_approval_with_feedback": step("deploy_backend", tag="v1.2.3", environment="staging"),
    "error_leads_to_retry_or_human": step("deploy_backend", tag="v1.2.3", environment="staging"),
    "repeated_error_stops_the_loop": step(
        "request_human_input", question="The deploy service is down. Retry?"
    ),
    "ambiguous_request_asks": step("request_human_input", question="Backend or frontend?"),
    "answer_resolves_question": step("deploy_frontend", tag="v1.2.2", environment="staging"),
    "repeated_lookup_moves_on": step("deploy_backend", tag="v1.2.3", environment="production"),
    "invented_tag_is_not_deployed": step("request_human_input", question="v2.0.0 is not a tag. Which one?"),
}
HUMAN = step("request_human_input", question="The deploy failed. Shall I retry?")
# Per case, the answer to each of three runs where it is not simply RIGHT three times.
FLAKY: dict[str, list[dict[str, Any] | str]] = {
    "first_step_lists_tags": [step("done_for_now", message="Done.")] * 3,
    "deploy_picks_newest_tag": [step("deploy_backend", tag="v1.2.1", environment="staging")] * 3,
    "rejected_approval_with_feedback": [
        RIGHT["rejected_approval_with_feedback"],
        step("deploy_backend", tag="v1.2.3", environment="production"),
        RIGHT["rejected_approval_with_feedback"],
    ],
    "error_leads_to_retry_or_human": [RIGHT["error_leads_to_retry_or_human"], HUMAN, step("list_git_tags")],
    # The tag the person named, not one list_git_tags returned: refused by the grounded enum.
    "invented_tag_is_not_deployed": [
        RIGHT["invented_tag_is_not_deployed"],
        step("deploy_backend", tag="v2.0.0", environment="staging"),
        RIGHT["invented_tag_is_not_deployed"],
    ],
    # The lookup again, while its result is current: refused as not offered.
    "repeated_lookup_moves_on": [RIGHT["repeated_lookup_moves_on"], step("list_git_tags"), "Sure!"],
}
# The cases with a judge rubric, and the field it grades.
JUDGED = {"ambiguous_request_asks": "question"}
# The judge says "no" to the first ambiguous-request question it sees, "yes" to everything else.
JUDGE_SAYS_NO_FIRST = {"ambiguous_request_asks"}
EXPECTED_RATES = {
    "first_step_lists_tags": ("0/3", "0%"),
    "deploy_picks_newest_tag": ("0/3", "0%"),
    "rejected_approval_with_feedback": ("2/3", "67%"),
    "ambiguous_request_asks": ("2/3", "67%"),
    "error_leads_to_retry_or_human": ("2/3", "67%"),
    "invented_tag_is_not_deployed": ("2/3", "67%"),
    "repeated_lookup_moves_on": ("1/3", "33%"),
    "production_deploy_requested": ("3/3", "100%"),
    "repeated_error_stops_the_loop": ("3/3", "100%"),
    "answer_resolves_question": ("3/3", "100%"),
}


class CaseResponder:
    """Answers like a model that recognises each case by its exact rendered prompt.

    A request whose messages are not the rendering of a shipped case gets a 400: so every case
    must have been sent with deploybot's real prompt, or the rates come out wrong.
    """

    def __init__(
        self,
        agent: Agent,
        prompts: JinjaPrompts,
        script: dict[str, list[dict[str, Any] | str]],
        judge_no: Collection[str] = (),
    ) -> None:
        self.by_prompt = {}
        for case in load_cases(EVALS / "deploybot"):
            messages = prompts.render(agent, Thread(id="any", agent=agent.name, events=case.thread))
            self.by_prompt[_key(messages)] = case.name
        self.script = script
        self.judge_no = set(judge_no)
        self.asked: Counter[str] = Counter()
        self.judged: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Answer | HttpError | str:
        with self.lock:
            if body["messages"][0]["content"].startswith(JUDGE_SYSTEM.split("\n")[0][:40]):
                return self._verdict(body)
            name = self.by_prompt.get(_key(body["messages"]))
            if name is None:
                return HttpError(400, "not the rendering of any shipped case")
            self.asked[name] += 1
            answers = self.script.get(name) or [RIGHT[name]] * 3
            answer = answers[(self.asked[name] - 1) % len(answers)]
            return answer if isinstance(answer, str) else json.dumps({"step": answer})

    def _verdict(self, body: dict[str, Any]) -> str:
        graded = body["messages"][1]["content"]
        name = next(name for name, field in JUDGED.items() if RIGHT[name][field] in graded)
        self.judged[name] += 1
        verdict = "no" if name in self.judge_no and self.judged[name] == 1 else "yes"
        return json.dumps({"step": {"intent": "verdict", "verdict": verdict, "reason": "scripted"}})


def _key(messages: list[Any]) -> tuple[tuple[str, str], ...]:
    return tuple((message["role"], message["content"]) for message in messages)


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("PROMPTS_DIR", "LLM_OUTPUT_MODE", "LLM_TEMPERATURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("LLM_MODEL", "scripted-model")
    monkeypatch.setenv("LLM_MAX_RETRIES", "0")
    yield monkeypatch


def table_rows(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in RIGHT:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_the_case_table_in_this_test_covers_every_shipped_case() -> None:
    shipped = {case.name for case in load_cases(EVALS / "deploybot")}
    assert shipped == set(RIGHT), "a deploybot case was added or renamed: give it an answer in RIGHT"


def test_eval_prints_per_case_pass_rates_and_fails_below_the_threshold(
    llm_env: pytest.MonkeyPatch, deploybot: Agent, prompts: JinjaPrompts, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a scripted OpenAI-compatible server that answers some cases wrongly some of the time
    responder = CaseResponder(deploybot, prompts, FLAKY, JUDGE_SAYS_NO_FIRST)
    with FakeOpenAI(responder=responder, api_key="test-key") as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When deploybot's suite runs three times per case
        code = main(["eval", "deploybot", "--repeat", "3"])
        requests = server.requests

    # Then each case's row shows its pass rate, the suite is below its 80% threshold, and it exits 1
    out, err = capsys.readouterr()
    assert table_rows(out) == EXPECTED_RATES
    assert "deploybot: 60% of runs passed (threshold 80%) FAIL" in out
    assert code == 1
    # And every case was asked three times with deploybot's structured-output schema, the judge
    # only on answers that met their checks
    assert responder.asked == Counter({name: 3 for name in RIGHT})
    assert responder.judged == Counter({"ambiguous_request_asks": 3})
    assert len(requests) == 30 + 3
    assert all(request["response_format"]["type"] == "json_schema" for request in requests)
    decisions = [request for request in requests if "done_for_now" in json.dumps(request["response_format"])]
    assert len(decisions) == 30
    # And progress came one line per case, as each completed
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == [f"[{i}/10" for i in range(1, 11)]
    assert any(
        "deploy_picks_newest_tag: 0/3 passed" in line and "tag: expected 'v1.2.3'" in line
        for line in progress
    )
    # And answers the reducer would refuse fail the same way: a lookup not offered again, a tag
    # that list_git_tags never returned
    assert any(
        "repeated_lookup_moves_on: 1/3 passed" in line and "refused: list_git_tags is not offered now" in line
        for line in progress
    )
    assert any(
        "invented_tag_is_not_deployed: 2/3 passed" in line
        and "deploy_backend.tag: Input should be 'v1.2.3', 'v1.2.2' or 'v1.2.1'" in line
        for line in progress
    )


def test_json_results_and_compare_show_what_a_change_improved_or_broke(
    llm_env: pytest.MonkeyPatch,
    deploybot: Agent,
    prompts: JinjaPrompts,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the results of a run where three cases failed
    before = tmp_path / "before.json"
    broken = {name: FLAKY[name] for name in ("first_step_lists_tags", "deploy_picks_newest_tag")}
    broken["answer_resolves_question"] = [step("deploy_backend", tag="v1.2.2", environment="staging")]
    with FakeOpenAI(responder=CaseResponder(deploybot, prompts, broken)) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)
        assert main(["eval", "deploybot", "--json", str(before)]) == 1
    capsys.readouterr()

    # When a later run fixes those three but breaks another, and is compared with the first
    after = tmp_path / "after.json"
    with FakeOpenAI(
        responder=CaseResponder(deploybot, prompts, {"repeated_lookup_moves_on": ["Sure!"]})
    ) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(["eval", "deploybot", "--json", str(after), "--compare", str(before)])

    # Then the comparison names each moved case, and 9 of 10 clears the 80% threshold
    out = capsys.readouterr().out
    comparison = out[out.index("compared with") :].splitlines()
    moved = [line.split() for line in comparison if line.endswith(("improved", "regressed"))]
    assert moved == [
        ["deploybot/answer_resolves_question", "0%", "->", "100%", "improved"],
        ["deploybot/deploy_picks_newest_tag", "0%", "->", "100%", "improved"],
        ["deploybot/first_step_lists_tags", "0%", "->", "100%", "improved"],
        ["deploybot/repeated_lookup_moves_on", "100%", "->", "0%", "regressed"],
    ]
    assert "deploybot: 70% -> 90%" in out
    assert "3 improved, 1 regressed, 6 unchanged" in out
    assert code == 0
    # And the JSON file holds per-case rates and each attempt's reasons, for machines
    results = json.loads(after.read_text())
    cases = {case["case"]: case for case in results["suites"][0]["cases"]}
    assert results["model"] == "scripted-model"
    assert results["suites"][0]["pass_rate"] == 0.9
    assert cases["repeated_lookup_moves_on"]["pass_rate"] == 0
    assert cases["repeated_lookup_moves_on"]["attempts"][0]["failures"][0].startswith(
        "refused: invalid model output"
    )
    assert cases["first_step_lists_tags"]["attempts"][0]["intent"] == "list_git_tags"


def test_model_and_threshold_options_override_the_environment_and_the_suite_config(
    llm_env: pytest.MonkeyPatch,
    deploybot: Agent,
    prompts: JinjaPrompts,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a server that always answers the first-step case wrongly
    wrong = {"first_step_lists_tags": FLAKY["first_step_lists_tags"]}
    with FakeOpenAI(responder=CaseResponder(deploybot, prompts, wrong)) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When that case runs under the suite's 80% threshold, then with --threshold 0 and --model
        strict = main(["eval", "deploybot", "--case", "first_step_lists_tags"])
        lenient = main(
            ["eval", "deploybot", "--case", "first_step_lists_tags", "--threshold", "0", "--model", "m2"]
        )
        models = [request["model"] for request in server.requests]

    # Then the same 0% fails the suite's bar and passes the lowered one, asked of the named model
    out = capsys.readouterr().out
    assert (strict, lenient) == (1, 0)
    assert "0% of runs passed (threshold 80%) FAIL" in out
    assert "0% of runs passed (threshold 0%) PASS" in out
    assert models == ["scripted-model", "m2"]


def test_a_model_that_cannot_be_asked_stops_the_run_with_exit_2_not_the_regression_code(
    llm_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a provider that rejects the configured API key
    with FakeOpenAI(api_key="the-right-key") as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When a case is run twice
        code = main(["eval", "deploybot", "--case", "first_step_lists_tags", "--repeat", "2"])

    # Then the run stops at the first refusal, with the provider's reason, and exits 2 ("could not
    # run"), not 1 (the prompt regressed); no pass rate is printed for a run that never ran
    out, err = capsys.readouterr()
    assert code == 2
    assert "could not be asked" in err and "rejected the API key" in err
    assert table_rows(out) == {}
    assert "[1/1]" not in err  # no case was scored


def test_an_unreachable_model_exits_2(
    llm_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a base URL where nothing listens (a port just released)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm_env.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")

    # When a case is run
    code = main(["eval", "deploybot", "--case", "first_step_lists_tags"])

    # Then the eval could not run, and says why
    assert code == 2
    assert "could not connect" in capsys.readouterr().err


def test_a_judge_that_cannot_be_asked_makes_the_run_incomplete_not_a_regression(
    llm_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model that answers the judged case rightly, and fails (503) every request for a verdict
    def responder(request: dict[str, Any]) -> HttpError | str:
        if "verdict" in json.dumps(request.get("response_format", {})):
            return HttpError(503, "judge overloaded")
        return json.dumps({"step": RIGHT["ambiguous_request_asks"]})

    with FakeOpenAI(responder=responder) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When the judged case runs
        code = main(["eval", "deploybot", "--case", "ambiguous_request_asks"])

    # Then the missing verdict makes the run "could not run" (2), not a failing prompt (1)
    assert code == 2
    assert "could not run: 1 of 1 attempts could not ask the model" in capsys.readouterr().err


def test_help_names_each_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    # When eval's help is shown
    with pytest.raises(SystemExit):
        main(["eval", "--help"])

    # Then it says what 0, 1 and 2 mean
    out = capsys.readouterr().out
    assert "0  every suite reached its threshold" in out
    assert "1  a suite's pass rate is below its threshold" in out
    assert "2  the eval could not run" in out and "could not be asked" in out


def test_a_model_lost_mid_run_makes_the_rates_incomplete_and_exits_2(
    llm_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model that answers the first attempt rightly, then fails with a 503 (retries are off)
    right = json.dumps({"step": step("list_git_tags")})
    with FakeOpenAI([right, HttpError(503, "overloaded")]) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When the case runs twice
        code = main(["eval", "deploybot", "--case", "first_step_lists_tags", "--repeat", "2"])

    # Then the table shows what was measured, and the exit code says the run was incomplete (2),
    # whatever the pass rate
    out, err = capsys.readouterr()
    assert table_rows(out) == {"first_step_lists_tags": ("1/2", "50%")}
    assert "could not run: 1 of 2 attempts could not ask the model" in err
    assert code == 2


def test_unusable_cases_or_arguments_exit_2_without_asking_a_model(
    llm_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a case folder whose only case expects an intent deploybot does not have
    (tmp_path / "deploybot").mkdir()
    (tmp_path / "deploybot" / "bad.yaml").write_text(
        "thread: [{user_message: hi}]\nexpect: {intent: rollback}\n"
    )
    with FakeOpenAI() as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When it is run, or an unknown agent is named
        bad_case = main(["eval", "deploybot", "--evals-dir", str(tmp_path)])
        bad_agent = main(["eval", "nobody", "--evals-dir", str(tmp_path)])
        asked = server.requests

    # Then both stop with a reason on stderr and exit 2, and the model was never asked
    err = capsys.readouterr().err
    assert (bad_case, bad_agent) == (2, 2)
    assert "unknown intent rollback" in err
    assert "no agent named 'nobody'" in err
    assert asked == []


def test_a_case_exported_as_a_thread_renders_to_exactly_what_the_eval_sends(
    llm_env: pytest.MonkeyPatch,
    deploybot: Agent,
    prompts: JinjaPrompts,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given one case's thread exported for `twelvefactor prompt render`
    case = "rejected_approval_with_feedback"
    assert main(["eval", "deploybot", "--case", case, "--export-threads", str(tmp_path)]) == 0
    capsys.readouterr()

    # When it is rendered, and the same case is evaluated against the scripted server
    assert main(["prompt", "render", "deploybot", "--thread", str(tmp_path / f"{case}.json")]) == 0
    rendered = capsys.readouterr().out
    with FakeOpenAI(responder=CaseResponder(deploybot, prompts, {})) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)
        assert main(["eval", "deploybot", "--case", case]) == 0
        sent = server.requests[0]["messages"]

    # Then the rendering shows every message the eval sent, word for word
    assert [message["role"] for message in sent] == ["system", "user"]
    for message in sent:
        assert f"=== {message['role']} ===\n{message['content']}\n" in rendered


# --- replay ---------------------------------------------------------------------------------------


DEPLOY_PROD = step("deploy_backend", tag="v1.2.3", environment="production")
# The model's two decisions; code writes the done message after the approved deploy ran.
REAL_ANSWERS = [step("list_git_tags"), DEPLOY_PROD]


@pytest.fixture
def real_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prompts: JinjaPrompts) -> Path:
    """A thread written by the real reducer, deploybot's real tools and the fake deploy service:
    list tags, deploy to production, approved by a person, done. Saved as `dump_thread` writes it."""
    with run_fake_services() as service_url:
        monkeypatch.setenv("DEPLOYBOT_SERVICE_URL", service_url)
        agent = agents.build_registry().get("deploybot")
        model = ScriptedModel([json.dumps(answer) for answer in REAL_ANSWERS])
        ports = Ports(llm=model, prompts=prompts)
        thread = Thread(
            id="thread-42",
            agent="deploybot",
            events=(
                UserMessage.model_validate(
                    {
                        "at": "2025-02-03T10:00:00Z",
                        "data": {"text": "Can you deploy the backend to production?"},
                    }
                ),
            ),
        )
        thread = run_until_paused(agent, thread, ports)
        assert state.status(thread.events) is state.ThreadStatus.AWAITING_APPROVAL
        approval = replies.ApprovalReply(approved=True, by="U024BE7LH")
        thread = run_until_paused(
            agent, thread.extended(replies.respond(thread, approval, at=thread.events[-1].at)), ports
        )
    assert state.status(thread.events) is state.ThreadStatus.DONE
    path = tmp_path / "thread-42.json"
    path.write_text(dump_thread(thread))
    return path


def test_replay_finds_each_decision_the_model_made(real_thread: Path, deploybot: Agent) -> None:
    # Given a finished thread with tool results, an approval request and an approval after the
    # model's two decisions, and a done message written by code
    thread = Thread.model_validate_json(real_thread.read_text())

    # When it is turned into cases
    replay = cases_from_thread(deploybot, thread)

    # Then there is one case per decision, each ending where the model was asked and expecting
    # what it decided: tags, then the deploy with its arguments pinned; the done that code wrote
    # is no decision of the model's
    assert [case.name for case in replay.cases] == [
        "thread-42-001-list_git_tags",
        "thread-42-003-deploy_backend",
    ]
    assert [len(case.thread) for case in replay.cases] == [1, 3]
    assert thread.events[-1].type == "done"
    assert all(why_model_not_asked(deploybot, case.thread) is None for case in replay.cases)
    deploy = replay.cases[1].expect[0]
    assert {path: check.equals for path, check in deploy.fields.items()} == {
        "tag": "v1.2.3",
        "environment": "production",
    }
    assert replay.skipped == ()


def test_replayed_cases_written_as_files_pass_against_the_same_answers(
    llm_env: pytest.MonkeyPatch, real_thread: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the thread's decision points written as case files
    evals = tmp_path / "evals"
    assert main(["eval", "--from-thread", str(real_thread), "--write", str(evals / "deploybot")]) == 0
    written = sorted((evals / "deploybot").glob("*.yaml"))
    assert [path.name for path in written] == [
        "thread-42-001-list_git_tags.yaml",
        "thread-42-003-deploy_backend.yaml",
    ]
    document = yaml.safe_load(written[1].read_text())
    assert [event["type"] for event in document["thread"]] == ["user_message", "tool_call", "tool_result"]
    assert document["expect"] == {
        "intent": "deploy_backend",
        "fields": {"tag": {"equals": "v1.2.3"}, "environment": {"equals": "production"}},
    }
    capsys.readouterr()

    # When the suite runs against a model that gives the same answers again (json_object mode)
    llm_env.setenv("LLM_OUTPUT_MODE", "json_object")
    with FakeOpenAI([json.dumps(answer) for answer in REAL_ANSWERS]) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(["eval", "deploybot", "--evals-dir", str(evals)])

    # Then every replayed case passes
    out = capsys.readouterr().out
    assert "deploybot: 100% of runs passed" in out
    assert code == 0


def test_replay_catches_a_model_that_now_decides_differently(
    llm_env: pytest.MonkeyPatch, real_thread: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model that now deploys to staging where the recorded model chose production
    llm_env.setenv("LLM_OUTPUT_MODE", "json_object")
    staging = {**DEPLOY_PROD, "environment": "staging"}
    answers = [REAL_ANSWERS[0], staging]
    with FakeOpenAI([json.dumps(answer) for answer in answers]) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When the thread is replayed directly
        code = main(["eval", "--from-thread", str(real_thread)])

    # Then exactly that decision fails, and the run exits 1
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("thread-42")}
    assert rows == {
        "thread-42-001-list_git_tags": "1/1",
        "thread-42-003-deploy_backend": "0/1",
    }
    assert "environment: expected 'production', got 'staging'" in err
    assert code == 1


def test_a_saved_first_page_of_a_thread_is_refused_rather_than_replayed_short(
    real_thread: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a saved `GET /threads/{id}` answer whose events continue on another page
    view = json.loads(real_thread.read_text())
    first_page = {
        "thread_id": view["id"],
        "agent": view["agent"],
        "events": view["events"][:2],
        "next_after": 1,
    }
    saved = tmp_path / "first-page.json"
    saved.write_text(json.dumps(first_page))

    # When it is replayed
    code = main(["eval", "--from-thread", str(saved)])

    # Then nothing is replayed, and the error says why and what to do instead
    out, err = capsys.readouterr()
    assert code != 0 and "first-page" not in out
    assert "only the first page" in err and "--from-thread <id>" in err


def test_a_thread_saved_from_the_api_is_replayed_like_the_dumped_thread(
    real_thread: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    api_thread_answer: Callable[..., dict[str, Any]],
) -> None:
    # Given the finished thread saved as GET /threads/{id} answers it: every event with its seq,
    # and the status, tokens, channel and cursor the API adds
    thread = Thread.model_validate_json(real_thread.read_text())
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(api_thread_answer(thread)))

    # When both files are turned into cases
    assert main(["eval", "--from-thread", str(real_thread), "--write", str(tmp_path / "dumped")]) == 0
    code = main(["eval", "--from-thread", str(saved), "--write", str(tmp_path / "saved")])

    # Then the saved answer is accepted and gives the very same case files
    assert code == 0, capsys.readouterr().err
    dumped_files = sorted((tmp_path / "dumped").glob("*.yaml"))
    saved_files = sorted((tmp_path / "saved").glob("*.yaml"))
    assert [path.name for path in saved_files] == [path.name for path in dumped_files] != []
    assert [path.read_text() for path in saved_files] == [path.read_text() for path in dumped_files]


class _ThreadApi(BaseHTTPRequestHandler):
    """Stands in for the stack's GET /threads/{id} and GET /threads/{id}/events, answering in the
    API's shapes: the view holds the first page of events, the rest follow the `next_after` cursor."""

    pages: ClassVar[dict[str, dict[str, Any]]] = {}

    def do_GET(self) -> None:
        page = self.pages.get(self.path)
        if page is None:
            self.send_response(404)
            self.end_headers()
            return
        send_json(self, 200, page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_replay_fetches_a_thread_by_id_from_the_api(
    llm_env: pytest.MonkeyPatch, real_thread: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the thread served by an API in two pages: the ThreadView with its first three events and
    # a cursor, then the rest from /events
    thread = json.loads(real_thread.read_text())
    events = [{"seq": seq, **event} for seq, event in enumerate(thread["events"])]
    view = {"thread_id": thread["id"], "agent": thread["agent"], "status": "done"}
    pages = {
        "/threads/thread-42": {**view, "events": events[:3], "next_after": 2},
        "/threads/thread-42/events?after=2": {
            "thread_id": "thread-42",
            "events": events[3:],
            "next_after": None,
        },
    }
    handler = type("Handler", (_ThreadApi,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        api_url = f"http://127.0.0.1:{server.server_address[1]}"

        # When the thread is replayed by id, and an unknown id is asked for
        code = main(
            ["eval", "--from-thread", "thread-42", "--api-url", api_url, "--write", str(tmp_path / "out")]
        )
        missing = main(
            ["eval", "--from-thread", "thread-7", "--api-url", api_url, "--write", str(tmp_path / "no")]
        )
    finally:
        server.shutdown()
        server.server_close()
        serving.join()

    # Then the same three cases are written, and the unknown thread is a clear error that writes nothing
    assert code == 0
    assert len(list((tmp_path / "out").glob("*.yaml"))) == 2
    assert missing == 2
    assert "no thread thread-7" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


# --- the embedded model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_suite_runs_against_the_embedded_smollm2_model(
    llm_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from twelvefactor.local.embedded_llm import MODEL_ALIAS, embedded_llm

    # Given the embedded SmolLM2 model behind llama.cpp's OpenAI-compatible server, in the mode
    # where llama.cpp decodes against the schema
    with embedded_llm() as base_url:
        llm_env.setenv("OPENAI_BASE_URL", base_url)
        llm_env.setenv("LLM_MODEL", MODEL_ALIAS)
        llm_env.setenv("LLM_OUTPUT_MODE", "json_object")

        # When deploybot's suite runs against it
        code = main(["eval", "deploybot", "--json", str(tmp_path / "smollm2.json")])

    # Then the harness completes and reports every case, and the model clears its own bar in
    # evals/deploybot/config.yaml (thresholds: smollm2-135m), so a change that makes the embedded
    # default worse fails here (at temperature 0 the answers repeat run after run)
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nSmolLM2-135M on deploybot's cases:\n{out}")
    results = json.loads((tmp_path / "smollm2.json").read_text())
    assert {case["case"] for case in results["suites"][0]["cases"]} == set(RIGHT)
    assert all(case["runs"] == 1 for case in results["suites"][0]["cases"])
    assert "deploybot:" in out and "(threshold 50%) PASS" in out
    assert code == 0


def test_a_suite_can_set_its_bar_per_model(
    llm_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a suite whose bar is 100%, but 0% for one named model, and a model that always misses
    (tmp_path / "deploybot").mkdir()
    (tmp_path / "deploybot" / "first.yaml").write_text(
        "thread: [{user_message: Deploy the backend.}]\nexpect: {intent: list_git_tags}\n"
    )
    (tmp_path / "deploybot" / "config.yaml").write_text("threshold: 1.0\nthresholds: {small-model: 0.0}\n")
    wrong = json.dumps({"step": {"intent": "done_for_now", "message": "no"}})
    with FakeOpenAI([wrong, wrong]) as server:
        llm_env.setenv("OPENAI_BASE_URL", server.base_url)

        # When the suite runs against another model, then against the named one
        general = main(["eval", "deploybot", "--evals-dir", str(tmp_path)])
        named = main(["eval", "deploybot", "--evals-dir", str(tmp_path), "--model", "small-model"])

    # Then each run is held to its own model's bar
    out = capsys.readouterr().out
    assert (general, named) == (1, 0)
    assert "0% of runs passed (threshold 100%) FAIL" in out
    assert "0% of runs passed (threshold 0%) PASS" in out
