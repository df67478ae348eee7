"""A failed batch job keeps what its batch script printed (issue 14): psij would delete
``<native_id>.out`` as it reads it, and with it the only trace of a script that broke
before the program started (a failed ``cd``, a missing launcher)."""

from __future__ import annotations

from edge_agent.plugins.psij import manager


def test_the_batch_scripts_output_is_kept_beside_the_jobs_output(tmp_path):
    source = tmp_path / "work" / "1234.out"
    source.parent.mkdir()
    source.write_text("/var/spool/slurmd/job1234/slurm_script: line 40: cd: /gone: No such file or directory\n")
    target = tmp_path / "output" / "u1" / "job" / manager.BATCH_OUTPUT
    manager._keep_batch_output(source, target)
    assert "cd: /gone" in manager._read_batch_output(target)


def test_only_the_tail_of_a_huge_batch_output_is_kept(tmp_path):
    source = tmp_path / "1.out"
    source.write_bytes(b"x" * (manager.BATCH_OUTPUT_MAX * 3) + b"\nthe end\n")
    target = tmp_path / "kept"
    manager._keep_batch_output(source, target)
    kept = manager._read_batch_output(target)
    assert len(kept) == manager.BATCH_OUTPUT_MAX and kept.endswith("the end\n")


def test_nothing_is_kept_without_output(tmp_path):
    target = tmp_path / "kept"
    manager._keep_batch_output(tmp_path / "missing.out", target)
    (tmp_path / "blank.out").write_text("\n\n")
    manager._keep_batch_output(tmp_path / "blank.out", target)
    assert not target.exists() and manager._read_batch_output(target) is None
