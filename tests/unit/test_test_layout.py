"""tests/ holds no packages (no __init__.py in unit, integration or e2e), so pytest imports each test
module by its basename: two modules of one name in different folders stop the whole collection."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    # Given every test module under tests/
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))

    # Then each basename is used once, so `pytest` collects every folder in one run
    assert [name for name, count in names.items() if count > 1] == []
