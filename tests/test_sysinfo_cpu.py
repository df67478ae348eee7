"""sysinfo's CPU figures (issue 14): psutil measures CPU use between two calls, so a call
right after the previous one measures nothing and reads 0.0 %. The plugin primes both
counters when it starts, never samples right after the previous sample, and lets callers
that come close together share one sample."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.plugins.sysinfo import plugin as sysinfo


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake(monkeypatch):
    clock = FakeClock()
    calls: list[bool] = []

    def cpu_percent(interval=None, percpu=False):
        calls.append(percpu)
        return [12.5, 37.5] if percpu else 25.0

    monkeypatch.setattr(sysinfo.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(sysinfo.time, "sleep", clock.sleep)
    monkeypatch.setattr(sysinfo.psutil, "cpu_percent", cpu_percent)
    plugin = sysinfo.SysInfoPlugin.__new__(sysinfo.SysInfoPlugin)
    plugin._cpu_lock = sysinfo.threading.Lock()
    plugin._cpu_sampled = 0.0
    plugin._cpu_sample = None
    return plugin, clock, calls


def test_start_primes_the_total_and_the_per_cpu_counters(fake):
    plugin, _, calls = fake
    asyncio.run(sysinfo.SysInfoPlugin.start(plugin))
    assert sorted(calls) == [False, True]


def test_a_sample_right_after_the_priming_waits_until_it_can_measure(fake):
    plugin, clock, _ = fake
    asyncio.run(sysinfo.SysInfoPlugin.start(plugin))
    assert plugin._cpu_percent() == (25.0, [12.5, 37.5])
    assert clock.slept and clock.slept[0] == pytest.approx(sysinfo.CPU_SETTLE)


def test_callers_close_together_share_one_sample(fake):
    plugin, clock, calls = fake
    asyncio.run(sysinfo.SysInfoPlugin.start(plugin))
    clock.now += 5
    first = plugin._cpu_percent()
    taken = len(calls)
    clock.now += sysinfo.CPU_REUSE / 2
    assert plugin._cpu_percent() == first and len(calls) == taken  # no new, near-empty measurement
    clock.now += sysinfo.CPU_REUSE
    plugin._cpu_percent()
    assert len(calls) == taken + 2
