"""Typed settings read from the environment (`twelvefactor.settings.EnvironmentSettings`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from twelvefactor.settings import LlmSettings, StoreSettings, TracingSettings


def test_settings_are_read_from_the_variables_their_aliases_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the variables a function's template sets, as text
    monkeypatch.setenv("THREADS_TABLE", "threads")
    monkeypatch.setenv("PAYLOAD_BUCKET", "payloads")
    monkeypatch.setenv("OFFLOAD_THRESHOLD_BYTES", "1000")
    monkeypatch.delenv("FINISHED_THREAD_TTL_DAYS", raising=False)
    # When the settings are built
    settings = StoreSettings()
    # Then each field holds its variable, converted to its type, and an unset one its default
    assert (settings.threads_table, settings.payload_bucket) == ("threads", "payloads")
    assert settings.offload_threshold_bytes == 1000
    assert settings.finished_thread_ttl_days == 30


def test_a_value_passed_in_code_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a variable set in the environment
    monkeypatch.setenv("LLM_MODEL", "from-the-environment")
    # When the same setting is passed by its name or its alias, Then the passed value is kept
    assert LlmSettings(model="by-name").model == "by-name"
    assert LlmSettings.model_validate({"LLM_MODEL": "by-alias"}).model == "by-alias"


def test_a_missing_or_malformed_variable_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a required variable unset and another out of its range
    monkeypatch.delenv("THREADS_TABLE", raising=False)
    monkeypatch.setenv("PAYLOAD_BUCKET", "payloads")
    monkeypatch.setenv("OFFLOAD_THRESHOLD_BYTES", "999999999")
    # When the settings are built, Then validation fails and names both variables
    with pytest.raises(ValidationError) as failure:
        StoreSettings()
    places = {error["loc"][0] for error in failure.value.errors()}
    assert places == {"THREADS_TABLE", "OFFLOAD_THRESHOLD_BYTES"}


@pytest.mark.parametrize(("text", "disabled"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_boolean_variables_accept_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, text: str, disabled: bool
) -> None:
    # Given Powertools' trace switch spelled as templates and shells spell it
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", text)
    # When read, Then it is the boolean meant
    assert TracingSettings().disabled is disabled
