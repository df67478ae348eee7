from django.core.management.base import BaseCommand, CommandError

from bridge_app.domain import services
from bridge_app.models import EdgeToken


class Command(BaseCommand):
    help = "Revoke edge tokens, by token prefix or (with --all) every token of an edge. Connected agents are dropped."

    def add_arguments(self, parser):
        parser.add_argument("target", help="token prefix (rde_…) or, with --all, an edge name")
        parser.add_argument("--all", action="store_true", help="revoke every active token of the edge")

    def handle(self, *args, target, all, **options):
        tokens = EdgeToken.objects.active().select_related("edge")
        tokens = tokens.filter(edge__name=target) if all else tokens.filter(prefix=target.rstrip("…"))
        if not tokens:
            raise CommandError(f"no active token matches {target!r}")
        for token in tokens:
            services.edge_token_revoke(token=token)
            self.stdout.write(f"revoked {token.prefix}… of edge {token.edge.name}")
