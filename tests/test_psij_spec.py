"""psij plugin, pure parts: submit validation, output chunks by byte offset, settings.

None of this needs psij or a scheduler."""

from __future__ import annotations

import pytest

from edge_agent.plugins.psij.output import ensure_private_dir, read_chunk, read_tail
from edge_agent.plugins.psij.settings import PsijSettings
from edge_agent.plugins.psij.spec import SpecError, parse_duration, parse_submit


def parse(job_spec, **body):
    return parse_submit({"job_spec": job_spec, **body}, default_executor="local")


def test_minimal_spec_is_normalised_with_defaults():
    req = parse({"executable": "/bin/hostname"})
    assert req.executor == "local"
    assert req.spec == {"executable": "/bin/hostname", "arguments": [], "environment": {},
                        "inherit_environment": True, "attributes": {}, "resources": {}, "custom_attributes": {}}
    assert req.idempotency_key is None and len(req.fingerprint) == 64


def test_full_spec_keeps_every_field():
    req = parse({
        "executable": "/bin/sh", "arguments": ["-c", "echo $X", 3], "directory": "/tmp/x/../y",
        "environment": {"X": "1", "N": 2}, "stdout_path": "out.txt", "stderr_path": "/abs/err", "name": "n",
        "launcher": "srun",
        "attributes": {"queue_name": "debug", "account": "proj1", "duration": 90, "reservation_id": "r",
                       "node_count": 2, "process_count": 4},
        "custom_attributes": {"slurm.qos": "normal"},
        "resources": {"cpu_cores_per_process": 2, "exclusive_node_use": True},
    }, executor="SLURM")
    assert req.executor == "slurm"
    spec = req.spec
    assert spec["arguments"] == ["-c", "echo $X", "3"]
    assert spec["directory"] == "/tmp/y"
    assert spec["environment"] == {"X": "1", "N": "2"}
    assert spec["attributes"] == {"queue_name": "debug", "account": "proj1", "duration": 90.0, "reservation_id": "r"}
    assert spec["resources"] == {"node_count": 2, "process_count": 4, "cpu_cores_per_process": 2,
                                 "exclusive_node_use": True}
    assert spec["custom_attributes"] == {"slurm.qos": "normal"}
    assert spec["stdout_path"] == "out.txt" and spec["launcher"] == "srun" and spec["name"] == "n"


def test_seed_readme_form_moves_scheduler_keys_from_attributes_to_custom_attributes():
    req = parse({"executable": "/bin/true",
                 "attributes": {"queue_name": "batch", "slurm.constraint": "gpu", "SLURM.qos": "high"},
                 "custom_attributes": {"slurm.account": "x"}})
    assert req.spec["attributes"] == {"queue_name": "batch"}
    assert req.spec["custom_attributes"] == {"slurm.constraint": "gpu", "slurm.qos": "high", "slurm.account": "x"}


def test_same_scheduler_key_twice_with_different_values_is_refused():
    with pytest.raises(SpecError, match="given twice"):
        parse({"executable": "/bin/true", "attributes": {"slurm.qos": "a"}, "custom_attributes": {"slurm.qos": "b"}})


