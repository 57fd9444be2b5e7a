"""Shared by every suite: which Hypothesis profile runs.

`make test` (and CI) runs the `deterministic` profile: every run generates the same examples, so a
fresh clone cannot fail on an example no earlier run met. `make soak` selects `random`
(HYPOTHESIS_PROFILE=random) for the full random search, whose failures print the blob that
reproduces them.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
