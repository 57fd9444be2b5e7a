"""Every handler starts each invocation with a clean logger: Powertools keys appended during one
invocation (a thread_id) would otherwise be stamped on the next invocation's log lines in a warm
container, and on every function's lines in the local stack, where the functions share a logger.
tests/integration/test_api_security.py shows the leak on the Api function; this holds the rule
for every function, including those whose second invocation is hard to stage there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
HANDLER_FILES = sorted(FUNCTIONS.glob("*/app.py"))


def _inject_lambda_context_calls(tree: ast.Module) -> list[ast.expr]:
    return [
        decorator
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for decorator in node.decorator_list
        if "inject_lambda_context" in ast.unparse(decorator)
    ]


@pytest.mark.parametrize("path", HANDLER_FILES, ids=lambda path: path.parent.name)
def test_every_handler_clears_the_loggers_keys_per_invocation(path: Path) -> None:
    # Given a function's handler module
    tree = ast.parse(path.read_text(encoding="utf-8"))

    # When its Lambda-context decorator is read
    [decorator] = _inject_lambda_context_calls(tree)

    # Then it clears the state left by the previous invocation
    assert isinstance(decorator, ast.Call), f"{path}: inject_lambda_context without clear_state=True"
    options = {keyword.arg: keyword.value for keyword in decorator.keywords}
    assert isinstance(options.get("clear_state"), ast.Constant) and options["clear_state"].value is True


def test_the_handlers_were_found() -> None:
    assert {path.parent.name for path in HANDLER_FILES} >= {"api", "reducer", "notify", "eventbridge"}
