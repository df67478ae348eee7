"""Settings read from the environment fail at start, naming the variable, when a value
cannot mean what was meant (issue 11: a typo in a boolean used to read as false)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from radical_edge_site.env import env_bool, env_float, env_int
from tests.support.live import ROOT, base_env


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("Yes", True), (" on ", True), ("true", True),
                                                  ("0", False), ("no", False), ("OFF", False), ("", None)])
def test_booleans_take_the_usual_words(monkeypatch, value, expected):
    monkeypatch.setenv("RADICAL_X", value)
    assert env_bool("RADICAL_X", default=None) is expected


@pytest.mark.parametrize(("read", "value"), [(env_bool, "ture"), (env_int, "20s"), (env_float, "fast")])
def test_a_value_that_cannot_be_meant_names_the_variable(monkeypatch, read, value):
    monkeypatch.setenv("RADICAL_X", value)
    with pytest.raises(ImproperlyConfigured, match=f"RADICAL_X='{value}'"):
        read("RADICAL_X", 0)


def test_the_bridge_refuses_to_start_with_a_typo(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=base_env(tmp_path, {"RADICAL_AUDIT_STRICT": "ture"}))
    assert result.returncode != 0 and "RADICAL_AUDIT_STRICT='ture'" in result.stderr


def test_every_knob_is_read_from_its_variable_with_the_type_of_its_default(monkeypatch):
    """bridge_app.conf holds the one table of defaults: each knob an environment variable
    may set is read from RADICAL_<NAME>, typed like its default, and a bad value is named."""
    from bridge_app import conf

    for name, default in conf.DEFAULTS.items():
        if name in conf.NOT_FROM_ENVIRONMENT or isinstance(default, (str, tuple)):
            continue
        variable = conf.env_name(name)
        monkeypatch.setenv(variable, "1")
        value = conf.from_environment()[name]
        assert value == 1 and type(value) is type(default), (name, value)
        monkeypatch.setenv(variable, "one")
        with pytest.raises(ImproperlyConfigured, match=f"{variable}='one'"):
            conf.from_environment()
        monkeypatch.delenv(variable)
    assert conf.from_environment()["MAX_BODY_BYTES"] == conf.DEFAULTS["MAX_BODY_BYTES"]
    monkeypatch.setenv("RADICAL_MCP_HIDDEN", "submit_job, plugin:rhapsody")
    assert conf.from_environment()["MCP_HIDDEN"] == ("submit_job", "plugin:rhapsody")
