"""Run an aiohttp application on 127.0.0.1 in a background thread with its own event loop.

The socket is bound here (port 0 by default: the kernel picks a free port, no race), and
`stop()` shuts the site down, cancels what is still running and joins the thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

LOOPBACK = "127.0.0.1"
_T = TypeVar("_T")


def bind_loopback(port: int = 0, backlog: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def start_site(
    app: web.Application, sock: socket.socket, *, shutdown_timeout: float = 0.25
) -> web.AppRunner:
    # handler_cancellation: a client that hangs up cancels its handler (hangs, slow streams),
    # so in-flight counts and shutdowns do not wait for requests nobody listens to.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    return runner


class BackgroundServer:
    """An aiohttp app served from a daemon thread; use as a context manager or start/stop."""

    def __init__(
        self, make_app: Callable[[], web.Application], *, port: int = 0, name: str = "server"
    ) -> None:
        self._make_app = make_app
        self._port = port
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> str:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already running")
        sock = bind_loopback(self._port)
        self.url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner = loop.run_until_complete(start_site(self._make_app(), sock))
            except BaseException as error:  # reported to the starting thread
                failure.append(error)
                sock.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.url

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        """Run a coroutine on the server's loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError(f"{self._name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            self.call(self._runner.cleanup(), timeout=30.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30.0)
        self._thread = None
        self._runner = None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
