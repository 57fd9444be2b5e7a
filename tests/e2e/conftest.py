"""The local stack over real HTTP: moto server, the template's resources, the handlers behind the
local gateway, Step Functions executing the real ASL, a scripted model speaking the OpenAI protocol.

One stack serves a whole test module (it takes seconds to start). Tests stay independent because
every test opens its own conversation with a message of its own, and the fake model answers each
conversation from that conversation's script (`ConversationScripts`), whatever order requests
arrive in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.helpers import ConversationScripts
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.stack import LlmEndpoint, LocalStack


@pytest.fixture(scope="module")
def scripts() -> ConversationScripts:
    return ConversationScripts()


@pytest.fixture(scope="module")
def fake_llm(scripts: ConversationScripts) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=scripts) as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(fake_llm: FakeOpenAI) -> Iterator[LocalStack]:
    endpoint = LlmEndpoint(fake_llm.base_url, fake_llm.model, output_mode="json_object", kind="scripted")
    with LocalStack(endpoint) as running:
        yield running
