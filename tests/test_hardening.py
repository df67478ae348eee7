"""Deployment hardening: Django's deploy checks with the documented production settings,
CORS closed by default, and single sign-on off by default but ready when configured."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.test import Client, override_settings

from tests.support.live import ROOT, base_env

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "bridge.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://bridge.example.org",
    "DJANGO_SECURE": "1",
    "RADICAL_BEHIND_TLS_PROXY": "1",
}


def manage(tmp_path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=base_env(tmp_path, env),
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_with_the_documented_production_settings(tmp_path):
    env = {**PRODUCTION_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(64)}
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_without_tls_settings(tmp_path):
    env = {**PRODUCTION_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(64), "DJANGO_SECURE": "0"}
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "SESSION_COOKIE_SECURE" in result.stderr + result.stdout


def test_scaled_out_settings_refuse_to_invent_a_secret_key(tmp_path):
    env = {**PRODUCTION_ENV, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = manage(tmp_path, "check", env=env)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_cors_is_closed_by_default():
    r = Client().options("/api/v1/edges/", HTTP_ORIGIN="https://evil.example",
                         HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")
    assert "Access-Control-Allow-Origin" not in r
    r = Client().get("/healthz", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in r


@pytest.mark.django_db
@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.org"])
def test_cors_opens_only_to_configured_origins():
    r = Client().options("/api/v1/edges/", HTTP_ORIGIN="https://app.example.org",
                         HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")
    assert r["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert "Access-Control-Allow-Credentials" not in r  # cookies never cross origins
    r = Client().options("/api/v1/edges/", HTTP_ORIGIN="https://evil.example",
                         HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")
    assert "Access-Control-Allow-Origin" not in r


@pytest.mark.django_db
def test_single_sign_on_is_off_by_default():
    from django.conf import settings

    assert not settings.OIDC_ENABLED
    assert "mozilla_django_oidc" not in settings.INSTALLED_APPS
    assert b"single sign-on" not in Client().get("/accounts/login/").content
    assert Client().get("/oidc/authenticate/").status_code in (401, 404)


OIDC_ENV = {
    "RADICAL_OIDC_ENABLED": "1",
    "OIDC_RP_CLIENT_ID": "radical-edge",
    "OIDC_RP_CLIENT_SECRET": "s3cret",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://idp.example.org/auth",
    "OIDC_OP_TOKEN_ENDPOINT": "https://idp.example.org/token",
    "OIDC_OP_USER_ENDPOINT": "https://idp.example.org/userinfo",
    "OIDC_OP_JWKS_ENDPOINT": "https://idp.example.org/jwks",
}

SSO_PROBE = """
from django.test import Client
r = Client().get('/oidc/authenticate/')
print('redirect', r.status_code, r['Location'].split('?')[0])
print('login page', 'single sign-on' in Client().get('/accounts/login/').content.decode())
from portal_app.oidc import SiteOIDCBackend
b = SiteOIDCBackend()
print('claims', b.verify_claims({'preferred_username': 'ada'}), b.verify_claims({'email': 'a@b'}),
      b.verify_claims({'preferred_username': 'bad name!'}))
u = b.create_user({'preferred_username': 'ada', 'email': 'ada@example.org', 'given_name': 'Ada'})
print('user', u.username, u.email, u.first_name, list(b.filter_users_by_claims({'preferred_username': 'ada'})))
"""


def test_single_sign_on_turns_on_from_the_environment(tmp_path):
    env = {**OIDC_ENV, "DJANGO_SECRET_KEY": "x" * 60, "DJANGO_ALLOWED_HOSTS": "testserver"}
    assert manage(tmp_path, "migrate", "-v", "0", env=env).returncode == 0
    result = manage(tmp_path, "shell", "-c", SSO_PROBE, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "redirect 302 https://idp.example.org/auth" in out
    assert "login page True" in out
    assert "claims True False False" in out
    assert "user ada ada@example.org Ada [<User: ada>]" in out


def test_single_sign_on_misconfiguration_is_reported_clearly(tmp_path):
    env = {k: v for k, v in OIDC_ENV.items() if k != "OIDC_OP_TOKEN_ENDPOINT"}
    result = manage(tmp_path, "check", env={**env, "DJANGO_SECRET_KEY": "x" * 60})
    assert result.returncode != 0 and "OIDC_OP_TOKEN_ENDPOINT" in result.stderr


def test_environment_has_no_production_leftovers():
    # The test settings must not inherit a deployment's variables by accident.
    assert os.environ.get("RADICAL_OIDC_ENABLED", "") in ("", "0")
