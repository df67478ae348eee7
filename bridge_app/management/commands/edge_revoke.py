from django.core.management.base import BaseCommand, CommandError

from bridge_app.domain import services

from ._access import edge_named, grantee


class Command(BaseCommand):
    help = ("Take away the role a user (or, with --group, a group) has on an edge. "
            "To revoke an edge's token, use edge_token_revoke.")

    def add_arguments(self, parser):
        parser.add_argument("edge", help="edge name")
        parser.add_argument("name", metavar="USERNAME", help="username (or group name with --group)")
        parser.add_argument("--group", action="store_true", help="NAME is a group")

    def handle(self, *args, edge, name, group, **options):
        target = edge_named(edge)
        if not services.grant_remove(edge=target, **grantee(name, group=group)):
            raise CommandError(f"{'group ' if group else ''}{name} has no role on edge {target.name}")
        self.stdout.write(f"{'group ' if group else ''}{name} no longer has a role on edge {target.name}")
