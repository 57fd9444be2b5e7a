"""``twelvefactor eval``: run an agent's eval cases against the configured model.

Each case in ``evals/<agent>/`` is rendered with the agent's real prompt, sent to the model set by
``OPENAI_BASE_URL``/``OPENAI_API_KEY``/``LLM_MODEL``/``LLM_OUTPUT_MODE`` (the same adapter the
reducer uses), validated against the agent's intents and scored, so a prompt change can gate a
deploy. Exit codes:

  0  every suite reached its threshold
  1  a suite's pass rate is below its threshold (``evals/<agent>/config.yaml``): the prompt or
     the model got worse
  2  the eval could not run: unusable cases, arguments, thread file or LLM settings, or a model
     that could not be asked (a suite's first attempt failing to reach it stops the run; a later
     one is reported, and the pass rates are then incomplete)

``--from-thread`` turns a real thread into one case per decision the model made: a file saved from
``GET /threads/{id}`` (a thread whose events all fit its first page) or by ``twelvefactor threads
show ID --json`` (any thread), or written by ``--export-threads``; or a thread id fetched whole
from the API at ``--api-url`` (default ``TWELVEFACTOR_API_URL``). ``--write DIR``
saves the cases as files instead of running them. ``--export-threads DIR`` writes each case's
thread as a file for ``twelvefactor prompt render --thread``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from twelvefactor import application
from twelvefactor.commands.threads import ApiError, ThreadsApi, UnusableThreadFile
from twelvefactor.commands.threads import thread_from_document as read_thread_file
from twelvefactor.core.agent import Agent, AgentRegistry
from twelvefactor.core.errors import UnknownAgent
from twelvefactor.core.events import Thread, ThreadId, dump_thread
from twelvefactor.core.ports import LanguageModel
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.evals.cases import Case, CaseError, SuiteConfig, load_cases, load_config, validate_for
from twelvefactor.evals.replay import cases_from_thread, write_cases
from twelvefactor.evals.report import (
    compare,
    format_comparison,
    format_run,
    progress_line,
    read_results,
    write_results,
)
from twelvefactor.evals.runner import (
    EVAL_THREAD_ID,
    CaseResult,
    EvalRun,
    EvalRunner,
    ModelNotAsked,
    SuiteResult,
)
from twelvefactor.settings import CliSettings, LlmSettings

EXIT_BELOW_THRESHOLD = 1
EXIT_UNUSABLE = 2  # also "could not run": a failure of the setup, never of the prompt
_THREAD_ID: TypeAdapter[str] = TypeAdapter(ThreadId)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "agent", nargs="?", help="whose cases to run (default: every agent with an evals folder)"
    )
    parser.add_argument("--model", help="the model to ask (default: LLM_MODEL)")
    parser.add_argument(
        "--repeat", type=_positive_int, help="runs per case (default: the suite's config, else 1)"
    )
    parser.add_argument(
        "--threshold", type=_rate, help="lowest passing rate, 0..1 (default: the suite's config)"
    )
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        dest="cases",
        metavar="NAME",
        help="run only this case (repeatable)",
    )
    parser.add_argument(
        "--evals-dir", type=Path, help="folder of <agent>/ case folders (default: evals/ beside prompts/)"
    )
    parser.add_argument(
        "--json", type=Path, dest="json_path", metavar="FILE", help="write the results as JSON"
    )
    parser.add_argument(
        "--compare", type=Path, metavar="PREVIOUS.json", help="show what changed since a results file"
    )
    parser.add_argument("--from-thread", metavar="ID|FILE", help="replay a real thread's decisions as cases")
    parser.add_argument(
        "--api-url", help="the API's base URL for --from-thread ID (default: $TWELVEFACTOR_API_URL)"
    )
    parser.add_argument(
        "--write", type=Path, metavar="DIR", help="with --from-thread: write the cases, do not run"
    )
    parser.add_argument(
        "--export-threads",
        type=Path,
        metavar="DIR",
        help="write each case's thread to DIR/<case>.json (for `prompt render --thread`); do not run",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (CaseError, UnknownAgent, ModelNotAsked) as error:
        print(f"twelvefactor eval: {error}", file=sys.stderr)
        return EXIT_UNUSABLE


@dataclass(frozen=True)
class _Suite:
    agent: Agent
    cases: list[Case]
    config: SuiteConfig


def _run(args: argparse.Namespace) -> int:
    app = application.load()
    registry = app.build_registry()
    try:
        settings = LlmSettings()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CaseError(f"the LLM settings are not usable: {where}: {first['msg']}") from None
    if args.model:
        settings = settings.model_copy(update={"model": args.model})
    # Worded for the output mode the adapter will use, as the reducer's prompt is.
    prompts = JinjaPrompts(app.prompts_dir, output_mode=settings.output_mode)
    evals_dir: Path = args.evals_dir or prompts.directory.parent / "evals"
    previous = read_results(args.compare) if args.compare else None
    if args.from_thread:
        suites = _replayed(args, registry, evals_dir)
        if suites is None:
            return 0
    else:
        if args.write:
            raise CaseError("--write goes with --from-thread")
        suites = _from_files(args, registry, evals_dir)
    if args.export_threads:
        for suite in suites:
            for path in export_threads(suite.agent, suite.cases, args.export_threads):
                print(path)
        return 0

    llm: Any  # BedrockModel or OpenAIModel: both a LanguageModel with close()
    if settings.provider == "bedrock":
        from twelvefactor.adapters import bedrock  # noqa: PLC0415 - only a run needs the LLM adapter

        llm = bedrock.model_from_settings(settings)
    else:
        from twelvefactor.adapters.llm import model_from_settings  # noqa: PLC0415

        llm = model_from_settings(settings)
    started_at = datetime.now(UTC)
    try:
        results = [_run_suite(suite, prompts, llm, args, settings.model) for suite in suites]
    finally:
        llm.close()
    outcome = EvalRun(
        started_at=started_at, model=settings.model, output_mode=settings.output_mode, suites=tuple(results)
    )
    print(format_run(outcome))
    if args.json_path:
        write_results(outcome, args.json_path)
        print(f"results written to {args.json_path}", file=sys.stderr)
    if previous is not None:
        print()
        print(format_comparison(compare(previous, outcome), previous, outcome))
    unasked = outcome.unasked()
    if unasked:
        runs = sum(case.runs for suite in outcome.suites for case in suite.cases)
        print(
            f"twelvefactor eval: could not run: {len(unasked)} of {runs} attempts could not ask the model, "
            f"so the pass rates are incomplete (first: {unasked[0].failures[0]})",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    return 0 if outcome.passed else EXIT_BELOW_THRESHOLD


def _run_suite(
    suite: _Suite, prompts: JinjaPrompts, llm: LanguageModel, args: argparse.Namespace, model: str
) -> SuiteResult:
    repeat: int = args.repeat or suite.config.repeat
    threshold: float = suite.config.threshold_for(model) if args.threshold is None else args.threshold
    total = len(suite.cases)
    done: list[CaseResult] = []

    def progress(result: CaseResult) -> None:
        done.append(result)
        print(progress_line(len(done), total, result), file=sys.stderr, flush=True)

    print(f"{suite.agent.name}: {total} cases x {repeat} run(s)", file=sys.stderr, flush=True)
    return EvalRunner(suite.agent, prompts, llm).run(
        suite.cases, repeat=repeat, threshold=threshold, on_case=progress
    )


def _from_files(args: argparse.Namespace, registry: AgentRegistry, evals_dir: Path) -> list[_Suite]:
    if args.agent:
        names = [args.agent]
    elif args.cases:
        raise CaseError("--case needs the AGENT whose case it is")
    else:
        found = (
            sorted(path.name for path in evals_dir.glob("*/") if path.is_dir()) if evals_dir.is_dir() else []
        )
        names = [name for name in found if name in registry]
        if not names:
            raise CaseError(f"{evals_dir}: no case folder named after an agent ({', '.join(registry.names)})")
    suites = []
    for name in names:
        agent = registry.get(name)
        directory = evals_dir / name
        cases = load_cases(directory, args.cases)
        validate_for(agent, cases, directory)
        suites.append(_Suite(agent, cases, load_config(directory)))
    return suites


def _replayed(args: argparse.Namespace, registry: AgentRegistry, evals_dir: Path) -> list[_Suite] | None:
    """The replayed thread's cases as a suite, or None when they were written instead."""
    thread = load_thread(args.from_thread, args.api_url or CliSettings().api_url)
    if args.agent and args.agent != thread.agent:
        raise CaseError(f"thread {thread.id} belongs to {thread.agent}, not {args.agent}")
    agent = registry.get(thread.agent)
    replay = cases_from_thread(agent, thread)
    for note in replay.skipped:
        print(f"skipped {note}", file=sys.stderr)
    if not replay.cases:
        raise CaseError(f"thread {thread.id} has no decision of the model to replay")
    if args.write:
        for path in write_cases(replay.cases, args.write):
            print(path)
        return None
    cases = [case for case in replay.cases if not args.cases or case.name in args.cases]
    if not cases:
        raise CaseError(f"thread {thread.id} has no case named {', '.join(args.cases)}")
    directory = evals_dir / agent.name
    config = load_config(directory) if directory.is_dir() else SuiteConfig()
    return [_Suite(agent, cases, config)]


