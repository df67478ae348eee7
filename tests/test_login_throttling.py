"""Password log-ins are throttled per account and per client address (issue 12): a person
is told why and for how long, admins see the lockout in the audit trail and can unlock."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from bridge_app.models import ActionRecord

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def olga(django_user_model):
    return django_user_model.objects.create_user("olga", password=PASSWORD)


def log_in(client: Client, username: str, password: str, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


@override_settings(AXES_FAILURE_LIMIT=3)
def test_an_account_is_paused_after_repeated_failures_and_an_admin_can_unlock_it(olga):
    client = Client()
    for _ in range(2):
        r = log_in(client, "olga", "wrong")
        assert r.status_code == 200 and b"did not match" in r.content
    r = log_in(client, "olga", "wrong")  # the third failure locks
    assert r.status_code == 429 and b"Log-in paused" in r.content and b"15 minutes" in r.content
    assert int(r["Retry-After"]) == 15 * 60
    # Even the right password is refused while paused.
    assert log_in(Client(), "olga", PASSWORD, REMOTE_ADDR="10.0.0.9").status_code == 429
    first = ActionRecord.objects.filter(action="login_locked_out").order_by("at", "id").first()
    assert first.target == "olga" and first.detail == {"ip_address": "127.0.0.1"}

    call_command("axes_reset_username", "olga")
    r = log_in(Client(), "olga", PASSWORD, REMOTE_ADDR="10.0.0.9")
    assert r.status_code == 302
    assert ActionRecord.objects.filter(action="login_unlocked", target="olga").exists()


@override_settings(AXES_FAILURE_LIMIT=3)
def test_one_address_cannot_spread_guesses_over_many_accounts(django_user_model):
    for name in ("ann", "bob", "cid", "dan"):
        django_user_model.objects.create_user(name, password=PASSWORD)
    guesser = Client(REMOTE_ADDR="192.0.2.7")
    statuses = [log_in(guesser, name, "wrong").status_code for name in ("ann", "bob", "cid", "dan")]
    assert statuses == [200, 200, 429, 429]
    # Others are not affected: dan logs in from his own address.
    assert log_in(Client(REMOTE_ADDR="192.0.2.8"), "dan", PASSWORD).status_code == 302


@override_settings(AXES_FAILURE_LIMIT=2)
def test_a_program_gets_a_json_answer(olga):
    client = Client()
    for _ in range(2):
        r = log_in(client, "olga", "wrong", HTTP_ACCEPT="application/json")
    assert r.status_code == 429 and r.json()["error"] == "locked_out" and "minutes" in r.json()["detail"]


@override_settings(AXES_FAILURE_LIMIT=3)
def test_a_success_resets_the_count(olga):
    client = Client()
    for _ in range(2):
        log_in(client, "olga", "wrong")
    assert log_in(client, "olga", PASSWORD).status_code == 302
    for _ in range(2):
        assert log_in(Client(), "olga", "wrong").status_code == 200  # counting from zero again


@override_settings(AXES_FAILURE_LIMIT=3)
def test_the_admin_log_in_is_throttled_too(django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    statuses = [client.post("/admin/login/", {"username": "root", "password": "wrong"}).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 429]
