from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from bridge_app.domain import services
from bridge_app.models import ApiToken


class Command(BaseCommand):
    help = "Issue a personal API token for a user. The token is the last line printed."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--read-only", action="store_true", help="token may only read (GET) ")
        parser.add_argument("--expires", type=int, metavar="DAYS", help="token lifetime in days (default: none)")
        parser.add_argument("--name", default="", help="a label for the token")
        parser.add_argument("--create-user", action="store_true", help="create the user if it does not exist")

    def handle(self, *args, username, read_only, expires, name, create_user, **options):
        User = get_user_model()
        try:
            user = User.objects.get_by_natural_key(username)
        except User.DoesNotExist:
            if not create_user:
                raise CommandError(f"no user named {username!r} (use --create-user to create one)") from None
            user = User.objects.create_user(username=username)
            self.stdout.write(f"created user {username!r} (no password: set one to log in)")
        scope = ApiToken.Scope.READ if read_only else ApiToken.Scope.FULL
        try:
            token, plaintext = services.api_token_create(user=user, name=name, scope=scope, expires_in_days=expires)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        expiry = f", expires {token.expires_at:%Y-%m-%d}" if token.expires_at else ""
        self.stdout.write(f"API token {token.prefix}… for {username} ({token.get_scope_display()}{expiry}). "
                          "It is shown once:")
        self.stdout.write(plaintext)
