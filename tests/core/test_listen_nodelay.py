"""The listening socket the gateway binds for uvicorn: on the standard asyncio loop (no uvloop), the
connections it accepts get TCP_NODELAY, or a response written head first then body waits for the
client's delayed ACK."""

from __future__ import annotations

import asyncio
import socket

from citadel_proxy.server import _listen


async def accepted_nodelay(sock: socket.socket) -> int:
    """TCP_NODELAY of a connection the running loop accepted from `sock`."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer: socket.socket = writer.get_extra_info("socket")
        accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()


def test_connections_accepted_on_the_standard_loop_have_nodelay() -> None:
    sock = _listen("127.0.0.1", 0, reuse_port=False)
    assert sock.proto == socket.IPPROTO_TCP
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        assert runner.run(accepted_nodelay(sock)) != 0
