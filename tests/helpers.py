"""Small builders shared by the tests."""

from __future__ import annotations

import contextlib
from typing import Any


def fake(name: str, priority: int, answer: str, **values: Any) -> dict[str, Any]:
    """A row of the ``fake`` provider answering ``answer``; keywords override its fields."""
    return {
        "name": name,
        "provider": "fake",
        "model_name": "m",
        "priority": priority,
        "config": {"responses": [answer]},
        **values,
    }


def row(name: str = "GPT-4", **values: Any) -> dict[str, Any]:
    """A valid new row; keywords override its fields."""
    base: dict[str, Any] = {
        "name": name,
        "provider": "openai",
        "model_name": "gpt-4",
        "priority": 10,
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"temperature": 0.2},
    }
    base.update(values)
    return base


class TcpProxy:
    """A TCP proxy on 127.0.0.1 that can be cut (connections refused) and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket
        import threading

        self.target = (target_host, target_port)
        self._socket_mod = socket
        self._threading = threading
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._listener: Any = None
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        """Listen (again) on the same port."""
        socket = self._socket_mod
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket_mod.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the
        # kernel socket listening while that call holds it.
        with contextlib.suppress(OSError):
            self._listener.shutdown(self._socket_mod.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(self._socket_mod.SHUT_RDWR)
            conn.close()


class StallingProxy(TcpProxy):
    """A `TcpProxy` that can also stall: after `hold`, the bytes it receives stay with it.

    Connections stay open and new ones are accepted, but nothing is forwarded in either
    direction until `release`: the peers' kernels see their packets acknowledged and no answer,
    as behind a middlebox that stopped forwarding.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = False
        super().__init__(target_host, target_port)

    def hold(self) -> None:
        """Stop forwarding, in both directions, without closing anything."""
        self._flowing.clear()

    def release(self) -> None:
        """Forward again, starting with what was held."""
        self._flowing.set()

    def _pipe(self, src: Any, dst: Any) -> None:  # type: ignore[override]
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                if self._stopped:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Shut down before closing: the other direction's thread may be blocked in recv()
            # on one of these sockets, and a bare close() would neither wake it nor tell the
            # peer (the kernel keeps the connection while that call holds it).
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(self._socket_mod.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, held or not; the peers see them end."""
        super().stop()
        self._stopped = True
        self._flowing.set()


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> float:
    """Poll ``predicate`` until it is true; return the seconds it took, fail after ``timeout``."""
    import time

    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            msg = f"condition not met within {timeout}s"
            raise AssertionError(msg)
        time.sleep(interval)
    return time.monotonic() - started


def forked(imports: str, body: str, processes: int) -> str:
    """A ``python -c`` script that runs ``imports`` once, then forks into ``processes``
    processes that each run ``body`` at the same moment; it exits non-zero if any of them fails.

    The processes are separate (own pid, connections and pools), but pay for the heavy imports
    once: starting N interpreters that each import LangChain costs seconds of CPU apiece.
    ``body`` reports with ``_emit(obj)``: one JSON line per call, in one ``write(2)`` (atomic
    on a pipe up to 4 KiB), so the lines of processes running at once never interleave
    (``print`` writes the text and the newline apart when stdout is unbuffered).
    """
    return "\n".join(
        [
            "import json as _json, os as _os, sys as _sys",
            "def _emit(obj):",
            "    _os.write(1, (_json.dumps(obj) + '\\n').encode())",
            imports,
            "_children = []",
            f"for _ in range({processes} - 1):",
            "    _pid = _os.fork()",
            "    if _pid == 0:",
            "        _children = None",
            "        break",
            "    _children.append(_pid)",
            body,
            "if _children is not None:",
            "    _codes = [_os.waitstatus_to_exitcode(_os.waitpid(p, 0)[1]) for p in _children]",
            "    _sys.exit(1 if any(_codes) else 0)",
        ]
    )