def export_threads(agent: Agent, cases: list[Case], directory: Path) -> list[Path]:
    """Each case's fixture as a thread file: render it to see exactly what that case sends."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = directory / f"{case.name}.json"
        path.write_text(dump_thread(Thread(id=EVAL_THREAD_ID, agent=agent.name, events=case.thread)) + "\n")
        paths.append(path)
    return paths


# --- threads to replay ---------------------------------------------------------------------------


def load_thread(source: str, api_url: str | None) -> Thread:
    """A thread from a file, or by id from the stack's ``GET /threads/{id}``."""
    path = Path(source)
    if path.is_file():
        return thread_from_document(path.read_bytes(), str(path))
    if api_url is None:
        raise CaseError(
            f"{source} is not a file; to fetch a thread by id, give --api-url or set TWELVEFACTOR_API_URL"
        )
    try:
        thread_id = _THREAD_ID.validate_python(source)
    except ValidationError:
        raise CaseError(f"{source!r} is neither a file nor a thread id") from None
    api = ThreadsApi(api_url)
    try:
        # Page by page, large events from their payload URLs: a saved GET /threads/{id} holds only
        # the first page.
        return api.thread(thread_id)
    except ApiError as error:
        if error.status_code == httpx.codes.NOT_FOUND:
            raise CaseError(f"no thread {thread_id} at {api_url}") from None
        raise CaseError(f"could not fetch thread {thread_id}: {error}") from None
    except ValidationError as error:
        raise CaseError(f"thread {thread_id} from {api_url} is not a thread: {error}") from None
    finally:
        api.close()


def thread_from_document(raw: bytes, where: str) -> Thread:
    """A saved thread file, in any shape `commands.threads.thread_from_document` reads."""
    try:
        return read_thread_file(raw, where)
    except UnusableThreadFile as error:
        raise CaseError(str(error)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value
