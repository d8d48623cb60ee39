"""Requests sent on a raw socket, for what an HTTP client library will not send: a lying Content-Length, a
chunked body in pieces of one's choosing, a body still being sent while the answer is read."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator


def raw_http(port: int, head: bytes, body: Iterable[bytes], timeout: float = 10) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one request sent on a raw socket: the body is sent from a thread while the
    answer is read, so that a server which answers without reading the rest of the body is seen doing so."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    start = time.perf_counter()

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in body:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: it need not read what it refused

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        head_part, _, rest = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head_part)
        while length and len(rest) < int(length.group(1)):
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        elapsed = time.perf_counter() - start
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(timeout=10)
    status = re.match(rb"HTTP/1\.[01] (\d{3})", head_part)
    assert status is not None, received[:200]
    return int(status.group(1)), rest, elapsed


def pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    """`data` in HTTP/1.1 chunked transfer coding, ending with the last (empty) chunk."""
    return [f"{len(piece):x}\r\n".encode("ascii") + piece + b"\r\n" for piece in pieces(data, size)] + [b"0\r\n\r\n"]
