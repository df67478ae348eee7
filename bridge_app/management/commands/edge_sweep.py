import time

from django.core.management.base import BaseCommand

from bridge_app.domain import services
from bridge_app.streams import events


class Command(BaseCommand):
    help = ("Mark edges offline whose heartbeat is overdue (their bridge process died). "
            "Run once, or with --every SECONDS as one dedicated background process.")

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="repeat every N seconds")

    def handle(self, *args, every, **options):
        while True:
            names = services.edges_mark_stale_offline()
            if names:
                events.topology_changed_sync(names, online=False)  # for live pages and replay
                self.stdout.write(f"marked offline: {', '.join(names)}")
            if not every:
                return
            time.sleep(every)
