"""Adapters: the I/O behind the core's ports (DynamoDB, Step Functions, the LLM, channels)."""
