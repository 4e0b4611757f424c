"""PgBouncer in transaction pooling mode in front of the test database, for the tests that must
work through a connection pooler.

`PgBouncer` runs ``/usr/sbin/pgbouncer`` on a free 127.0.0.1 port (as ``nobody``: it refuses to
run as root) and gives each test schema a database alias of its own whose server connections
``SET search_path`` to it (PgBouncer passes no ``options`` on, which is how the direct URLs
pick their schema). Its admin console answers ``SHOW POOLS``/``SHOW CLIENTS``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

BINARY = "/usr/sbin/pgbouncer"
INSTALL_HINT = "install it: apt-get install -y pgbouncer"


def find_binary() -> str | None:
    """The pgbouncer executable, or ``None`` when it is not installed."""
    found = shutil.which("pgbouncer")
    if found is None and os.access(BINARY, os.X_OK):
        found = BINARY
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgBouncer:
    """One PgBouncer process in transaction pooling mode in front of ``server_url``'s server."""

    def __init__(self, binary: str, server_url: str) -> None:
        parts = urlsplit(server_url.replace("postgresql+psycopg://", "postgresql://"))
        self.user = unquote(parts.username or "postgres")
        self.server = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.dbname = parts.path.lstrip("/") or "postgres"
        self.port = _free_port()
        self.aliases: dict[str, str] = {}  # alias -> schema
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.dir.chmod(0o755)
        auth = self.dir / "userlist.txt"
        auth.write_text(f'"{self.user}" ""\n')
        auth.chmod(0o644)
        self._write_config()
        command = [binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]
        self.log = (self.dir / "pgbouncer.log").open("wb")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.dir / "pgbouncer.log").read_text(errors="replace")
                    msg = f"pgbouncer did not start: {log[-2000:]}"
                    raise RuntimeError(msg) from None
                time.sleep(0.02)

    def _write_config(self) -> None:
        host, port = self.server
        lines = ["[databases]"]
        for alias, schema in self.aliases.items():
            lines.append(
                f"{alias} = host={host} port={port} dbname={self.dbname} user={self.user} "
                f"connect_query='SET search_path = \"{schema}\"'"
            )
        lines.append(f"{self.dbname} = host={host} port={port} dbname={self.dbname}")
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.dir / 'userlist.txt'}",
            "pool_mode = transaction",
            # llmpool's engines send their timeouts as libpq ``options``; PgBouncer 1.18
            # refuses the connection unless told to ignore that startup parameter.
            "ignore_startup_parameters = options",
            "max_client_conn = 1000",
            "default_pool_size = 10",
            f"admin_users = {self.user}",
            f"stats_users = {self.user}",
        ]
        path = self.dir / "pgbouncer.ini"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)

    def url_for(self, direct_url: str) -> str:
        """The PgBouncer URL of a direct test URL (its schema from ``options=-csearch_path``)."""
        query = parse_qs(urlsplit(direct_url).query)
        options = query.get("options", [""])[0]
        schema = options.split("search_path=", 1)[1] if "search_path=" in options else ""
        if not schema:
            return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"
        alias = f"pgb_{schema}"
        if alias not in self.aliases:
            self.aliases[alias] = schema
            self._write_config()
            self.admin("RELOAD")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{alias}"

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run a command on the admin console (simple query protocol); return its rows."""
        import psycopg
        from psycopg.rows import dict_row

        dsn = f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer"
        with psycopg.connect(
            dsn, autocommit=True, cursor_factory=psycopg.ClientCursor, row_factory=dict_row
        ) as conn:
            cursor = conn.execute(command)
            return cursor.fetchall() if cursor.description else []

    def stop(self) -> None:
        """Stop the process and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
