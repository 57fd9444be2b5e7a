"""The pieces of the benchmark whose mistakes would skew a figure without failing a run."""

import gc
import json
import weakref

import pytest

from bench.fake_llm import UnexpectedRequest, respond
from bench.report import Summary, percentile
from bench.stack import quiet_collector
from bench.storage import item_size
from twelvefactor.local.fake_openai import Answer, ToolCallAnswer


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    # Given twenty measurements 1..20
    values = [float(value) for value in range(20, 0, -1)]

    # When the 95th percentile and the summary are taken
    # Then they are values that were measured, ranked from the bottom
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 0.5) == 10.0
    summary = Summary.of(values)
    assert (summary.low, summary.high, summary.count) == (1.0, 20.0, 20)


def test_item_size_follows_dynamodb_rules() -> None:
    # Given an item as the low-level client returns it
    item = {
        "pk": {"S": "THREAD#é"},  # 2 + 9 bytes: é is two bytes in UTF-8
        "payload": {"B": b"\x00" * 10},  # 7 + 10
        "last_seq": {"N": "12345"},  # 8 + (5 digits + 1) // 2 + 1 = 8 + 4
        "flag": {"BOOL": True},  # 4 + 1
        "map": {"M": {"a": {"S": "xy"}}},  # 3 + (3 + 1 + 2 + 1)
    }

    # When it is sized
    # Then names and values count as DynamoDB counts them
    assert item_size(item) == 11 + 17 + 12 + 5 + 10


def test_a_measurement_starts_from_a_frozen_heap_and_records_the_full_collections_it_meets() -> None:
    # Given a harness heap holding garbage in a reference cycle
    class Node:
        peer: object = None

    node = Node()
    node.peer = node
    collected = weakref.ref(node)
    del node
    # When a measurement runs and a full collection happens during it
    with quiet_collector() as pauses:
        frozen = gc.get_freeze_count()
        garbage_was_collected = collected() is None
        gc.collect()
        gc.collect(generation=1)

    # Then the garbage was collected before the rest of the heap was frozen, only the full
    # collection taken during the measurement is recorded, with its duration, and the heap is
    # back in the collector's care afterwards
    assert garbage_was_collected
    assert frozen > 0
    assert len(pauses.seconds) == 1
    assert pauses.as_dict()["longest"] == pauses.seconds[0] > 0
    assert gc.get_freeze_count() == 0


def _tool_call(call_id: str, name: str) -> dict[str, object]:
    return {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "function": {"name": name}}]}


def test_scripted_model_drives_both_protocols_through_the_same_turn() -> None:
    # Given our prompt after the tags came back, in strict and in guided JSON mode
    ours = {
        "messages": [
            {
                "role": "user",
                "content": "<user_message>\n</user_message>\n\n<list_git_tags_result>\n"
                "x: 1\n</list_git_tags_result>\nWhat next?",
            }
        ]
    }
    strict = respond({**ours, "response_format": {"type": "json_schema"}})
    guided = respond({**ours, "response_format": {"type": "json_object"}})

    # Then the step is the deploy, wrapped only for strict mode
    assert isinstance(strict, Answer) and isinstance(guided, Answer)
    assert json.loads(strict.content)["step"]["intent"] == "deploy_backend"
    assert json.loads(guided.content) == {
        "intent": "deploy_backend",
        "tag": "v1.2.3",
        "environment": "staging",
    }

    # Given the peer's messages after the deploy's tool result
    tools = [{"type": "function"}]
    peer = [
        {"role": "user", "content": "Deploy"},
        _tool_call("a", "list_git_tags"),
        {"role": "tool", "tool_call_id": "a", "content": "{}"},
        _tool_call("b", "deploy_backend"),
        {"role": "tool", "tool_call_id": "b", "content": "{}"},
    ]
    # Then the peer gets its tool calls, and a plain answer at the end
    assert respond({"messages": peer[:1], "tools": tools}) == ToolCallAnswer("list_git_tags", {})
    assert isinstance(respond({"messages": peer[:3], "tools": tools}), ToolCallAnswer)
    final = respond({"messages": peer, "tools": tools})
    assert isinstance(final, Answer) and "Deployed v1.2.3" in final.content


def test_scripted_model_refuses_a_conversation_the_scenario_never_produces() -> None:
    # Given a prompt whose last block is an error, which the scenario never produces
    body = {"messages": [{"role": "user", "content": "<error>\nboom\n</error>"}]}

    # When it is asked, Then it says so instead of inventing a step
    with pytest.raises(UnexpectedRequest):
        respond(body)
