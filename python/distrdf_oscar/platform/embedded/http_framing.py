"""HTTP/1.1 messages read off a socket, for the storage front (gate.py) and its helpers.

The storage front relays requests and responses without parsing them into objects: it reads
each message's head, then copies its body by ``Content-Length`` or chunked framing, so that a
kept-alive connection is checked message by message. Here: the head, the buffered stream, the
S3 request's target (path-style) and the XML error S3 clients read.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_CHUNK = 1 << 16


@dataclass
class MessageHead:
    """A request's or a response's head: its first line and its headers."""

    raw: bytes  # the head as received, through the blank line
    first: str  # request or status line
    headers: dict[str, str]  # lower-case names

    @property
    def length(self) -> int:
        return int(self.headers.get("content-length", "0") or 0)

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


class PeerClosed(Exception):
    """The peer closed the connection (between requests: the normal end)."""


class MessageStream:
    """A socket with a read buffer, for parsing HTTP message by message."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(_CHUNK)
        if not chunk:
            raise PeerClosed
        self._buffer += chunk

    def head(self) -> MessageHead:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > 1 << 20:
                raise PeerClosed
            self._fill()
        raw, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return MessageHead(raw + b"\r\n\r\n", lines[0], headers)

    def line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def exactly(self, count: int, sink: Callable[[bytes], None]) -> None:
        while count > 0:
            if not self._buffer:
                self._fill()
            piece, self._buffer = self._buffer[:count], self._buffer[count:]
            count -= len(piece)
            sink(piece)

    def until_closed(self, sink: Callable[[bytes], None]) -> None:
        with contextlib.suppress(PeerClosed):
            while True:
                if self._buffer:
                    piece, self._buffer = self._buffer, b""
                    sink(piece)
                self._fill()

    def body(
        self, head: MessageHead, sink: Callable[[bytes], None], data: Callable[[bytes], None] | None = None
    ) -> None:
        """Relay a message body framed by ``head`` (a request's, or a response with a body);
        ``data`` also gets the body's bytes without their framing."""

        def both(piece: bytes) -> None:
            sink(piece)
            if data is not None:
                data(piece)

        if head.chunked:
            while True:
                size_line = self.line()
                sink(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.line()) != b"\r\n":
                        sink(trailer)
                    sink(b"\r\n")
                    return
                self.exactly(size, both)
                self.exactly(2, sink)
        else:
            self.exactly(head.length, both)


def s3_target(head: MessageHead) -> tuple[str, str, str, str]:
    """(method, bucket, key, query) of a path-style S3 request."""
    method, target = head.first.split(" ")[:2]
    parts = urlsplit(target)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return method, bucket, key, parts.query


def s3_error(status: str, code: str, message: str) -> bytes:
    # MinIO's answers name the request's resource and id too; clients read Code and Message.
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def unchunk(data: bytes) -> bytes:
    """A whole chunked body's data, without its framing (trailers dropped)."""
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out
