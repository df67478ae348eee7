"""The SDK's side of GET /events: a standard SSE parser, reconnection with Last-Event-ID,
callbacks in a background thread, and errors that end a subscription. No bridge needed:
httpx's MockTransport plays it."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from edge_agent.client import BridgeClient, Unauthorized
from edge_agent.client.events import EventReader, SSEParser


def feed_all(chunks: list[bytes]) -> tuple[SSEParser, list]:
    parser = SSEParser()
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return parser, out


def test_events_end_at_a_blank_line_whatever_the_line_endings_and_chunking():
    text = b"id: 1\r\nevent: notification\r\ndata: {\"a\": 1}\r\n\r\nid: 2\rdata: x\r\rdata: y\n\n"
    for size in (1, 2, 3, 7, len(text)):
        _, events = feed_all([text[i:i + size] for i in range(0, len(text), size)])
        assert [(e.event, e.id, e.data) for e in events] == [
            ("notification", "1", '{"a": 1}'), ("message", "2", "x"), ("message", "2", "y")], size


def test_parser_follows_the_standard():
    parser, events = feed_all([
        b"\xef\xbb", b"\xbf: a comment\n",  # a BOM, split across chunks, then a comment
        b"retry: 1500\nretry: soon\n",      # a bad retry is ignored
        b"data: one\ndata:two\ndata\n\n",   # data lines join; one space after the colon is dropped
        b"id: 7\n\n",                       # an id alone moves the last id, dispatches nothing
        b"id: bad\x00id\ndata: z\n\n",      # an id with NUL is ignored
        b"event: topology\nunknown: field\ndata: \xe2\x80\xa8\n\n",  # U+2028 is not a line break
    ])
    assert [(e.event, e.id, e.data) for e in events] == [
        ("message", None, "one\ntwo\n"), ("message", "7", "z"), ("topology", "7", "\u2028")]
    assert parser.retry == 1500 and parser.last_event_id == "7"


class FakeBridge:
    """Answers /events with the scripted streams, one per connection; records each request."""

    def __init__(self, streams: list) -> None:
        self.streams = list(streams)
        self.requests: list[httpx.Request] = []
        self.done = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.streams:
            self.done.set()
            return httpx.Response(503, json={"error": "bridge_unavailable", "detail": "restarting"})
        item = self.streams.pop(0)
        if isinstance(item, httpx.Response):
            return item
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(item))


def sse(event_id: int, kind: str = "notification", **data) -> bytes:
    body = {"id": event_id, "edge": "hpc1", "plugin": "psij", "topic": "job_status", "data": {}, "ts": 1.0, **data}
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(body)}\n\n".encode()


def client(fake: FakeBridge) -> BridgeClient:
    return BridgeClient("http://bridge.test", token="rda_test", transport=httpx.MockTransport(fake))


def test_the_reader_resumes_after_the_last_event_and_drops_repeats():
    fake = FakeBridge([
        [b"retry: 10\n\n", b"id: 4\n\n", sse(5), sse(6)[:20], sse(6)[20:]],  # the bridge restarts after 6
        [b"retry: 10\n\n", sse(6), sse(7, "topology", online=False)],       # 6 again: dropped
    ])
    bc = client(fake)
    reader = EventReader(bc, edge="hpc1", plugin="*", topic=None, backoff_max=0.05)
    got = []
    for event in reader:
        got.append(event)
        if len(got) == 3:
            break
    assert [(e["type"], e["id"]) for e in got] == [("notification", 5), ("notification", 6), ("topology", 7)]
    assert got[0]["topic"] == "job_status" and got[2]["online"] is False
    first, second = fake.requests
    assert "last-event-id" not in first.headers and second.headers["last-event-id"] == "6"
    assert dict(first.url.params) == {"edge": "hpc1"}  # "*" and None are no filter
    assert first.headers["authorization"] == "Bearer rda_test"


def test_an_id_only_block_moves_the_resume_point():
    fake = FakeBridge([[b"retry: 10\n\nid: 41\n\n"], [sse(42)]])
    reader = EventReader(client(fake), backoff_max=0.05)
    assert next(iter(reader))["id"] == 42
    assert fake.requests[1].headers["last-event-id"] == "41"


def test_a_bad_token_ends_the_reader_with_a_typed_error():
    fake = FakeBridge([httpx.Response(401, json={"error": "unauthorized", "detail": "invalid token"})])
    with pytest.raises(Unauthorized):
        next(iter(EventReader(client(fake))))


def test_a_callback_gets_matching_notifications_in_a_thread_and_survives_its_own_errors():
    fake = FakeBridge([[b"retry: 10\n\n", sse(1), sse(2, "topology", online=True),
                        sse(3, topic="other"), sse(4), sse(5)]])
    got: list[int] = []
    done = threading.Event()

    def callback(event):
        got.append(event["id"])
        if event["id"] == 4:
            raise RuntimeError("a bug in the user's callback")
        if event["id"] == 5:
            done.set()

    bc = client(fake)
    sub = bc.register_callback("hpc1", "psij", "job_status", callback, backoff_max=0.05)
    assert done.wait(5)
    assert got == [1, 4, 5]  # no topology, no other topic; the error did not end it
    assert sub.last_event_id == "5" and sub.running
    bc.close()  # stops its subscriptions
    assert not sub.running


def test_an_unknown_edge_ends_the_subscription_and_says_why():
    fake = FakeBridge([httpx.Response(404, json={"error": "unknown_edge", "detail": "no edge named 'x'"})])
    errors = []
    sub = client(fake).register_callback("x", "psij", "*", print, on_error=errors.append)
    sub._thread.join(5)
    assert not sub.running and sub.error is errors[0] and errors[0].error == "unknown_edge"
