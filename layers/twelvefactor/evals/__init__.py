"""Prompts tested like code (factor 2): eval cases, scoring, the runner, replay and reports.

A case is a thread fixture plus expectations on the model's next step. The runner renders it with
the agent's real prompt, asks a `LanguageModel` (the same port the reducer uses), validates the
answer against the agent's intent union and scores it. Nothing here reads the environment or opens
a connection of its own: the ``twelvefactor eval`` command wires in the configured model.
"""
