from django.core.management.base import BaseCommand, CommandError

from bridge_app.conf import edge_settings
from bridge_app.domain import services


class Command(BaseCommand):
    help = ("Delete audit records past their retention: proxied calls older than --days "
            "(default RADICAL_EDGE AUDIT_RETENTION_DAYS) and admin actions older than --action-days "
            "(default ACTION_RETENTION_DAYS; 0 keeps them). Run it daily, e.g. from cron.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, metavar="N", help="keep proxied calls N days")
        parser.add_argument("--action-days", type=int, default=None, metavar="N", help="keep admin actions N days")

    def handle(self, *args, days, action_days, **options):
        days = edge_settings.AUDIT_RETENTION_DAYS if days is None else days
        action_days = edge_settings.ACTION_RETENTION_DAYS if action_days is None else action_days
        if days < 1:
            raise CommandError("--days must be at least 1")
        if action_days < 0:
            raise CommandError("--action-days must be 0 (keep) or more")
        calls, actions = services.audit_prune(call_days=days, action_days=action_days)
        kept = f"older than {action_days} days" if action_days else "none: kept forever"
        self.stdout.write(f"deleted {calls} proxied-call records older than {days} days "
                          f"and {actions} admin actions ({kept})")
