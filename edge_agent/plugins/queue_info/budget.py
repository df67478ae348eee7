"""Budgets: what each account has used of its allocation, day by day, and where it is heading.

Slurm keeps no "allocation" object; sites express one as an account's ``GrpTRESMins`` limit
(``cpu=600000``: 10 000 core-hours; or ``billing=…``). Usage comes from ``sacct`` (every job
of the accounts since the period began, one call) and is counted in core-hours
(``CPUTimeRAW``, allocated cores * elapsed) on the day each job ended, or today for a job
still running. The period is the site's (``queue_info.budget_period_start`` /
``budget_period_end``, ISO dates); without one, the last ``days`` days and no pace.

PBS keeps no allocations either. Its usage is read from the job history
(``qstat -x -f -t``: finished jobs, array subjobs one by one), in core-hours
(``ncpus`` * ``walltime`` used) on the day each job ended (``obittime``); an account is a
job's ``Account_Name``, else its ``project``. Limits on PBS come from the site's setting
``queue_info.budget_limits`` (``chem01=50000,ml=10000`` core-hours), which also wins over
Slurm's ``GrpTRESMins`` where given.

Parsers are pure functions of the commands' text; :func:`burn_down` does the arithmetic.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from .records import named_numbers, to_int

USAGE_FIELDS = ("Account", "JobID", "State", "CPUTimeRAW", "Start", "End")


def usage_command(accounts: list[str], start: date) -> list[str]:
    """One ``sacct`` call: every user's allocations (no steps) in ``accounts`` since ``start``."""
    return ["sacct", "-a", "-X", "-n", "-P", "-A", ",".join(accounts), "-S", start.isoformat(), "-E", "now",
            "--format=" + ",".join(USAGE_FIELDS)]


def limits_command(accounts: list[str]) -> list[str]:
    return ["sacctmgr", "-n", "-P", "show", "assoc", "where", f"account={','.join(accounts)}",
            "format=Account,User,GrpTRESMins"]


def parse_usage(text: str, *, today: date) -> dict[str, dict[date, float]]:
    """Core-hours per account per day from :func:`usage_command`'s output."""
    usage: dict[str, dict[date, float]] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) < len(USAGE_FIELDS):
            continue
        row = dict(zip(USAGE_FIELDS, values))
        seconds = to_int(row["CPUTimeRAW"], 0) or 0
        if not seconds or not row["Account"]:
            continue
        day = _day(row["End"]) or today
        per_day = usage.setdefault(row["Account"], {})
        per_day[day] = per_day.get(day, 0.0) + seconds / 3600
    return usage


PBS_DEFAULT_PROJECT = "_pbs_project_default"


def pbs_account(attrs: dict[str, str]) -> str:
    """A PBS job's account: ``Account_Name``, else its ``project`` unless PBS's default."""
    project = attrs.get("project", "")
    return attrs.get("Account_Name") or (project if project != PBS_DEFAULT_PROJECT else "")


def parse_pbs_usage(jobs: dict[str, dict[str, str]], *, today: date, start: date) -> dict[str, dict[date, float]]:
    """Core-hours per account per day from ``qstat -x -f -t`` (flattened attributes, as
    ``pbs._stat`` returns them). Array parents are skipped: their subjobs carry the usage."""
    from .pbs import pbs_time  # pbs imports records; budget stays importable on its own

    usage: dict[str, dict[date, float]] = {}
    for attrs in jobs.values():
        if attrs.get("array", "").lower() == "true":
            continue
        account = pbs_account(attrs)
        seconds = _clock_seconds(attrs.get("resources_used.walltime"))
        cores = to_int(attrs.get("resources_used.ncpus")) or to_int(attrs.get("Resource_List.ncpus")) or 0
        if not account or not seconds or not cores:
            continue
        ended = pbs_time(attrs.get("obittime") or (attrs.get("mtime") if attrs.get("job_state") == "F" else None))
        day = date.fromtimestamp(ended) if ended is not None and attrs.get("job_state") in ("F", "X") else today
        if day < start:
            continue
        per_day = usage.setdefault(account, {})
        per_day[day] = per_day.get(day, 0.0) + cores * seconds / 3600
    return usage


