"""Figure 1: cold start, as the import time of each handler module in a fresh interpreter."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from bench.builds import python312
from bench.harness import ROOT, Harness, WorkerFailed
from bench.report import Figure, Summary, Verdict, ms, ratio

TRIGGERS = ("api", "slack", "email", "eventbridge")
# Triggers with a bare twin in bench/bare_handlers: the same libraries, none of our code.
BARE_HANDLERS = ("api", "slack", "email")
BARE_DIR = ROOT / "bench" / "bare_handlers"
BREAKDOWN_PACKAGES = 6
FUNCTIONS = (*TRIGGERS, "notify", "reducer")
# What each function's first invocation imports on top of its module (the runtime builds its
# adapters on first use); the LangGraph handler imports everything at the top.
_FIRST_CALL_COMMON = ("twelvefactor.adapters.dynamodb_store", "agents")
_FIRST_CALL_TRIGGER = (
    *_FIRST_CALL_COMMON,
    "twelvefactor.adapters.stepfunctions",
    "aws_lambda_powertools.utilities.idempotency",
)
FIRST_CALL_IMPORTS = {
    "api": _FIRST_CALL_TRIGGER,
    "slack": (*_FIRST_CALL_TRIGGER, "twelvefactor.adapters.slack_channel"),
    "email": (*_FIRST_CALL_TRIGGER, "twelvefactor.adapters.email_channel"),
    "eventbridge": _FIRST_CALL_TRIGGER,
    "notify": (
        *_FIRST_CALL_COMMON,
        "twelvefactor.adapters.stepfunctions",
        "twelvefactor.adapters.slack_channel",
    ),
    # The LLM adapter (and its SDK) is imported by the reducer module itself (`preload_llm`), so a
    # SnapStart snapshot holds it; listed again, it costs nothing more here.
    "reducer": (*_FIRST_CALL_COMMON, "twelvefactor.adapters.llm", "twelvefactor.core.prompts"),
}
# Settings the handlers validate at import; values only need to be well formed.
HANDLER_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "THREADS_TABLE": "threads",
    "PAYLOAD_BUCKET": "payloads",
    "IDEMPOTENCY_TABLE": "idempotency",
    "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:agent",
    "CHECKPOINT_TABLE": "checkpoints",
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "bench",
    "LANGSMITH_TRACING": "false",
}
# Timed in the fresh process itself: nothing but `sys` and `time` is loaded before the clock starts.
PROBE = """
import sys, time
sys.path[:0] = {path!r}
started = time.perf_counter()
import {module}
imported = time.perf_counter()
openai_loaded = "openai" in sys.modules
modules = len(sys.modules)
for name in {then!r}:
    __import__(name)
finished = time.perf_counter()
import json
print(json.dumps({{"import": imported - started, "first_call": finished - started,
                  "openai": openai_loaded, "modules": modules}}))
