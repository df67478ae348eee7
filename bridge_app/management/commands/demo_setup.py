"""Create what the local demo needs, if missing: the database schema, an admin account,
an edge token for the demo edge and an API token. Secrets are kept in ``var/`` (0600),
because tokens are stored only as digests and could not be shown again otherwise."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from bridge_app.access.tokens import token_digest
from bridge_app.domain import services
from bridge_app.models import ApiToken, EdgeToken

DEMO_EDGE = "local"
DEMO_USER = "admin"


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _token_valid(path: Path, model) -> bool:
    if not path.exists():
        return False
    return model.objects.active().filter(digest=token_digest(path.read_text().strip())).exists()


class Command(BaseCommand):
    help = "Prepare the embedded demo: migrate, admin account, demo edge token, API token (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--edge", default=DEMO_EDGE)
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the credentials as JSON")

    def handle(self, *args, edge, as_json: bool, **options):
        call_command("migrate", interactive=False, verbosity=0)
        var = Path(settings.VAR_DIR)
        creds_file = var / "demo-credentials.json"
        User = get_user_model()
        creds = {}
        if creds_file.exists():
            creds = json.loads(creds_file.read_text())
        user = User.objects.filter(username=DEMO_USER).first()
        if user is None or not creds.get("password") or not user.check_password(creds["password"]):
            password = creds.get("password") or secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser(DEMO_USER, email="", password=password)
            else:
                user.set_password(password)
                user.save()
            creds = {"username": DEMO_USER, "password": password}
            _write_secret(creds_file, json.dumps(creds))

        edge_file = var / "demo-edge.token"
        if not _token_valid(edge_file, EdgeToken):
            _, plaintext = services.edge_token_create(name=edge, owner=user, note="demo edge")
            _write_secret(edge_file, plaintext + "\n")
        api_file = var / "demo-api.token"
        if not _token_valid(api_file, ApiToken):
            _, plaintext = services.api_token_create(user=user, name="demo")
            _write_secret(api_file, plaintext + "\n")

        result = {
            "username": creds["username"], "password": creds["password"], "edge": edge,
            "edge_token_file": str(edge_file), "api_token": api_file.read_text().strip(),
        }
        if as_json:
            self.stdout.write(json.dumps(result))
        else:
            for key, value in result.items():
                self.stdout.write(f"{key}: {value}")
