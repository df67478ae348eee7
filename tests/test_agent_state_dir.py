"""The agent's state directory must be absolute (issue 14): a relative one was accepted and
later broke jobs, since job records keep their paths and the agent may be started from
another directory next time. And the agent says which Unix account it runs as."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent import cli
from edge_agent.host import host_facts


def test_a_relative_state_dir_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    token = tmp_path / "edge.token"
    token.write_text("rde_x")
    token.chmod(0o600)
    code = cli.main(["--url", "http://127.0.0.1:9", "--token-file", str(token), "--plugins", "sysinfo",
                     "--state-dir", "state"])
    assert code == 2
    err = capsys.readouterr().err
    assert "must be an absolute path" in err and str(tmp_path / "state") in err
    assert not (tmp_path / "state").exists()


def test_a_relative_state_dir_from_the_environment_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.setenv("RADICAL_EDGE_STATE_DIR", "rel/dir")
    with pytest.raises(ValueError, match="absolute"):
        cli.state_dir_from(os.environ["RADICAL_EDGE_STATE_DIR"])


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("/srv/edge", Path("/srv/edge"))])
def test_absolute_or_no_state_dir_is_accepted(value, expected):
    assert cli.state_dir_from(value) == expected


def test_home_relative_state_dir_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.state_dir_from("~/.radical/edge") == tmp_path / ".radical" / "edge"


def test_hello_names_the_unix_account_as_plain_strings():
    facts = host_facts()
    assert isinstance(facts["user"], str) and facts["user"]
    assert facts["uid"] == str(os.getuid())
