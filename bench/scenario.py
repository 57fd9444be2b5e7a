"""The work both sides do, turn after turn, on one thread (standard library only: both venvs load it).

A turn is what a person asks and the five steps deploybot takes for it:

    "Deploy the backend to staging, please."
      1 model: list_git_tags   2 tool: GET /tags   3 model: deploy_backend(v1.2.3, staging)
      4 tool: POST /deploys    5 model: done ("Deployed ...")

On our side step 5 is code's: the deploy tool's `completes` writes the done message (no model call).

A step is one model call or one tool execution: one `twelvefactor.core.reducer.step` on our side,
one LangGraph super-step (the `agent` or the `tools` node) on the peer's. Staging needs no
approval, so a turn runs to the end without a person; threads of 10, 50 and 200 steps are 2, 10
and 40 turns on one thread.
"""

from __future__ import annotations

TURN_TEXT = "Deploy the backend to staging, please."
STEPS_PER_TURN = 5
# Our events per turn: user_message, tool_call, tool_result, tool_call, tool_result, done.
EVENTS_PER_TURN = 6
# The peer's messages per turn: human, ai(tool call), tool, ai(tool call), tool, ai(answer).
MESSAGES_PER_TURN = 6
TAG = "v1.2.3"  # the newest tag the fake deployment service lists
DEPLOY_ARGUMENTS = {"tag": TAG, "environment": "staging"}
DONE_MESSAGE = f"Deployed {TAG} of the backend to staging."
