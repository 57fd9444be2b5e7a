"""twelvefactor: a production runtime for LLM agents on AWS serverless, the 12-factor way."""

__version__ = "0.1.0"
