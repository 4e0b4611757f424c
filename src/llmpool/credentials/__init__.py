"""Credentials: what a row may reference, where it may send requests, how references resolve,
and what must never show.

- `llmpool.credentials.checks`: literal secrets refused wherever they hide in a row.
- `llmpool.credentials.allowlist`: `EnvAllowlist`, the variables and secret files a row may
  reference, and the endpoints it may use.
- `llmpool.credentials.endpoints`: the endpoints a row writes, parsed and compared safely.
- `llmpool.credentials.resolve`: `resolve_auth`, ``*_env`` / ``*_file`` references into client
  arguments.
- `llmpool.credentials.redaction`: resolved secret values kept out of every text llmpool
  produces.
"""
