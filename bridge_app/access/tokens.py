"""Bearer secrets: how they look, and how they are stored (SHA-256 digests only).

Edge tokens start with ``rde_`` and API tokens with ``rda_``, so a leaked one is easy to
recognize (and to scan for). The rest is 32 random bytes, URL-safe base64.
"""

from __future__ import annotations

import hashlib
import secrets

EDGE_TOKEN_PREFIX = "rde_"  # noqa: S105 - a prefix, not a secret
API_TOKEN_PREFIX = "rda_"  # noqa: S105
# Characters of the token kept in clear, to tell tokens apart in lists and logs.
VISIBLE_CHARS = 12


def token_generate(kind_prefix: str) -> tuple[str, str, str]:
    """Return (plaintext, visible prefix, digest) of a new token."""
    plaintext = kind_prefix + secrets.token_urlsafe(32)
    return plaintext, plaintext[:VISIBLE_CHARS], token_digest(plaintext)


def token_digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_from_header(value: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (also accepts ``Token``)."""
    if not value:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token"):
        return None
    token = token.strip()
    return token or None


def session_key_from_cookie(header: str | None) -> str | None:
    """The session key in a ``Cookie`` header (Django's session cookie), if any."""
    from django.conf import settings
    from django.http.cookie import parse_cookie

    return parse_cookie(header).get(settings.SESSION_COOKIE_NAME) if header else None


def agent_commands(*, bridge_url: str, edge_name: str) -> dict[str, str]:
    """The shell commands that install an agent, store its edge token (read from the
    terminal, so it lands in no shell history) and connect it to ``bridge_url``."""
    return {
        "install": 'pip install "radical-edge-agent[psij,rhapsody]"   # or, from a checkout: '
                   'pip install "./edge_agent[psij,rhapsody]"',
        "token": "mkdir -p ~/.radical && (umask 077 && cat > ~/.radical/edge.token)",
        "run": f"radical-edge-service --url {bridge_url} --token-file ~/.radical/edge.token "
               f"--state-dir $HOME/.radical/{edge_name}",
    }