@pytest.mark.parametrize("job_spec, field", [
    ({}, "job_spec.executable"),
    ({"executable": ""}, "job_spec.executable"),
    ({"executable": 5}, "job_spec.executable"),
    ({"executable": "/bin/echo", "arguments": "hello world"}, "job_spec.arguments"),
    ({"executable": "/bin/echo", "arguments": [{"a": 1}]}, "job_spec.arguments[0]"),
    ({"executable": "/bin/echo", "arguments": [True]}, "job_spec.arguments[0]"),
    ({"executable": "/bin/echo", "directory": "relative/dir"}, "job_spec.directory"),
    ({"executable": "/bin/echo", "environment": ["A=1"]}, "job_spec.environment"),
    ({"executable": "/bin/echo", "environment": {"A B": "1"}}, "job_spec.environment.A B"),
    ({"executable": "/bin/echo", "environment": {"A": None}}, "job_spec.environment.A"),
    ({"executable": "/bin/echo", "attributes": {"duration": -5}}, "job_spec.attributes.duration"),
    ({"executable": "/bin/echo", "attributes": {"duration": 0}}, "job_spec.attributes.duration"),
    ({"executable": "/bin/echo", "attributes": {"duration": "soon"}}, "job_spec.attributes.duration"),
    ({"executable": "/bin/echo", "attributes": {"duration": True}}, "job_spec.attributes.duration"),
    ({"executable": "/bin/echo", "attributes": {"node_count": 0}}, "job_spec.attributes.node_count"),
    ({"executable": "/bin/echo", "attributes": {"node_count": "two"}}, "job_spec.attributes.node_count"),
    ({"executable": "/bin/echo", "attributes": {"node_count": 1.5}}, "job_spec.attributes.node_count"),
    ({"executable": "/bin/echo", "attributes": {"queue": "debug"}}, "job_spec.attributes.queue"),
    ({"executable": "/bin/echo", "attributes": {"queue_name": 7}}, "job_spec.attributes.queue_name"),
    ({"executable": "/bin/echo", "attributes": "debug"}, "job_spec.attributes"),
    ({"executable": "/bin/echo", "custom_attributes": {"constraint": "gpu"}}, "job_spec.custom_attributes.constraint"),
    ({"executable": "/bin/echo", "custom_attributes": {"slurm.x": "a\nb"}}, "job_spec.custom_attributes.slurm.x"),
    ({"executable": "/bin/echo", "custom_attributes": {"slurm.x": ["a"]}}, "job_spec.custom_attributes.slurm.x"),
    ({"executable": "/bin/echo", "resources": {"process_count": 3, "node_count": 2}}, "job_spec.resources"),
    ({"executable": "/bin/echo", "resources": {"gpus": 1}}, "job_spec.resources.gpus"),
    ({"executable": "/bin/echo", "inherit_environment": "yes"}, "job_spec.inherit_environment"),
    ({"executable": "/bin/echo", "exectuable": "/bin/x"}, "job_spec.exectuable"),
])
def test_bad_specs_name_the_offending_field(job_spec, field):
    with pytest.raises(SpecError) as exc:
        parse(job_spec)
    assert exc.value.field == field, str(exc.value)
    assert exc.value.message


def test_unknown_fields_suggest_the_right_name():
    with pytest.raises(SpecError, match="did you mean 'queue_name'"):
        parse({"executable": "/bin/true", "attributes": {"queue_nam": "debug"}})
    with pytest.raises(SpecError, match="did you mean 'executable'"):
        parse({"executable": "/bin/true", "exectuable": "x"})


@pytest.mark.parametrize("body, field", [
    ([], ""),
    ({"executor": "local"}, "job_spec"),
    ({"job_spec": "echo"}, "job_spec"),
    ({"job_spec": {"executable": "/bin/true"}, "executor": 3}, "executor"),
    ({"job_spec": {"executable": "/bin/true"}, "executor": ""}, "executor"),
    ({"job_spec": {"executable": "/bin/true"}, "exector": "slurm"}, "exector"),
    ({"job_spec": {"executable": "/bin/true"}, "idempotency_key": 5}, "idempotency_key"),
    ({"job_spec": {"executable": "/bin/true"}, "idempotency_key": "has space"}, "idempotency_key"),
])
def test_bad_bodies_are_refused(body, field):
    with pytest.raises(SpecError) as exc:
        parse_submit(body, default_executor="local")
    assert exc.value.field == field


def test_executor_defaults_and_aliases():
    assert parse_submit({"job_spec": {"executable": "x"}}, default_executor="slurm").executor == "slurm"
    assert parse({"executable": "x"}, executor=None).executor == "local"
    assert parse({"executable": "x"}, executor="PBSPro").executor == "pbs"
    assert parse({"executable": "x"}, executor="torque").executor == "pbs_classic"


def test_idempotency_key_from_header_or_body_and_they_must_agree():
    body = {"job_spec": {"executable": "x"}}
    assert parse_submit(body, default_executor="local", header_key="k1").idempotency_key == "k1"
    assert parse_submit({**body, "idempotency_key": "k2"}, default_executor="local").idempotency_key == "k2"
    assert parse_submit({**body, "idempotency_key": "k"}, default_executor="local",
                        header_key="k").idempotency_key == "k"
    with pytest.raises(SpecError, match="differ"):
        parse_submit({**body, "idempotency_key": "a"}, default_executor="local", header_key="b")


