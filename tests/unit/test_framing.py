"""RequestFramer: where a request ends, and which ones are refused before the app."""

from __future__ import annotations

import pytest

from consent_service.http.framing import FramingError, RequestFramer

LIMIT = 1000


def framer() -> RequestFramer:
    return RequestFramer(max_head_bytes=512, max_body_bytes=LIMIT)


def frame(data: bytes) -> int | None:
    return framer().complete(data)


def refused(data: bytes) -> FramingError:
    with pytest.raises(FramingError) as caught:
        frame(data)
    return caught.value


def head(*lines: str) -> bytes:
    return ("\r\n".join(["POST /v1/x HTTP/1.1", "Host: a", *lines]) + "\r\n\r\n").encode()


def test_a_request_without_body_ends_after_its_blank_line() -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    assert frame(request) == len(request)
    assert frame(request + b"GET /next") == len(request)


def test_an_unfinished_head_waits() -> None:
    assert frame(b"GET /healthz HTTP/1.1\r\nHost: a\r\n") is None


def test_a_content_length_body_is_waited_for_then_framed() -> None:
    request = head("Content-Length: 5") + b"hello"
    assert frame(request[:-1]) is None
    assert frame(request) == len(request)
    assert frame(request + b"GET / HTTP/1.1\r\n") == len(request)


def test_bytes_trickled_one_at_a_time_frame_the_same() -> None:
    request = head("Transfer-Encoding: chunked") + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    incremental = framer()
    buffer = bytearray()
    results = []
    for byte in request:
        buffer.append(byte)
        results.append(incremental.complete(buffer))
    assert results[-1] == len(request)
    assert all(result is None for result in results[:-1])


def test_pipelined_requests_are_framed_one_after_the_other() -> None:
    first = head("Content-Length: 2") + b"ab"
    second = b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    buffer = bytearray(first + second)
    reused = framer()
    assert reused.complete(buffer) == len(first)
    del buffer[: len(first)]
    reused.reset()
    assert reused.complete(buffer) == len(second)


def test_chunk_extensions_and_trailers_are_part_of_the_request() -> None:
    body = b"4;name=value\r\nabcd\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"
    request = head("Transfer-Encoding: chunked") + body
    assert frame(request) == len(request)
    assert frame(request[:-2]) is None


@pytest.mark.parametrize(
    "lines",
    [
        ("Content-Length: -1",),
        ("Content-Length: +5",),
        ("Content-Length: 5 5",),
        ("Content-Length: 0x10",),
        ("Content-Length: 5,5",),
        ("Content-Length: 5", "Content-Length: 5"),
        ("Content-Length: 5", "Content-Length: 6"),
        ("Content-Length: ",),
        ("Content-Length: \uff15",),
        ("Content-Length: 5", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: gzip, chunked",),
        ("Transfer-Encoding: identity",),
        ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        ("Content-Length : 5",),
        (" Content-Length: 5",),
        (
            "Host2: a",
            "\tfolded",
        ),
        ("no colon here",),
    ],
)
def test_ambiguous_framing_headers_are_400(lines: tuple[str, ...]) -> None:
    assert refused(head(*lines)).status == 400


def test_lines_ending_in_a_bare_lf_are_400() -> None:
    assert refused(b"GET / HTTP/1.1\nHost: a\r\n\r\n").status == 400
    assert refused(b"GET / HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\n").status == 400


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",
        b"-1\r\n",
        b"\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"1ffffffffffffffff\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-Trailer: 1\nY: 2\r\n\r\n",
    ],
)
def test_bad_chunked_framing_is_400(body: bytes) -> None:
    assert refused(head("Transfer-Encoding: chunked") + body).status == 400


def test_an_endless_chunk_size_line_is_400() -> None:
    assert refused(head("Transfer-Encoding: chunked") + b"1" + b";" * 2000).status == 400


def test_a_body_over_the_limit_is_413_as_soon_as_its_length_is_known() -> None:
    error = refused(head(f"Content-Length: {LIMIT + 1}"))
    assert error.status == 413
    assert str(LIMIT) in error.detail
    assert refused(head("Content-Length: 99999999999999999999999999")).status == 413
    assert frame(head(f"Content-Length: {LIMIT}")) is None


def test_a_chunked_body_is_counted_against_the_same_limit() -> None:
    chunk = b"1f4\r\n" + b"a" * 500 + b"\r\n"
    assert frame(head("Transfer-Encoding: chunked") + chunk * 2 + b"0\r\n\r\n") is not None
    # The third size line takes it over: refused before its data arrives.
    error = refused(head("Transfer-Encoding: chunked") + chunk * 2 + b"1\r\n")
    assert error.status == 413
    assert str(LIMIT) in error.detail


def test_a_head_over_the_limit_is_431_even_before_it_ends() -> None:
    assert refused(b"GET / HTTP/1.1\r\nX: " + b"a" * 600).status == 431
    assert refused(b"GET / HTTP/1.1\r\nX: " + b"a" * 600 + b"\r\n\r\n").status == 431


def test_endless_trailers_are_431() -> None:
    body = b"0\r\n" + b"X: y\r\n" * 200
    assert refused(head("Transfer-Encoding: chunked") + body).status == 431


def test_expect_continue_is_noticed_with_the_head() -> None:
    waiting = framer()
    assert waiting.complete(head("Content-Length: 5", "Expect: 100-continue")) is None
    assert waiting.has_body_pending
    assert waiting.expects_continue
    assert not framer().expects_continue
