"""Property-based fuzzing of the frame parser, beyond test_protocol.py: mutations of valid
frames, hostile JSON (deep nesting, huge numbers, NaN, lone surrogates), truncated and
corrupted chunks; and the bridge's end of the socket fed arbitrary frames, which must
answer with error frames and keep the connection."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import protocol
from edge_agent.protocol import ProtocolError

VALID = {
    "hello": {"type": "hello", "protocol": 1, "agent_version": "1", "host": {}, "plugins": []},
    "request": {"type": "request", "req_id": "r1", "method": "GET", "plugin": "p", "path": "x"},
    "response": {"type": "response", "req_id": "r1", "status": 200, "body": "ok"},
    "event": {"type": "event", "plugin": "p", "topic": "t", "data": {}},
    "bye": {"type": "bye", "reason": "shutdown"},
    "error": {"type": "error", "error": "bad"},
}

odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**200), max_value=2**200), st.floats(),
    st.text(), st.binary().map(lambda b: b.decode("latin-1")), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def decode_is_total(data) -> dict | None:
    try:
        frame = protocol.decode(data)
    except ProtocolError as exc:
        assert exc.code and exc.detail
        return None
    assert isinstance(frame, dict) and frame["type"] in protocol.FRAME_TYPES
    return frame


@given(st.sampled_from(sorted(VALID)), st.data())
def test_mutated_valid_frames_parse_or_fail_cleanly(kind, data):
    frame = dict(VALID[kind])
    for key in data.draw(st.lists(st.sampled_from(sorted(frame)), max_size=3)):
        if data.draw(st.booleans()):
            frame.pop(key, None)
        else:
            frame[key] = data.draw(odd_values)
    try:
        text = json.dumps(frame)
    except (TypeError, ValueError):
        return
    decoded = decode_is_total(text)
    if decoded is not None and "req_id" in decoded:
        assert isinstance(decoded["req_id"], str) and len(decoded["req_id"]) <= protocol.MAX_REQ_ID_LEN


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,
    '{"type": "ping", "x": ' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"type": "response", "req_id": "r", "status": 1' + "0" * 5000 + "}",
    '{"type": "response", "req_id": "r", "status": NaN}',
    '{"type": "response", "req_id": "r", "status": Infinity}',
    '{"type": "ping", "ts": "\\ud800"}',
    '{"type": "\\ud800"}',
    '{"type": "ping"}' * 2,
    "\x00", "", " ", "null", "1e999999",
])
def test_hostile_json_is_a_protocol_error_or_a_frame(text):
    decode_is_total(text)
    decode_is_total(text.encode("utf-8", "surrogatepass"))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_as_text_frames(data):
    decode_is_total(data)


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
       st.integers(min_value=0, max_value=2**32 - 1), st.binary(max_size=512), st.booleans())
def test_chunks_round_trip(req_id, seq, data, last):
    assert protocol.unpack_chunk(protocol.pack_chunk(req_id, seq, data, last=last)) == (req_id, seq, last, data)


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
       st.binary(max_size=64), st.data())
def test_truncated_or_corrupted_chunks_fail_cleanly(req_id, data, draw):
    packed = bytearray(protocol.pack_chunk(req_id, 7, data, last=True))
    cut = draw.draw(st.integers(min_value=0, max_value=len(packed)))
    corrupted = packed[:cut]
    if corrupted and draw.draw(st.booleans()):
        corrupted[draw.draw(st.integers(0, len(corrupted) - 1))] = draw.draw(st.integers(0, 255))
    try:
        rid, seq, _, payload = protocol.unpack_chunk(bytes(corrupted))
    except ProtocolError:
        return
    assert isinstance(rid, str) and isinstance(seq, int) and isinstance(payload, bytes)


# --- the bridge's end of the socket ---------------------------------------------------------

frames = st.one_of(
    st.text(max_size=200),
    st.sampled_from(sorted(VALID)).flatmap(
        lambda k: st.fixed_dictionaries({}, optional={key: odd_values for key in VALID[k]}).map(
            lambda d, k=k: json.dumps({**d, "type": k}, default=str))),
    st.binary(max_size=100),
)


_EDGE_TOKEN: dict[str, str] = {}


@pytest.mark.django_db(transaction=True)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames, min_size=1, max_size=8))
def test_the_bridge_survives_arbitrary_frames_from_an_agent(batch):
    import asyncio

    from asgiref.sync import async_to_sync, sync_to_async
    from channels.layers import channel_layers
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth import get_user_model

    from bridge_app.domain import services
    from bridge_app.models import Edge
    from radical_edge_site.asgi import application

    @async_to_sync
    async def run() -> None:
        channel_layers.backends.clear()
        # The database lives as long as the test, across Hypothesis' examples.
        if not await sync_to_async(Edge.objects.filter(name="fuzzed").exists)():
            owner = await sync_to_async(get_user_model().objects.create_user)("fuzzer")
            _, _EDGE_TOKEN["token"] = await sync_to_async(services.edge_token_create)(name="fuzzed", owner=owner)
        comm = WebsocketCommunicator(application, "/register",
                                     headers=[(b"authorization", f"Bearer {_EDGE_TOKEN['token']}".encode())])
        assert (await comm.connect())[0]
        await comm.send_json_to(VALID["hello"])
        assert (await comm.receive_json_from(timeout=5))["type"] == "welcome"
        for item in batch:
            # send_input, not send_to, which refuses empty frames; a real socket does not.
            key = "bytes" if isinstance(item, bytes) else "text"
            await comm.send_input({"type": "websocket.receive", key: item})
        # Still there: a ping gets its pong (after any error frames the batch caused).
        await comm.send_json_to({"type": "ping", "ts": 1})
        while True:
            output = await comm.receive_output(timeout=5)
            if output["type"] == "websocket.close":
                # Only an agent's own bye ends the connection.
                assert any('"bye"' in item for item in batch if isinstance(item, str)), batch
                break
            reply = json.loads(output["text"])
            assert reply["type"] in ("error", "pong"), reply
            if reply["type"] == "pong":
                break
        await comm.disconnect()
        await asyncio.sleep(0)

    run()
