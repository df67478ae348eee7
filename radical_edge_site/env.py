"""Typed values from the environment, for settings.py and the server's command line (which
must not import the settings). A value that cannot mean what was meant fails at start,
naming the variable: a typo in a boolean ("ture") must not quietly read as false."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(_TRUE + _FALSE)}")
    return word in _TRUE


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _env_number(name: str, default, kind):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return kind(value)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ImproperlyConfigured(f"{name}={value!r}: expected {expected}") from None


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int)


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float)
