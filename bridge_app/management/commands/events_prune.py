from django.core.management.base import BaseCommand, CommandError

from bridge_app.conf import edge_settings
from bridge_app.streams.events import events_prune


class Command(BaseCommand):
    help = ("Delete persisted events (GET /events replay) older than --days "
            "(default RADICAL_EDGE EVENTS_RETENTION_DAYS). Run it daily, e.g. from cron.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, metavar="N", help="keep events N days")

    def handle(self, *args, days, **options):
        days = edge_settings.EVENTS_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("--days must be at least 1")
        deleted = events_prune(days=days)
        self.stdout.write(f"deleted {deleted} events older than {days} days")
