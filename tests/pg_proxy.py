"""A TCP proxy in front of the test's PostgreSQL server, for faults the test decides on.

Clients connect to :meth:`Proxy.url` (the DSN through the proxy) and every byte goes through
this process's event loop, so the test can:

- lose the server's answer to one statement (``lose_answer_to``): the statement reaches the
  server and is carried out, then the connection drops, or, with ``hold``, hangs unanswered
  (the client waits as if the network had stalled; ``held`` is set);
- cut the proxy off (:meth:`cut`): every connection through it drops and new ones are closed
  at once, as if the server had gone away, until :meth:`restore`.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class Proxy:
    """A TCP proxy to the server (see the module docstring).

    ``lose_answer_to``: a statement's text; once a client sent it, the first answer of the
    server that holds ``answer`` (default: the text, as the tag of its CommandComplete) is
    not relayed. (psycopg prepares a statement it runs often: the server's answer to the
    Parse is not yet the statement's.)"""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.lose_answer_to: bytes | None = None
        self.answer: bytes | None = None
        self.hold = False  # hang the connection instead of dropping it
        self.held = asyncio.Event()  # an answer is being held
        self.answers_lost = 0
        self.refusing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def to(cls, dsn: str) -> Proxy:
        """A started proxy to the server of ``dsn``."""
        parts = urlsplit(dsn)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        return proxy

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return self.local_port

    @property
    def local_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, dsn: str) -> str:
        """``dsn`` (a URL to the proxied server) through the proxy."""
        parts = urlsplit(dsn)
        netloc = f"{parts.username}@127.0.0.1:{self.local_port}"
        return f"{parts._replace(netloc=netloc).geturl()}?sslmode=disable"

    def cut(self) -> None:
        """Drop every connection, and close new ones at once, until :meth:`restore`."""
        self.refusing = True
        for task in list(self._tasks):
            task.cancel()

    def restore(self) -> None:
        """Relay new connections again."""
        self.refusing = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _link(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        if self.refusing:
            client_out.close()
            return
        try:
            server_in, server_out = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_out.close()
            return
        losing = asyncio.Event()

        async def up() -> None:
            while data := await client_in.read(65536):
                if self.lose_answer_to is not None and self.lose_answer_to in data:
                    losing.set()
                server_out.write(data)
                await server_out.drain()

        async def down() -> None:
            while data := await server_in.read(65536):
                answer = self.answer or (self.lose_answer_to or b"") + b"\x00"
                if losing.is_set() and answer in data:  # carried out: cut instead
                    self.lose_answer_to = None
                    self.answers_lost += 1
                    if self.hold:
                        self.held.set()
                        await asyncio.Future()  # until the client goes (or the proxy is cut)
                    return
                client_out.write(data)
                await client_out.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_out, server_out):
                writer.close()
            self._tasks.difference_update(tasks)