def _clock_seconds(value: str | None) -> int:
    """``HH:MM:SS`` (hours may exceed 24) → seconds; 0 for anything else."""
    parts = str(value or "").strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return 0
    return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])


def parse_site_limits(text: str | None) -> dict[str, float]:
    """``queue_info.budget_limits``: ``"chem01=50000,ml=10000"`` core-hours per account."""
    return named_numbers(text, "<account>=<core-hours>")


def parse_limits(text: str) -> dict[str, float]:
    """Core-hours each account may use (its account-level ``GrpTRESMins``; ``cpu`` before
    ``billing``), for the accounts that have such a limit."""
    limits: dict[str, float] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) < 3 or values[1]:  # user rows carry per-user limits, not the account's
            continue
        tres = dict(part.split("=", 1) for part in values[2].split(",") if "=" in part)
        minutes = to_int(tres.get("cpu"))
        if minutes is None:
            minutes = to_int(tres.get("billing"))
        if minutes is not None:
            limits[values[0]] = minutes / 60
    return limits


def burn_down(account: str, daily: dict[date, float], limit: float | None, *, start: date, end: date | None,
              today: date) -> dict[str, Any]:
    """One account's burn-down: cumulative use per day from ``start`` to ``today``, what
    remains, the pace that would spend it by ``end``, the recent rate, and a forecast."""
    history, used, day = [], 0.0, start
    while day <= today:
        used += daily.get(day, 0.0)
        history.append({"date": day.isoformat(), "used": round(used, 4), "day": round(daily.get(day, 0.0), 4)})
        day += timedelta(days=1)
    recent_days = min(7, len(history)) or 1
    rate = sum(daily.get(today - timedelta(days=i), 0.0) for i in range(recent_days)) / recent_days
    remaining = None if limit is None else max(limit - used, 0.0)
    days_left = (end - today).days if end is not None else None
    pace = None
    if remaining is not None and days_left is not None and days_left > 0:
        pace = remaining / days_left
    forecast: dict[str, Any] = {"rate_per_day": round(rate, 4)}
    if end is not None and days_left is not None and days_left >= 0:
        forecast["used_at_end"] = round(used + rate * days_left, 4)
    if remaining is not None and rate > 0:
        forecast["exhausted_on"] = (today + timedelta(days=int(remaining // rate))).isoformat()
    verdict = _verdict(limit, used, remaining, pace, rate, forecast, end)
    return {
        "account": account, "limit": limit, "used": round(used, 4),
        "remaining": None if remaining is None else round(remaining, 4), "unit": "core-hours",
        "period_start": start.isoformat(), "period_end": end.isoformat() if end else None,
        "pace_per_day": None if pace is None else round(pace, 4), "forecast": forecast,
        "history": history, "verdict": verdict,
    }


def _verdict(limit: float | None, used: float, remaining: float | None, pace: float | None, rate: float,
             forecast: dict[str, Any], end: date | None) -> str:
    if limit is None:
        return f"{_hours(used)} core-hours used; no limit is set for this account"
    text = f"{_hours(used)} of {_hours(limit)} core-hours used, {_hours(remaining or 0)} left"
    if end is not None and "used_at_end" in forecast:
        at_end = forecast["used_at_end"]
        if at_end > limit:
            text += f"; at the recent rate it runs out on {forecast.get('exhausted_on')}, before {end.isoformat()}"
        elif pace is not None:
            text += (f"; at the recent rate {_hours(limit - at_end)} would be left unused on {end.isoformat()} "
                     f"(spending it all needs {_hours(pace)} a day)")
    elif "exhausted_on" in forecast:
        text += f"; at the recent rate it runs out on {forecast['exhausted_on']}"
    return text


def _hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}" if value else "0"


def _day(value: str) -> date | None:
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%S").date()
    except ValueError:
        return None


def period(setting_start: str | None, setting_end: str | None, *, today: date, days: int) -> tuple[date, date | None]:
    """The accounting period: the site's, else the last ``days`` days without an end."""
    start = date.fromisoformat(setting_start) if setting_start else today - timedelta(days=days - 1)
    end = date.fromisoformat(setting_end) if setting_end else None
    return start, end