def test_fingerprint_tells_different_jobs_apart_and_ignores_key_order():
    a = parse({"executable": "/bin/echo", "arguments": ["1"], "environment": {"A": "1", "B": "2"}})
    b = parse({"environment": {"B": "2", "A": "1"}, "arguments": ["1"], "executable": "/bin/echo"})
    c = parse({"executable": "/bin/echo", "arguments": ["2"]})
    d = parse({"executable": "/bin/echo", "arguments": ["1"], "environment": {"A": "1", "B": "2"}}, executor="slurm")
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


@pytest.mark.parametrize("value, seconds", [
    (90, 90.0), (1.5, 1.5), ("600", 600.0), ("10:00", 600.0), ("1:00:00", 3600.0), ("2-00:00:10", 172810.0),
])
def test_durations_in_seconds_or_walltime(value, seconds):
    assert parse_duration(value) == seconds


def test_read_chunk_follows_a_growing_file_by_offset(tmp_path):
    path = tmp_path / "out"
    assert read_chunk(str(path), 0, 100) == read_chunk(None, 0, 100)  # missing reads as empty
    path.write_bytes(b"hello ")
    first = read_chunk(str(path), 0, 100)
    assert (first.text, first.next_offset, first.more) == ("hello ", 6, False)
    with open(path, "ab") as fh:
        fh.write(b"world\n")
    second = read_chunk(str(path), first.next_offset, 3)
    assert (second.text, second.next_offset, second.size, second.more) == ("wor", 9, 12, True)
    third = read_chunk(str(path), second.next_offset, 100)
    assert third.text == "ld\n" and not third.more
    assert read_chunk(str(path), 1000, 10).next_offset == 12  # beyond the end: clamped


def test_read_chunk_never_splits_a_utf8_character(tmp_path):
    text = "é€😀 naïve ✓"
    path = tmp_path / "utf8"
    path.write_bytes(text.encode())
    for size in (1, 2, 3, 5):
        offset, parts = 0, []
        for _ in range(100):
            chunk = read_chunk(str(path), offset, size)
            if chunk.next_offset == offset:
                size += 1  # a character longer than the chunk size: ask for more
                continue
            parts.append(chunk.text)
            offset = chunk.next_offset
            if not chunk.more:
                break
        assert "".join(parts) == text


def test_incomplete_utf8_at_the_end_waits_unless_the_job_is_over(tmp_path):
    path = tmp_path / "partial"
    path.write_bytes("ab€".encode()[:-1])  # the writer is half-way through "€"
    assert read_chunk(str(path), 0, 100).text == "ab"
    assert read_chunk(str(path), 0, 100).next_offset == 2
    assert read_chunk(str(path), 0, 100, final=True).text == "ab\ufffd"


def test_read_tail_starts_on_a_character_boundary(tmp_path):
    path = tmp_path / "tail"
    path.write_bytes(("x" * 10 + "ééé").encode())
    text, cut = read_tail(str(path), 5)
    assert text == "éé" and cut
    assert read_tail(str(path), 100) == ("x" * 10 + "ééé", False)


def test_private_dirs_are_0700_even_when_they_existed(tmp_path):
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True, mode=0o755)
    target.chmod(0o755)
    ensure_private_dir(target)
    assert target.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(PermissionError):
        ensure_private_dir(link)


def test_settings_from_the_agent_command_line():
    s = PsijSettings.from_config({"poll_interval": 1, "executors": "local, Slurm", "keep_files": "true"})
    assert s.poll_interval == 1.0 and s.initial_poll_delay == 1.0
    assert s.executors == ("local", "slurm") and s.keep_files is True
    assert PsijSettings.from_config({}).poll_interval == 5.0
    assert PsijSettings.from_config({}).poll_error_threshold == 120  # 600 s of failed polls every 5 s
    assert PsijSettings.from_config({"poll_interval": 1, "poll_error_tolerance": 0}).poll_error_threshold == 2
    for bad in ({"poll_interval": 0}, {"poll_interval": "soon"}, {"poll_intervall": 1}, {"keep_files": "maybe"}):
        with pytest.raises(ValueError, match="psij"):
            PsijSettings.from_config(bad)
