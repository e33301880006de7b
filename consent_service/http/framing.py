"""Where one HTTP/1.1 request ends in a byte buffer, decided before anything parses it.

The edge worker (``consent_service.http.worker``) receives bytes from many
connections into per-connection buffers and only hands a request to the
application once all of it (head and body) has arrived. ``RequestFramer``
answers "is a whole request in this buffer yet, and how long is it?" as
bytes come in, and refuses a request as early as its bytes show it is bad:

- a head longer than ``max_head_bytes`` without its blank line: 431;
- a line ending in a bare LF, a folded header line, a malformed, negative,
  huge or repeated ``Content-Length``, both ``Content-Length`` and
  ``Transfer-Encoding``, a transfer coding other than ``chunked``, a bad
  chunk size line or chunk terminator: 400 (each of these is a way two
  parsers can disagree on where a request ends);
- a body over ``max_body_bytes``, counted before it arrives for
  ``Content-Length`` and chunk by chunk for ``chunked``: 413.

It only frames; gunicorn's own parser then reads the complete request from
memory, with its own limits on the request line and header fields.
"""

from __future__ import annotations

from dataclasses import dataclass

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
# A chunk-size line: up to 16 hex digits plus extensions; longer is hostile.
MAX_CHUNK_LINE_BYTES = 1024
MAX_CONTENT_LENGTH_DIGITS = 18
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class FramingError(Exception):
    """The request cannot be framed; answer ``status`` and close the connection."""

    status: int
    title: str
    detail: str


def _bad(detail: str) -> FramingError:
    return FramingError(400, "Bad Request", detail)


class RequestFramer:
    """Incremental framing of the first request in a growing buffer.

    Call ``complete(buffer)`` each time bytes are appended: it returns the
    length of the first request once all of it is in ``buffer`` (the bytes
    after it belong to the next, pipelined request), None while more are
    needed, and raises ``FramingError`` as soon as the request is refused.
    Work already done is kept between calls, so a client trickling bytes
    costs a constant amount per call, not a rescan. ``reset()`` before
    framing the next request of the buffer (after removing this one).
    """

    def __init__(self, max_head_bytes: int, max_body_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.reset()

    def reset(self) -> None:
        self.head_length: int | None = None
        self.expects_continue = False
        self._scanned = 0
        self._content_length: int | None = None
        self._chunked = False
        self._chunk_at = 0
        self._body_bytes = 0
        self._in_trailers = False

    @property
    def has_body_pending(self) -> bool:
        """The head is in, the body is still on its way."""
        return self.head_length is not None

    def complete(self, buffer: bytes | bytearray) -> int | None:
        if self.head_length is None and not self._frame_head(buffer):
            return None
        if self._chunked:
            return self._frame_chunks(buffer)
        assert self.head_length is not None  # Set by _frame_head.
        end = self.head_length + (self._content_length or 0)
        return end if len(buffer) >= end else None

    def _frame_head(self, buffer: bytes | bytearray) -> bool:
        # Scanning restarts three bytes back, so that a terminator split
        # across two receives is still found.
        found = buffer.find(HEAD_END, max(0, self._scanned - 3))
        if found < 0:
            if len(buffer) > self.max_head_bytes:
                raise _head_too_large(self.max_head_bytes)
            self._scanned = len(buffer)
            return False
        if found + 4 > self.max_head_bytes:
            raise _head_too_large(self.max_head_bytes)
        self._read_framing_headers(bytes(buffer[:found]))
        self.head_length = found + 4
        self._chunk_at = self.head_length
        return True

    def _read_framing_headers(self, head: bytes) -> None:
        if b"\n" in head.replace(CRLF, b""):
            raise _bad("Every line of the request head must end with CRLF.")
        lengths: list[bytes] = []
        codings: list[bytes] = []
        for line in head.split(CRLF)[1:]:
            if line[:1] in (b" ", b"\t"):
                raise _bad("Folded header lines are not accepted.")
            name, colon, value = line.partition(b":")
            if not colon or name != name.strip() or not name:
                raise _bad("A header line has no name or spaces around its name.")
            lowered = name.lower()
            if lowered == b"content-length":
                lengths.append(value.strip())
            elif lowered == b"transfer-encoding":
                codings.append(value.strip())
            elif lowered == b"expect" and value.strip().lower() == b"100-continue":
                self.expects_continue = True
        if lengths and codings:
            raise _bad("Send either Content-Length or Transfer-Encoding, not both.")
        if len(codings) > 1 or (codings and codings[0].lower() != b"chunked"):
            raise _bad("The only transfer coding accepted is chunked.")
        self._chunked = bool(codings)
        if lengths:
            self._content_length = self._parse_content_length(lengths)

    def _parse_content_length(self, values: list[bytes]) -> int:
        if len(values) > 1 or b"," in values[0]:
            raise _bad("Send one Content-Length header with one value.")
        value = values[0]
        if not value.isdigit() or not value.isascii():
            raise _bad("Content-Length must be a whole number of bytes.")
        if len(value) > MAX_CONTENT_LENGTH_DIGITS or int(value) > self.max_body_bytes:
            raise _body_too_large(self.max_body_bytes)
        return int(value)

    def _frame_chunks(self, buffer: bytes | bytearray) -> int | None:
        while True:
            if self._in_trailers:
                return self._frame_trailers(buffer)
            line_end = buffer.find(CRLF, self._chunk_at, self._chunk_at + MAX_CHUNK_LINE_BYTES)
            if line_end < 0:
                if len(buffer) - self._chunk_at >= MAX_CHUNK_LINE_BYTES:
                    raise _bad("A chunk size line is too long.")
                return None
            size = _chunk_size(bytes(buffer[self._chunk_at : line_end]))
            self._body_bytes += size
            if self._body_bytes > self.max_body_bytes:
                raise _body_too_large(self.max_body_bytes)
            data_end = line_end + 2 + size
            if size == 0:
                self._in_trailers = True
                self._chunk_at = line_end + 2
                continue
            if len(buffer) < data_end + 2:
                return None
            if buffer[data_end : data_end + 2] != CRLF:
                raise _bad("A chunk's data is not followed by CRLF.")
            self._chunk_at = data_end + 2

    def _frame_trailers(self, buffer: bytes | bytearray) -> int | None:
        # After the last chunk: trailer lines, then an empty line.
        start = self._chunk_at
        if buffer[start : start + 2] == CRLF:
            return start + 2
        end = buffer.find(HEAD_END, start)
        if end < 0:
            if len(buffer) - start > self.max_head_bytes:
                raise _head_too_large(self.max_head_bytes)
            return None
        trailers = bytes(buffer[start:end])
        if b"\n" in trailers.replace(CRLF, b""):
            raise _bad("Every trailer line must end with CRLF.")
        return end + 4


def _chunk_size(line: bytes) -> int:
    digits = line.partition(b";")[0].strip(b" \t")
    if not digits or len(digits) > 16 or not all(byte in HEX_DIGITS for byte in digits):
        raise _bad("A chunk size is not a hexadecimal number.")
    return int(digits, 16)


def _head_too_large(limit: int) -> FramingError:
    return FramingError(
        431,
        "Request Header Fields Too Large",
        f"The request line and headers must fit in {limit} bytes.",
    )


def _body_too_large(limit: int) -> FramingError:
    return FramingError(
        413, "Content Too Large", f"The request body must not exceed {limit} bytes."
    )
