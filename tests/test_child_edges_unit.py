"""The bridge's side of child edges (bridge_app/domain/children.py), without processes: names,
ownership and sharing, token lifetimes, following the parent's psij events, ending."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from bridge_app.access.tokens import token_digest
from bridge_app.domain import children, services
from bridge_app.models import ActionRecord, Edge, EdgeGrant, EdgeToken

pytestmark = pytest.mark.django_db

LAUNCH = {"executor": "slurm", "queue": "debug", "account": "proj1", "nodes": 2, "duration": 600.0,
          "plugins": ["sysinfo"]}


@pytest.fixture
def parent(django_user_model) -> Edge:
    owner = django_user_model.objects.create_user("olga")
    viewer = django_user_model.objects.create_user("vera")
    token, _ = services.edge_token_create(name="polaris-login", owner=owner)
    services.grant_set(edge=token.edge, role="viewer", user=viewer)
    return token.edge


def test_child_is_named_after_its_parent_owned_and_shared_like_it(parent):
    child, plaintext = children.child_edge_create(parent=parent, actor=parent.owner, suffix="a1", launch=LAUNCH)
    assert child.name == "polaris-login.a1" and child.parent == parent and child.owner == parent.owner
    assert [(g.user.username, g.role) for g in EdgeGrant.objects.filter(edge=child)] == [("vera", "viewer")]
    token = EdgeToken.objects.get(digest=token_digest(plaintext))
    assert token.edge == child and token.expires_at is not None
    assert child.job["state"] == "SUBMITTING" and child.job["nodes"] == 2
    assert ActionRecord.objects.filter(action="child_edge_launched", target=child.name).exists()
    random_child, _ = children.child_edge_create(parent=parent, actor=None, suffix=None, launch=LAUNCH)
    assert random_child.name.startswith("polaris-login.") and random_child.name != child.name


def test_taken_names_and_grandchildren_are_refused(parent):
    child, _ = children.child_edge_create(parent=parent, actor=None, suffix="a1", launch=LAUNCH)
    with pytest.raises(ValidationError, match="taken"):
        children.child_edge_create(parent=parent, actor=None, suffix="a1", launch=LAUNCH)
    with pytest.raises(ValidationError, match="cannot start children"):
        children.child_edge_create(parent=child, actor=None, suffix="b", launch=LAUNCH)
    with pytest.raises(ValidationError):
        children.child_edge_create(parent=parent, actor=None, suffix="x" * 60, launch=LAUNCH)


def test_job_start_pulls_the_token_expiry_in_and_job_end_revokes_it(parent, settings):
    settings.RADICAL_EDGE = {**settings.RADICAL_EDGE, "CHILD_TOKEN_MARGIN": 120.0}
    child, plaintext = children.child_edge_create(parent=parent, actor=None, suffix="a1", launch=LAUNCH)
    children.child_edge_launched(child=child, answer={"job_id": "j-1", "native_id": "4242", "state": "QUEUED"})
    token = EdgeToken.objects.get(digest=token_digest(plaintext))
    queued_expiry = token.expires_at
    assert queued_expiry > timezone.now() + timedelta(days=1)  # it may wait in the queue for long

    # Another edge's job with the same id is not this child's.
    assert children.child_edge_job_changed(parent_name="elsewhere", job_id="j-1", state="ACTIVE") is None
    children.child_edge_job_changed(parent_name=parent.name, job_id="j-1", state="ACTIVE", walltime=600)
    token.refresh_from_db()
    child.refresh_from_db()
    assert timezone.now() + timedelta(seconds=700) < token.expires_at < timezone.now() + timedelta(seconds=730)
    assert child.job["state"] == "ACTIVE" and child.job["ends_at"] and not child.ended

    children.child_edge_job_changed(parent_name=parent.name, job_id="j-1", state="CANCELED")
    token.refresh_from_db()
    child.refresh_from_db()
    assert token.revoked_at is not None and child.ended and child.job["state"] == "CANCELED"
    # A late event changes nothing.
    children.child_edge_job_changed(parent_name=parent.name, job_id="j-1", state="ACTIVE")
    child.refresh_from_db()
    assert child.ended and child.job["state"] == "CANCELED"


def test_an_event_before_the_launch_answer_finds_the_child_by_its_job_name(parent):
    child, _ = children.child_edge_create(parent=parent, actor=None, suffix="early", launch=LAUNCH)
    children._follow(parent.name, "j-9", "polaris-login.early", "ACTIVE", 600)
    child.refresh_from_db()
    assert child.job["job_id"] == "j-9" and child.job["state"] == "ACTIVE"
    # The answer arriving late keeps the state the events recorded.
    children.child_edge_launched(child=child, answer={"job_id": "j-9", "native_id": "77", "state": "QUEUED"})
    child.refresh_from_db()
    assert child.job["state"] == "ACTIVE" and child.job["native_id"] == "77"
    # The name of another parent's job does not match.
    children._follow("other-login", "j-10", "polaris-login.early", "CANCELED", None)
    child.refresh_from_db()
    assert not child.ended


def test_bye_with_allocation_ended_ends_only_children(parent):
    child, _ = children.child_edge_create(parent=parent, actor=None, suffix="a1", launch=LAUNCH)
    assert not children.child_edge_ended_by_agent(edge_id=parent.pk)
    assert children.child_edge_ended_by_agent(edge_id=child.pk)
    child.refresh_from_db()
    assert child.ended and "ended with its allocation" in child.job["detail"]
    assert not EdgeToken.objects.filter(edge=child, revoked_at__isnull=True).exists()


def test_child_job_event_ignores_other_events(parent):
    # Not a psij job_status event, or not a child's job: nothing is scheduled (no event loop
    # is needed, which is what this proves).
    children.child_job_event(parent.name, {"plugin": "rhapsody", "topic": "task_status", "data": {}})
    children.child_job_event(parent.name, {"plugin": "psij", "topic": "job_status",
                                           "data": {"job_id": "j", "state": "ACTIVE", "name": "my-job"}})
    children.child_job_event(parent.name, {"plugin": "psij", "topic": "job_status",
                                           "data": {"job_id": "j", "state": "NEW", "name": "edge-x"}})


def test_a_late_event_of_an_earlier_state_does_not_move_the_child_back(parent):
    child, _ = children.child_edge_create(parent=parent, actor=None, suffix="a1", launch=LAUNCH)
    children.child_edge_launched(child=child, answer={"job_id": "j-1", "native_id": "1", "state": "ACTIVE"})
    child.refresh_from_db()
    assert child.job["state"] == "ACTIVE" and child.job["ends_at"]  # the answer alone starts the clock
    children.child_edge_job_changed(parent_name=parent.name, job_id="j-1", state="QUEUED")
    child.refresh_from_db()
    assert child.job["state"] == "ACTIVE"
