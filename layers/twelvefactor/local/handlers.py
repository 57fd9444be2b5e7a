"""Load the template's Lambda handlers (``functions/<name>/app.py``) into this process, as Lambda would.

Every function's code is a module called ``app``, so they cannot all be imported by that name. Each
is loaded from its file under a name of its own (``twelvefactor_local_fn_<LogicalId>``), and
loaded afresh on every call: a handler module reads its settings at import (its cold start), so a
new local stack with another environment must get new modules, not the previous stack's.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from .template import Template, resource

Handler = Callable[[dict[str, Any], Any], Any]
MODULE_PREFIX = "twelvefactor_local_fn"


class HandlerNotFound(RuntimeError):
    """The template names a handler that the function's code does not have."""


def function_ids(template: Mapping[str, Any]) -> list[str]:
    """Logical ids of the template's AWS::Serverless::Function resources, in template order."""
    return [
        logical_id
        for logical_id, spec in template["Resources"].items()
        if spec.get("Type") == "AWS::Serverless::Function"
    ]


def handler_location(template: Template, logical_id: str) -> tuple[Path, str]:
    """(the module's file, the handler function's name) from CodeUri and Handler (or Globals)."""
    properties = resource(template, logical_id).get("Properties", {})
    handler = properties.get("Handler") or template.get("Globals", {}).get("Function", {}).get("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise HandlerNotFound(f"{logical_id} has no Handler of the form module.function")
    module_path, _, function = handler.rpartition(".")
    code_dir = template.path.parent / str(properties["CodeUri"])
    return code_dir / (module_path.replace(".", "/") + ".py"), function


def load_module(path: Path, name: str) -> ModuleType:
    """Execute ``path`` as a fresh module registered as ``name`` (pydantic resolves annotations there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerNotFound(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            del sys.modules[name]
        else:
            sys.modules[name] = previous
        raise
    return module


def load_handler(template: Template, logical_id: str) -> Handler:
    path, function = handler_location(template, logical_id)
    if not path.is_file():
        raise HandlerNotFound(f"{logical_id}: {path} does not exist")
    module = load_module(path, f"{MODULE_PREFIX}_{logical_id}")
    handler = getattr(module, function, None)
    if not callable(handler):
        raise HandlerNotFound(f"{logical_id}: {path} has no function {function!r}")
    found: Handler = handler
    return found


def load_handlers(template: Template, logical_ids: list[str] | None = None) -> dict[str, Handler]:
    """logical id -> handler, for every function of the template (or the ones named)."""
    return {
        logical_id: load_handler(template, logical_id) for logical_id in logical_ids or function_ids(template)
    }


# --- many invocations at once, in one process ---------------------------------------------------------


class PerThreadMetricSet(MutableMapping[str, Any]):
    """A metric set of its own for every thread.

    Powertools Metrics keeps one metric set per process (a class attribute shared by every
    ``Metrics()``), which is right on Lambda, where a container runs one invocation at a time. The
    local stack runs many at once, one per thread: with a shared set, one invocation's flush clears
    another's metrics, whose own flush then finds none and warns (an error under ``-W error``).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _own(self) -> dict[str, Any]:
        found: dict[str, Any] | None = getattr(self._local, "metrics", None)
        if found is None:
            found = self._local.metrics = {}
        return found

    def __getitem__(self, name: str) -> Any:
        return self._own()[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._own()[name] = value

    def __delitem__(self, name: str) -> None:
        del self._own()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._own())

    def __len__(self) -> int:
        return len(self._own())


@contextmanager
def isolated_metrics() -> Iterator[PerThreadMetricSet]:
    """Give handlers loaded inside the block per-thread metric sets (``Metrics()`` reads the class
    attribute when constructed, i.e. when the handler module is imported)."""
    from aws_lambda_powertools.metrics import Metrics  # noqa: PLC0415

    original = Metrics._metrics
    if not isinstance(original, dict):
        raise RuntimeError(
            "aws_lambda_powertools.metrics.Metrics no longer keeps _metrics: update local/handlers"
        )
    metric_set = PerThreadMetricSet()
    Metrics._metrics = metric_set  # type: ignore[assignment]
    try:
        yield metric_set
    finally:
        Metrics._metrics = original


def one_invocation(handler: Handler, metric_set: PerThreadMetricSet) -> Handler:
    """The handler, starting each invocation with no metrics left over on its thread, as a fresh
    Lambda invocation would (a kept-alive HTTP connection serves many requests on one thread)."""

    def invoke(event: dict[str, Any], context: Any) -> Any:
        metric_set.clear()
        return handler(event, context)

    return invoke
