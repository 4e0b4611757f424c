"""Session affinity: the calls of one ``session_key`` go first to the row that answered its last
call, for ``ttl`` seconds after that call, while the row is admitted; then they fall back as any
call does, and the row that answers becomes the session's.

A provider caches a conversation's long prompt per deployment; a conversation moved between
rows pays for it again. Keys are stored hashed (a user's id never reaches Redis or a dump), in
this process (the last ``size`` sessions) or, with ``shared``, in Redis for every replica: one
``GETEX`` per keyed call (which also renews the session), and one ``SET`` when its row changes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from llmpool.contracts import Shared

#: A call's session: where it is kept, its key, and the id of the row serving it (if any).
Session = tuple["Affinity", str, "str | None"]


class Affinity:
    """Which row serves each session (see the module).

    Example:
        >>> affinity = Affinity(ttl=60)
        >>> affinity.pinned("conversation 42") is None
        True
        >>> affinity.keep("conversation 42", "row-1", None)
        >>> affinity.pinned("conversation 42")
        'row-1'
    """

    def __init__(
        self,
        ttl: float = 600.0,
        shared: Shared | None = None,
        *,
        prefix: str = "llmpool:session:",
        size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.shared = shared
        self.prefix = prefix
        self.size = size
        self.clock = clock
        self._local: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = "local" if self.shared is None else repr(self.shared)
        return f"Affinity(ttl={self.ttl}, {where})"

    def _key(self, session: str) -> str:
        return self.prefix + hashlib.blake2b(session.encode(), digest_size=16).hexdigest()

    def pinned(self, session: str) -> str | None:
        """Return the id of the row serving ``session``, renewing it, or ``None``."""
        key = self._key(session)
        if self.shared is None:
            return self._local_pinned(key)
        ttl = max(1, round(self.ttl))
        value = self.shared.run(
            lambda client: client.getex(key, ex=ttl), lambda: self._local_pinned(key)
        )
        return value.decode() if isinstance(value, bytes) else value

    def keep(self, session: str, llm_id: str, pinned: str | None) -> None:
        """Note that ``llm_id`` answered ``session`` (nothing to write when it was ``pinned``)."""
        if llm_id == pinned:
            return
        key = self._key(session)
        if self.shared is not None:
            ttl = max(1, round(self.ttl))
            self.shared.run(
                lambda client: client.set(key, llm_id, ex=ttl),
                lambda: self._local_keep(key, llm_id),
            )
            return
        self._local_keep(key, llm_id)

    def _local_pinned(self, key: str) -> str | None:
        now = self.clock()
        with self._lock:
            entry = self._local.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._local[key]
                return None
            self._local[key] = (entry[0], now + self.ttl)
            self._local.move_to_end(key)
            return entry[0]

    def _local_keep(self, key: str, llm_id: str) -> None:
        with self._lock:
            self._local[key] = (llm_id, self.clock() + self.ttl)
            self._local.move_to_end(key)
            while len(self._local) > self.size:
                self._local.popitem(last=False)
