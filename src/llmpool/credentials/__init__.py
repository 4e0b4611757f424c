"""Credentials: what a row may reference, how references resolve, and what must never show.

- `llmpool.credentials.checks`: literal secrets refused wherever they hide in a row.
- `llmpool.credentials.allowlist`: `EnvAllowlist` (variables, secret files, endpoints) and
  `resolve_auth` (``*_env`` / ``*_file`` references into client arguments).
- `llmpool.credentials.redaction`: resolved secret values kept out of every text llmpool
  produces.
"""
