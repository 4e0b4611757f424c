"""Change fan-out through Redis (``changes="redis"``): one replica polls, every replica hears.

The replica holding the lease (``SET NX PX``, renewed at each of its polls; given back on close)
polls the table's version stamp every ``poll_interval`` seconds and PUBLISHes each new
generation on a channel named for the database and schema; every replica SUBSCRIBEs and checks
the stamp when a message comes. The others poll only every `follower_interval` as a safety net.
While Redis cannot be reached, every replica polls every ``poll_interval`` (`Shared` logs
``redis_down`` once, and ``redis_up`` once when Redis answers again). Each Redis round trip is
bounded (`redis_client`), each wait for a message by the caller's slice, so closing is quick.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from llmpool.contracts import Shared, redis_client

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: Take the lease when it is free, renew it when it is ours: 1 while this replica leads.
_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

#: Give the lease back if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def follower_interval(poll_interval: float) -> float:
    """Seconds between a non-leading replica's safety-net polls: 10 polls' worth, 30 s at least."""
    return max(30.0, 10 * poll_interval)


def database_name(engine: Engine) -> str:
    """The database and schema an engine reads, as the server names them (so replicas that
    reach one database by different URLs, directly or through a pooler, share a channel)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            database, schema = conn.exec_driver_sql(
                "SELECT current_database(), current_schema()"
            ).one()
        return f"{database}.{schema}"
    return f"{engine.dialect.name}:{engine.url.database or 'memory'}"


class RedisFanout:
    """One replica's side of the fan-out: the lease, the channel and its subscription.

    ``leading``, ``claims`` (lease round trips), ``messages`` (received) and ``published``
    tell what it is doing.
    """

    def __init__(self, url: str, *, poll_interval: float) -> None:
        self.client = redis_client(url, "changes='redis'")
        self.shared = Shared(
            self.client, what="change fan-out", retry_after=max(0.5, poll_interval)
        )
        self.lease_ms = max(1000, round(3000 * poll_interval))
        self.token = uuid.uuid4().hex
        self.channel: str | None = None
        self.leading = False
        self.claims = 0
        self.messages = 0
        self.published = 0
        self._pubsub: Any = None

    def __repr__(self) -> str:
        return f"RedisFanout(channel={self.channel!r}, leading={self.leading})"

    @property
    def reachable(self) -> bool:
        """Whether Redis answered the last time it was asked."""
        return self.shared.reachable

    def bind(self, database: str) -> None:
        """Use the channel and lease of ``database`` (`database_name`)."""
        self.channel = f"llmpool:changes:{database}"

    def claim(self) -> bool:
        """Take or renew the lease; return whether this replica leads (not while Redis is down)."""
        key, token, ttl = f"{self.channel}:leader", self.token, self.lease_ms
        self.claims += 1
        self.leading = bool(
            self.shared.run(lambda client: client.eval(_CLAIM, 1, key, token, ttl), lambda: 0)
        )
        return self.leading

    def publish(self, generation: int) -> None:
        """Announce a new generation to every replica."""
        channel = self.channel
        if self.shared.run(lambda client: client.publish(channel, str(generation)) >= 0, bool):
            self.published += 1

    def wait(self, timeout: float) -> bool | None:
        """Wait up to ``timeout`` seconds for an announcement; ``True``: check the table now (a
        message, or a new subscription, which may have missed some); ``None``: Redis is down."""
        return self.shared.run(lambda _client: self._receive(timeout), lambda: None)

    def _receive(self, timeout: float) -> bool:
        if self._pubsub is None:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
            except BaseException:
                pubsub.close()
                raise
            self._pubsub = pubsub
            return True
        try:
            message = self._pubsub.get_message(timeout=timeout)
        except BaseException:
            self._close_subscription()  # a fresh one, and a catch-up check, when Redis is back
            raise
        if message is None or message.get("type") != "message":
            return False
        self.messages += 1
        return True

    def _close_subscription(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                pubsub.close()

    def close(self) -> None:
        """Give the lease back (another replica takes over at its next claim) and disconnect."""
        if self.leading and self.reachable:
            key, token = f"{self.channel}:leader", self.token
            self.shared.run(lambda client: client.eval(_RELEASE, 1, key, token), lambda: 0)
        self.leading = False
        self._close_subscription()
        self.client.close()
