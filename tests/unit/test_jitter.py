"""Retry waits stay random across execution environments restored from one SnapStart snapshot."""

import ast
import random
from pathlib import Path

from twelvefactor.adapters import jitter

ROOT = Path(__file__).resolve().parents[2]


def test_environments_restored_with_one_generator_state_still_draw_different_waits() -> None:
    # Given the module-level generator in one state, as in every environment restored from a snapshot
    snapshot = random.getstate()

    # When two environments each draw the waits of a few retries
    first = [jitter.full_jitter(0.05) for _ in range(4)] + [jitter.fraction()]
    random.setstate(snapshot)
    second = [jitter.full_jitter(0.05) for _ in range(4)] + [jitter.fraction()]

    # Then their waits differ, and each stays within its bounds
    assert first != second
    assert all(0 <= wait <= 0.05 for wait in first[:4] + second[:4])
    assert all(0 <= share < 1 for share in (first[-1], second[-1]))


def test_no_deployed_module_draws_from_the_snapshotted_generator() -> None:
    # Given every module deployed: the layer's (local/ is dev-only and never deployed) and the functions'
    modules = [
        path
        for folder in (ROOT / "layers", ROOT / "functions")
        for path in folder.rglob("*.py")
        if "local" not in path.relative_to(folder).parts and "__pycache__" not in path.parts
    ]

    # When their uses of the `random` module's generator are listed
    uses = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in modules
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "SystemRandom"
        )
        or (isinstance(node, ast.ImportFrom) and node.module == "random")
    ]

    # Then there is none: every random wait comes from twelvefactor.adapters.jitter
    assert len(modules) > 20
    assert uses == []
