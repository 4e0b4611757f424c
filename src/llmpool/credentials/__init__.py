"""Credentials, below every row: what counts as a literal secret (`checks`), where a row's
endpoints point (`endpoints`), and resolved secrets kept out of every text (`redaction`).

What a row may reference and how it resolves depend on its provider: see
`llmpool.providers.allowlist`.
"""
