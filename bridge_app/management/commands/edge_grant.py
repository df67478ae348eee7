from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from bridge_app.domain import services
from bridge_app.models import EdgeGrant

from ._access import edge_named, grantee


class Command(BaseCommand):
    help = ("Give a user (or, with --group, a group) a role on an edge: 'viewer' may call read-only routes, "
            "'user' may also submit, cancel and run. Replaces any role they had there.")

    def add_arguments(self, parser):
        parser.add_argument("edge", help="edge name")
        parser.add_argument("name", metavar="USERNAME", help="username (or group name with --group)")
        parser.add_argument("role", choices=EdgeGrant.Role.values)
        parser.add_argument("--group", action="store_true", help="NAME is a group")

    def handle(self, *args, edge, name, role, group, **options):
        target = edge_named(edge)
        try:
            grant = services.grant_set(edge=target, role=role, **grantee(name, group=group))
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"{grant.grantee} is now {grant.role} on edge {target.name}")
