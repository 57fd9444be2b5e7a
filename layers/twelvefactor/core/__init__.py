"""The pure core: events, derived state, context, prompts, intents, the reducer.

Nothing in this package does I/O of its own or reads the environment: no boto3, httpx, openai
or ``os.environ``. Adapters implement its ports.
"""
