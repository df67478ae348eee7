from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from bridge_app.domain import services


class Command(BaseCommand):
    help = "Issue a token for an edge (the edge is created if new). The token is the last line printed."

    def add_arguments(self, parser):
        parser.add_argument("name", help="edge name, e.g. polaris-login")
        parser.add_argument("--owner", help="username that owns the edge")
        parser.add_argument("--note", default="", help="free text kept with the token")
        parser.add_argument("--expires", type=int, metavar="DAYS", help="token lifetime in days (default: none)")

    def handle(self, *args, name, owner, note, expires, **options):
        owner_user = None
        if owner:
            try:
                owner_user = get_user_model().objects.get_by_natural_key(owner)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no user named {owner!r}") from None
        try:
            token, plaintext = services.edge_token_create(name=name, owner=owner_user, note=note,
                                                          expires_in_days=expires)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"edge {token.edge.name!r} (owner: {token.edge.owner or 'none'}); "
                          f"token {token.prefix}… issued. It is shown once:")
        self.stdout.write(plaintext)
