"""Resolve a row's ``auth_meta`` references into client arguments, within its allowlist."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from llmpool.credentials.allowlist import EnvAllowlist
from llmpool.credentials.checks import (
    find_secret,
    is_secret_key,
    shown_reference,
)
from llmpool.credentials.redaction import remember
from llmpool.errors import MissingSecretError

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = ["resolve_auth"]


def _shown_path(path: object) -> str:
    # A path is shown only when it reads as one: a value pasted here may be a key.
    if isinstance(path, str) and os.path.isabs(path) and find_secret(path) is None:
        return path
    return "(a path that is not shown)"


def resolve_auth(
    config: LLMConfig,
    *,
    allowlist: EnvAllowlist | None = None,
    environ: Mapping[str, str] | None = None,
    provider: object = None,
) -> dict[str, Any]:
    """Resolve a row's ``auth_meta`` into client arguments.

    Every secret value resolved is remembered by `llmpool.credentials.redaction`, so that
    no text llmpool produces shows it.

    Args:
        config: The row.
        allowlist: What it may reference; `EnvAllowlist.from_env` by default.
        environ: Where variables are read; ``os.environ`` by default.
        provider: The row's provider; looked up in the allowlist's registry by default.

    Returns:
        Resolved keys (suffix dropped) to values: `SecretStr` for secrets (every value read from
        a file or from a variable that is not a plain setting), plain otherwise.

    Raises:
        EnvNotAllowedError: A reference or an endpoint is outside the allowlist.
        MissingSecretError: A variable is unset or empty, or a file is missing; the message
            names the variable and the row, never a value.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="GPT-4", provider="openai", model_name="gpt-4",
        ...                 auth_meta={"api_key_env": "OPENAI_API_KEY"})
        >>> resolve_auth(row, environ={"OPENAI_API_KEY": "sk-test"})
        {'api_key': SecretStr('**********')}
    """
    env = os.environ if environ is None else environ
    allow = allowlist if allowlist is not None else EnvAllowlist.from_env(env)
    kinds = allow.check(config, provider)
    resolved: dict[str, Any] = {}
    for key, reference in config.auth_meta.items():
        if key.endswith("_env"):
            name = key[: -len("_env")]
            value = env.get(reference)
            if not value:
                shown = shown_reference(reference)
                msg = (
                    f"{config.describe()}: environment variable {shown} (auth_meta.{key}) "
                    "is not set"
                )
                raise MissingSecretError(
                    msg, variable=shown, llm_name=config.name, llm_id=config.id
                )
        elif key.endswith("_file"):
            name = key[: -len("_file")]
            shown = _shown_path(reference)
            label = f"secret file {shown}"
            try:
                # The path that was checked, links resolved.
                value = Path(os.path.realpath(reference)).read_text("utf-8").strip()
            except OSError as error:
                msg = (
                    f"{config.describe()}: {label} (auth_meta.{key}) "
                    f"cannot be read ({error.strerror or type(error).__name__})"
                )
                raise MissingSecretError(
                    msg, variable=shown, llm_name=config.name, llm_id=config.id
                ) from None
            if not value:
                msg = f"{config.describe()}: {label} (auth_meta.{key}) is empty"
                raise MissingSecretError(
                    msg, variable=shown, llm_name=config.name, llm_id=config.id
                )
        else:
            resolved[key] = reference
            continue
        if kinds.get(key) == "secret" or is_secret_key(name):
            remember(value)
            resolved[name] = SecretStr(value)
        else:
            resolved[name] = value
    return resolved
