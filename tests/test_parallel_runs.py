"""What keeps `make test`'s pytest-xdist workers apart (tests/conftest.py: parallel runs)."""

from __future__ import annotations

import pytest

from tests.support.live import worker_redis_url


def test_each_worker_gets_a_redis_database_of_its_own_below_the_given_one():
    url = "redis://127.0.0.1:6379/15"
    assert worker_redis_url(url, worker="") == url  # not under xdist: the given database
    assert worker_redis_url(url, worker="gw0") == url
    assert worker_redis_url(url, worker="gw1") == "redis://127.0.0.1:6379/14"
    assert worker_redis_url(url, worker="gw2") == "redis://127.0.0.1:6379/13"
    assert worker_redis_url("redis://:secret@redis.test:6380/3", worker="gw3") == "redis://:secret@redis.test:6380/0"


def test_too_many_workers_for_the_given_database_is_an_error_not_a_shared_database():
    with pytest.raises(RuntimeError, match="no Redis database left for pytest-xdist worker gw4"):
        worker_redis_url("redis://127.0.0.1:6379/3", worker="gw4")
