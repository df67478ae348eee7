"""Wire protocol v1: frames, bodies and binary chunks (edge_agent.protocol)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent import protocol
from edge_agent.protocol import ProtocolError


def test_encode_decode_round_trip():
    frame = {"type": "request", "req_id": "r1", "method": "GET", "plugin": "sysinfo", "path": "metrics/x",
             "query": "a=1", "headers": {"accept": "application/json"}, "body": "grüße"}
    assert protocol.decode(protocol.encode(frame)) == frame


@pytest.mark.parametrize("text, code", [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_frame"),
    ('{"no": "type"}', "bad_frame"),
    ('{"type": 7}', "bad_frame"),
    ('{"type": "launch_missiles"}', "unknown_type"),
    ('{"type": "response", "req_id": "r1"}', "bad_frame"),
    ('{"type": "response", "req_id": "r1", "status": "200"}', "bad_frame"),
    ('{"type": "response", "req_id": "r1", "status": true}', "bad_frame"),
    ('{"type": "hello", "protocol": 1, "agent_version": "x", "host": {}}', "bad_frame"),
    ('{"type": "request", "req_id": "' + "x" * 65 + '", "method": "GET", "plugin": "p", "path": "v"}', "bad_frame"),
])
def test_malformed_frames_raise_protocol_errors_with_a_code(text, code):
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(text)
    assert exc.value.code == code
    frame = exc.value.to_frame()
    assert frame["type"] == "error" and frame["error"] == code and frame["detail"]


def test_protocol_error_keeps_the_request_id_when_it_can():
    with pytest.raises(ProtocolError) as exc:
        protocol.decode('{"type": "response", "req_id": "abc", "status": "x"}')
    assert exc.value.to_frame()["req_id"] == "abc"


@pytest.mark.parametrize("body, field", [
    (b"", None),
    (b'{"a": 1}', "body"),
    ("grüße ✓".encode(), "body"),
    (b"\xff\x00\x80binary", "body_b64"),
])
def test_small_bodies_travel_inline_and_come_back_byte_exact(body, field):
    frame: dict = {"type": "response", "req_id": "r", "status": 200}
    assert protocol.put_body(frame, body) is False
    if field:
        assert field in frame
    assert protocol.get_body(json.loads(protocol.encode(frame))) == body


def test_large_bodies_are_streamed_not_inlined():
    frame: dict = {"type": "response", "req_id": "r", "status": 200}
    body = b"x" * (protocol.INLINE_BODY_LIMIT + 1)
    assert protocol.put_body(frame, body) is True
    assert frame["stream"] is True and frame["length"] == len(body)
    assert "body" not in frame and "body_b64" not in frame


def test_chunks_round_trip_and_reassemble():
    body = bytes(range(256)) * 5000
    pieces = list(protocol.iter_chunks(body, 4096))
    assert pieces[-1][2] is True and not any(last for _, _, last in pieces[:-1])
    out = bytearray()
    for seq, piece, last in pieces:
        rid, rseq, rlast, data = protocol.unpack_chunk(protocol.pack_chunk("req-1", seq, bytes(piece), last=last))
        assert (rid, rseq, rlast) == ("req-1", seq, last)
        out += data
    assert bytes(out) == body


def test_empty_body_is_one_last_chunk():
    assert [(s, bytes(p), last) for s, p, last in protocol.iter_chunks(b"")] == [(0, b"", True)]


@pytest.mark.parametrize("buf", [
    b"", b"\x01", b"\x00\x05abc", b"\x00\x00" + b"\x00" * 4, b"\x00\x02\xff\xfe\x00\x00\x00\x01",
])
def test_malformed_chunks_raise_protocol_errors(buf):
    with pytest.raises(ProtocolError):
        protocol.unpack_chunk(buf)


@given(st.one_of(st.text(), st.binary()))
def test_decode_never_raises_anything_but_protocol_error(data):
    try:
        frame = protocol.decode(data)
    except ProtocolError:
        return
    assert isinstance(frame, dict) and frame["type"] in protocol.FRAME_TYPES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.sampled_from(sorted(protocol.FRAME_TYPES)), st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_decode_of_arbitrary_json_objects_is_total(ftype, fields):
    fields["type"] = ftype
    try:
        protocol.decode(json.dumps(fields))
    except ProtocolError:
        pass


@given(st.binary())
def test_unpack_chunk_never_raises_anything_but_protocol_error(data):
    try:
        protocol.unpack_chunk(data)
    except ProtocolError:
        pass


@given(st.dictionaries(st.sampled_from(["body", "body_b64", "req_id"]), json_values))
def test_get_body_never_raises_anything_but_protocol_error(frame):
    try:
        assert isinstance(protocol.get_body(frame), bytes)
    except ProtocolError:
        pass
