"""Parsing and verification of inbound Slack, SES, API and EventBridge payloads."""