"""


@dataclass(frozen=True)
class Subject:
    label: str
    python: str
    path: tuple[str, ...]  # put first on sys.path, as Lambda puts the function's code and /opt/python
    module: str
    then: tuple[str, ...] = ()
    # -I (isolated: no site-packages, no cwd) when `path` holds everything, as on Lambda.
    isolated: bool = True

    def command(self, code: str, *options: str) -> list[str]:
        return [self.python, "-I" if self.isolated else "-sE", *options, "-c", code]


def lambda_subjects(h: Harness, python: str) -> list[Subject]:
    """Each side's Lambda build on a bare Python 3.12: the function's folder, the layer, boto3."""
    builds = h.builds()
    ours, runtime = str(builds.ours_path), str(builds.runtime)
    found = [Subject("floor: import boto3, pydantic", python, (ours, runtime), "boto3, pydantic")]
    for name in FUNCTIONS:
        path = (str(ROOT / "functions" / name), ours, runtime)
        found.append(Subject(name, python, path, "app", FIRST_CALL_IMPORTS[name]))
    for name in BARE_HANDLERS:
        found.append(Subject(bare_label(name), python, (str(BARE_DIR / name), ours, runtime), "app"))
    if h.has_peer:
        found.append(Subject("LangGraph handler", python, (str(builds.peer), runtime), "langgraph_deploybot"))
    return found


def venv_subjects(h: Harness) -> list[Subject]:
    """A smoke run's stand-in: the product's venv (with its dev packages) and bench/.venv."""
    found = [Subject("floor: import boto3, pydantic", h.ours_python, (), "boto3, pydantic", isolated=False)]
    for name in FUNCTIONS:
        path = (str(ROOT / "functions" / name),)
        found.append(Subject(name, h.ours_python, path, "app", FIRST_CALL_IMPORTS[name], isolated=False))
    for name in BARE_HANDLERS:
        found.append(Subject(bare_label(name), h.ours_python, (str(BARE_DIR / name),), "app", isolated=False))
    if h.peer_python is not None:
        path = (str(ROOT / "bench" / "peers"),)
        found.append(Subject("LangGraph handler", h.peer_python, path, "langgraph_deploybot", isolated=False))
    return found


def _trigger_verdict(
    name: str,
    summary: Callable[[str, str], Summary | None],
    floor: Summary | None,
    samples: list[dict[str, float | bool]],
    failures: dict[str, str],
) -> Verdict:
    alone = summary(name, "import")
    if alone is None or floor is None:
        return Verdict(f"{name} at most 1.5x the floor", False, failures.get(name, "not measured"))
    loads_openai = any(bool(sample["openai"]) for sample in samples)
    detail = f"{ms(alone.median)} vs {ms(floor.median)} = {ratio(alone.median, floor.median)}"
    if (bare := summary(bare_label(name), "import")) is not None:
        detail += f"; its bare handler, with none of our code: {ratio(bare.median, floor.median)}"
    return Verdict(
        f"{name} at most 1.5x the floor, without openai",
        alone.median <= 1.5 * floor.median and not loads_openai,
        detail + (", imports openai" if loads_openai else ""),
    )


def bare_label(name: str) -> str:
    return f"bare {name} handler, none of our code"


def probe(h: Harness, subject: Subject) -> dict[str, float | bool]:
    code = PROBE.format(path=list(subject.path), module=subject.module, then=subject.then)
    env = {**_clean_environment(), **HANDLER_ENVIRONMENT}
    return _run_in(h, subject.command(code), env, str(ROOT))


def _run_in(h: Harness, command: list[str], env: dict[str, str], cwd: str) -> dict[str, float | bool]:
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False)
    if done.returncode != 0:
        raise WorkerFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
    result: dict[str, float | bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "OPENAI_", "POWERTOOLS_", "PYTHON"))
    }


def import_self_times(h: Harness, subject: Subject) -> dict[str, float]:
    """Seconds each module took to import itself (``-X importtime``'s self column), by module."""
    import subprocess

    env = {**_clean_environment(), **HANDLER_ENVIRONMENT}
    code = f"import sys; sys.path[:0] = {list(subject.path)!r}; import {subject.module}"
    done = subprocess.run(
        subject.command(code, "-X", "importtime"), capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=120, check=False,
    )  # fmt: skip
    times: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        if self_us.strip().isdigit():
            times[name.strip()] = int(self_us) / 1e6
    return times


def beyond_floor(h: Harness, floor: Subject, subject: Subject) -> list[tuple[str, float]]:
    """What a handler imports that the floor does not, summed by top-level package, largest first."""
    floor_modules = set(import_self_times(h, floor))
    packages: dict[str, float] = {}
    for name, seconds in import_self_times(h, subject).items():
        if name not in floor_modules:
            top = name.split(".")[0]
            packages[top] = packages.get(top, 0.0) + seconds
    return sorted(packages.items(), key=lambda item: -item[1])


def measure(h: Harness) -> Figure:
    repeats = 1 if h.smoke else 12
    figure = Figure(
        1,
        "Cold start",
        f"""
Each handler module imported in a fresh interpreter, {repeats} times, round robin, after one
discarded warm-up round (so both sides read compiled bytecode from a warm disk cache). As on
Lambda: Python 3.12 in isolated mode, with nothing on its path but the function's folder, the
built layer (`bench/builds.py`: layers/Makefile's build for python3.12) and boto3, standing in for
the runtime's; the LangGraph handler (`bench/peers/langgraph_deploybot.py`) with its stack built
the same way. *Import* is the module alone; *with first call* adds what its first invocation
loads lazily (our runtime builds adapters on first use: the DynamoDB store and the agents
everywhere, Step Functions and Powertools idempotency in the triggers, the prompts in the reducer).
Since issue 16 the reducer imports its LLM adapter, the openai SDK, at module init, on purpose: with
SnapStart (on for Reducer, Notify, Api and Slack) the initialised module is in the snapshot and a
restore does not import it again, while a lazy first-call import would be paid after every restore.
Without SnapStart the SDK's import is part of the reducer's cold start, as this figure shows. The
triggers must still not load openai. The LangGraph handler imports everything at the top
and compiles its graph at import. The floor is `import boto3, pydantic` on the same path.
A *bare handler* (`bench/bare_handlers/`) is a trigger's shape with none of our code: the libraries
DESIGN.md prescribes for it (Powertools Logger, Metrics and idempotency; the validating REST
resolver for the Api, slack_sdk's signature verifier for Slack, the stdlib MIME parser for Email)
and one pydantic model. It shows what any handler on those libraries pays beyond the floor:
building a first pydantic model loads pydantic's core schema machinery, which `import pydantic`
alone does not.
""",
    )
    python = None if h.smoke else python312()
    found = lambda_subjects(h, python) if python is not None else venv_subjects(h)
    if python is None:
        figure.method += (
            "\n**This run imported from the product's venv and bench/.venv** (a smoke run, or no Python "
            "3.12 here), where development packages are installed too: not the Lambda shape.\n"
        )
    samples: dict[str, list[dict[str, float | bool]]] = {subject.label: [] for subject in found}
    failures: dict[str, str] = {}
    for round_number in range(repeats + (0 if h.smoke else 1)):
        for subject in found:
            if subject.label in failures:
                continue
            try:
                result = probe(h, subject)
            except WorkerFailed as error:
                failures[subject.label] = str(error)
                continue
            if round_number > 0 or h.smoke:
                samples[subject.label].append(result)

    def summary(label: str, key: str) -> Summary | None:
        values = [float(sample[key]) for sample in samples.get(label, [])]
        return Summary.of(values) if values else None

    floor = summary(found[0].label, "import")
    langgraph = summary("LangGraph handler", "import")
    figure.headers = ["module", "import median (min–max)", "with first call", "vs floor", "imports openai"]
    for subject in found:
        if subject.label in failures:
            figure.rows.append([subject.label, f"failed: {failures[subject.label]}", "—", "—", "—"])
            continue
        alone, first = summary(subject.label, "import"), summary(subject.label, "first_call")
        assert alone is not None and first is not None
        openai = any(bool(sample["openai"]) for sample in samples[subject.label])
        figure.rows.append(
            [
                subject.label,
                alone.ms(),
                first.ms() if subject.then else "—",
                ratio(alone.median, floor.median) if floor else "—",
                "yes" if openai else "no",
            ]
        )
    figure.verdicts += [
        _trigger_verdict(name, summary, floor, samples.get(name, []), failures) for name in TRIGGERS
    ]
    reducer = summary("reducer", "first_call")
    if reducer is not None and langgraph is not None:
        figure.verdicts.append(
            Verdict(
                "reducer (with its first call's imports) at most 0.35x the LangGraph handler",
                reducer.median <= 0.35 * langgraph.median,
                f"{ms(reducer.median)} vs {ms(langgraph.median)} = {ratio(reducer.median, langgraph.median)}",
            )
        )
    else:
        reason = h.peer_missing or failures.get("reducer", "not measured")
        figure.verdicts.append(Verdict("reducer at most 0.35x the LangGraph handler", None, reason))
    breakdown_rows = []
    for subject in found:
        if (
            subject.module == "app"
            and subject.label not in failures
            # A smoke run breaks down the reducer alone: each breakdown costs two more interpreters.
            and subject.label in (("reducer",) if h.smoke else (*TRIGGERS, "reducer"))
        ):
            heaviest = beyond_floor(h, found[0], subject)[:BREAKDOWN_PACKAGES]
            breakdown_rows.append(
                [subject.label, ", ".join(f"{name} {ms(seconds)}" for name, seconds in heaviest)]
            )
    if breakdown_rows:
        figure.extra_tables.append(
            (
                "Where the time beyond the floor goes (one `-X importtime` run, self times of the modules "
                "the floor does not import, summed by package; importtime's own overhead inflates them):",
                ["module", "largest packages beyond the floor"],
                breakdown_rows,
            )
        )
    figure.notes += [
        "On Lambda the layer ships no bytecode (it is built with --no-compile into a read-only /opt), "
        "so a real cold start also compiles every imported module; SnapStart (enabled in template.yaml "
        "for the functions) restores an initialised snapshot instead, taking both import and "
        "compilation off the cold path for our handlers and for a LangGraph handler alike.",
    ]
    return figure
