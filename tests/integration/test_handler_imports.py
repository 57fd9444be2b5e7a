"""What a trigger handler's cold start imports: never the X-Ray SDK by default, openai or httpx
(nor httpx when its first call builds the agents).

None of them sends HTTP itself (the Api function only verifies webhook signatures; Slack's Web API
client is slack_sdk's, on urllib), so an HTTP client at import would be cold-start cost for nothing.

Each handler is imported in a fresh interpreter, as Lambda does, so modules loaded by other tests
cannot hide or fake an import. Timings are bench/cold_start.py's business; this checks which
modules are loaded, which is what decides them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


ROOT = Path(__file__).resolve().parents[2]
TRIGGERS = ("api", "slack", "email", "eventbridge")
NEVER_AT_IMPORT = ("aws_xray_sdk", "openai", "httpx")
# Settings the trigger handlers validate at import; values need only be well formed.
HANDLER_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "THREADS_TABLE": "threads",
    "PAYLOAD_BUCKET": "payloads",
    "IDEMPOTENCY_TABLE": "idempotency",
    "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:agent",
}
PROBE = """
import importlib.util, json, sys
for blocked in {blocked!r}:
    sys.modules[blocked] = None  # what `import` finds when the package is not installed
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
exec({then!r})
print(json.dumps(sorted(name for name in {watched!r} if sys.modules.get(name) is not None)))
"""


def _loaded_after_import(
    handler: str, *, blocked: tuple[str, ...], environment: dict[str, str], then: str = ""
) -> list[str]:
    code = PROBE.format(
        blocked=blocked, path=str(ROOT / "functions" / handler / "app.py"), watched=NEVER_AT_IMPORT, then=then
    )
    inherited = {
        name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "POWERTOOLS_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**inherited, **HANDLER_ENVIRONMENT, **environment},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize("handler", TRIGGERS)
def test_a_trigger_handler_imports_from_the_default_layer_without_xray_openai_or_httpx(handler: str) -> None:
    # Given the default layer, which has no X-Ray SDK, in Lambda with tracing left on (Tracing: Active)
    environment = {"LAMBDA_TASK_ROOT": str(ROOT / "functions" / handler)}
    # When the handler module is imported in a fresh interpreter
    loaded = _loaded_after_import(handler, blocked=("aws_xray_sdk",), environment=environment)
    # Then it imports (no Tracer reaching for the missing SDK), and loads none of the three
    assert loaded == []


@pytest.mark.parametrize("handler", TRIGGERS)
def test_disabled_tracing_keeps_an_installed_xray_sdk_out_of_the_cold_start(handler: str) -> None:
    # Given a layer with the X-Ray SDK (the dev venv has it) and tracing disabled
    environment = {"POWERTOOLS_TRACE_DISABLED": "true"}
    # When the handler module is imported in a fresh interpreter
    loaded = _loaded_after_import(handler, blocked=(), environment=environment)
    # Then the SDK is not imported all the same, and neither is openai or httpx
    assert loaded == []


@pytest.mark.parametrize("handler", TRIGGERS)
def test_a_trigger_builds_its_agents_without_loading_httpx(handler: str) -> None:
    # Given a trigger handler imported in a fresh interpreter
    environment = {"POWERTOOLS_TRACE_DISABLED": "true"}
    # When it builds the agent registry, as its first launch or answer does
    first_call = "from twelvefactor import runtime; runtime.current().registry.get('deploybot')"
    loaded = _loaded_after_import(handler, blocked=(), environment=environment, then=first_call)
    # Then httpx is still not loaded: only the tools' executors send HTTP, and they run in the Reducer
    assert loaded == []


@pytest.mark.parametrize(
    ("variable", "value", "cold_start_fails"),
    [("ONCALL_TIMEOUT_SECONDS", "600", True), ("ONCALL_TIMEOUT_SECONDS", "5", False)],
)
def test_an_agents_bad_setting_fails_the_reducers_cold_start(
    variable: str, value: str, cold_start_fails: bool
) -> None:
    # Given the Reducer's environment with one of an agent's own variables set
    code = PROBE.format(
        blocked=(), path=str(ROOT / "functions/reducer/app.py"), watched=NEVER_AT_IMPORT, then=""
    )
    inherited = {n: v for n, v in os.environ.items() if not n.startswith(("AWS_", "POWERTOOLS_", "ONCALL_"))}
    # When the handler is imported, as Lambda's init does
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**inherited, **HANDLER_ENVIRONMENT, "POWERTOOLS_TRACE_DISABLED": "true", variable: value},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then a value the agent's settings refuse fails the init, naming the field; a good one does not
    assert (done.returncode != 0) == cold_start_fails, done.stderr
    if cold_start_fails:
        assert "OncallSettings" in done.stderr and "timeout_seconds" in done.stderr


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
def test_the_reducer_loads_its_llm_adapter_at_import_for_the_snapstart_snapshot(provider: str) -> None:
    # Given the Reducer configured for a provider
    environment = {
        "POWERTOOLS_TRACE_DISABLED": "true",
        "LLM_PROVIDER": provider,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    # When its module is imported in a fresh interpreter (what SnapStart snapshots), Then the
    # provider's adapter is already imported, and for Bedrock its boto3 client is already built
    adapter = "twelvefactor.adapters.bedrock" if provider == "bedrock" else "twelvefactor.adapters.llm"
    check = (
        f"import sys; from twelvefactor import runtime; assert {adapter!r} in sys.modules; "
        f"assert ('bedrock_client' in vars(runtime.current())) is {provider == 'bedrock'}"
    )
    loaded = _loaded_after_import("reducer", blocked=(), environment=environment, then=check)
    # And the openai SDK with it: the chat-completions adapter's, and (for now) Bedrock's too, which
    # shares the chat adapter's schema helpers in adapters/llm.py
    assert "openai" in loaded
