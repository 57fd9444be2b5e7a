"""The thread console (`twelvefactor console`): threads as pages instead of JSON.

Server-rendered with Jinja (autoescaped: every value from a thread is escaped), a little plain
JavaScript for live updates, no build step. It talks only to the REST API, through the same client
as `twelvefactor threads` (SigV4-signed for a deployed stack), listens on loopback by default and
checks a CSRF token on every POST.
"""
