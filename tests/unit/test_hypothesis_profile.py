"""The Hypothesis suites run the same examples on every `make test` (issue 14: a fresh clone once
failed on an example no earlier run had generated); `make soak` asks for the random search."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

SEEN: list[int] = []


def test_make_test_runs_the_deterministic_profile() -> None:
    # Given the profile the run asked for (none: make test)
    asked = os.environ.get("HYPOTHESIS_PROFILE", "deterministic")

    # When Hypothesis settles its settings
    current = settings()

    # Then examples are derandomized exactly when the deterministic profile runs, and nothing is
    # replayed from a local example database
    assert current.derandomize is (asked == "deterministic")
    if asked == "deterministic":
        assert current.database is None


def test_two_runs_of_a_property_generate_the_same_examples() -> None:
    # Given a property that records what it is given
    @settings(max_examples=20)
    @given(st.integers())
    def record(value: int) -> None:
        SEEN.append(value)

    # When it runs twice
    record()
    first = list(SEEN)
    SEEN.clear()
    record()

    # Then both runs saw the same examples (under the deterministic profile)
    if os.environ.get("HYPOTHESIS_PROFILE", "deterministic") == "deterministic":
        assert first == SEEN
