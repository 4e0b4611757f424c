"""How a ``fake`` row fails, as a provider's client would: ``sleep`` (seconds each attempt
takes), ``error`` (an HTTP status, a kind or a message) on every call or on a share
``error_rate`` of them (drawn from ``seed``), ``timeout`` and ``max_retries`` as an SDK acts on
them. The exceptions are named as the openai SDK's and carry their ``status_code``, so llmpool
classifies them as it does that SDK's.

Exceptions::

    APIError
    ├── APIConnectionError (ConnectionError)     "connection", or any other text
    ├── APITimeoutError (TimeoutError)           "timeout", or ``sleep`` longer than ``timeout``
    └── APIStatusError                           any status code 400-599
        ├── BadRequestError 400, AuthenticationError 401 ("auth"),
        ├── PermissionDeniedError 403, NotFoundError 404,
        ├── RateLimitError 429 ("rate_limit"), InternalServerError 500 ("server"),
        └── ServiceUnavailableError 503 ("unavailable"), OverloadedError 529 ("overloaded")
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, field_validator


class APIError(Exception):
    """A fake provider's error; ``status_code`` is its HTTP status, if any."""

    status_code: int | None = None

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class APIConnectionError(APIError, ConnectionError):
    """The request never reached the fake server."""


class APITimeoutError(APIError, TimeoutError):
    """No answer within the client's ``timeout``."""


class APIStatusError(APIError):
    """An HTTP error status."""


class BadRequestError(APIStatusError):
    """HTTP 400."""


class AuthenticationError(APIStatusError):
    """HTTP 401."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403."""


class NotFoundError(APIStatusError):
    """HTTP 404."""


class RateLimitError(APIStatusError):
    """HTTP 429."""


class InternalServerError(APIStatusError):
    """HTTP 500 (and other 5xx without their own class)."""


class ServiceUnavailableError(APIStatusError):
    """HTTP 503."""


class OverloadedError(APIStatusError):
    """HTTP 529."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
    500: InternalServerError,
    503: ServiceUnavailableError,
    529: OverloadedError,
}

#: The kinds ``error`` may name, and their status (``None``: no HTTP answer).
ERROR_KINDS: dict[str, int | None] = {
    "bad_request": 400,
    "auth": 401,
    "permission": 403,
    "not_found": 404,
    "rate_limit": 429,
    "server": 500,
    "unavailable": 503,
    "overloaded": 529,
    "connection": None,
    "timeout": None,
}


def provider_error(error: str | int, model: str) -> APIError:
    """Return the exception ``error`` names: a status code, a kind, or a connection error's text.

    Example:
        >>> provider_error(429, "m")
        RateLimitError('Error code: 429 - the fake model m answered rate_limit')
        >>> provider_error("connection refused", "m")
        APIConnectionError('connection refused')
    """
    status = ERROR_KINDS.get(error) if isinstance(error, str) else error
    if error == "timeout":
        return APITimeoutError(f"Request timed out (the fake model {model})")
    if status is None:
        return APIConnectionError("Connection error." if error == "connection" else str(error))
    kind = next((k for k, s in ERROR_KINDS.items() if s == status), "error")
    cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    message = f"Error code: {status} - the fake model {model} answered {kind}"
    return cls(message, status_code=status)


def _retryable(error: APIError) -> bool:
    status = error.status_code
    return status is None or status in (408, 409, 429) or status >= 500


class Failures(BaseModel):
    """What a fake row's calls wait for and how they fail, shared by chat and embeddings."""

    model: str = "fake"
    sleep: float | None = Field(default=None, ge=0)
    error: str | int | None = None
    error_rate: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None

    _draws: random.Random = PrivateAttr(default_factory=random.Random)

    @field_validator("error")
    @classmethod
    def _known_error(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, bool) or (isinstance(value, int) and not 400 <= value <= 599):
            msg = f"an HTTP error status is 400-599, not {value!r}"
            raise ValueError(msg)
        if isinstance(value, str) and not value.strip():
            msg = f"a status code, one of {', '.join(ERROR_KINDS)}, or a message; not empty"
            raise ValueError(msg)
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Seed the error draws (``seed``: the same failures on every run)."""
        super().model_post_init(context)
        if self.seed is not None:
            self._draws.seed(self.seed)

    def _drawn_error(self) -> APIError | None:
        rate = 1.0 if self.error_rate is None else self.error_rate
        if self.error is None and self.error_rate is None:
            return None
        if rate < 1.0 and self._draws.random() >= rate:
            return None
        return provider_error("server" if self.error is None else self.error, self.model)

    def _attempts(self) -> tuple[float, Exception | None]:
        # The seconds a call waits and the error it raises then, as a client with retries would.
        timeout: float | None = getattr(self, "timeout", None)
        waited = 0.0
        error: APIError | None = None
        for _ in range(1 + (getattr(self, "max_retries", None) or 0)):
            wait = self.sleep or 0.0
            if timeout is not None and wait > timeout:
                waited += timeout
                error = APITimeoutError(f"Request timed out (the fake model {self.model})")
            else:
                waited += wait
                error = self._drawn_error()
                if error is None:
                    break
            if not _retryable(error):
                break
        return waited, error

    def _fail(self) -> None:
        waited, error = self._attempts()
        if waited:
            time.sleep(waited)
        if error is not None:
            raise error

    async def _afail(self) -> None:
        waited, error = self._attempts()
        if waited:
            await asyncio.sleep(waited)
        if error is not None:
            raise error
