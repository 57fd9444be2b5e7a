"""Random waits for retries, drawn from the operating system rather than from `random`'s generator.

Lambda SnapStart restores every execution environment of a version from one snapshot, taken after
the module-level `random` generator was seeded, so each restored environment would draw the same
"random" waits: writers that collided would back off by the same amounts and collide again in
lockstep, which is what the jitter is for. `random.SystemRandom` reads os.urandom at each draw,
which a snapshot cannot copy (AWS's advice for uniqueness under SnapStart).
"""

from __future__ import annotations

import random

_SOURCE = random.SystemRandom()


def full_jitter(cap_seconds: float) -> float:
    """A wait between 0 and the cap, uniformly: writers that collided spread out."""
    return _SOURCE.uniform(0, cap_seconds)


def fraction() -> float:
    """A number in [0, 1), for a backoff that only trims its own length."""
    return _SOURCE.random()
