import asyncio

from django.core.management.base import BaseCommand

from bridge_app.notifications.worker import worker_start, worker_stop


class Command(BaseCommand):
    help = ("Deliver notifications (webhooks, e-mail) from this process until stopped. Bridge processes "
            "do this themselves unless RADICAL_NOTIFY_WORKER=0; any number of workers may run at once "
            "(each delivery is sent by one of them).")

    def handle(self, *args, **options):
        async def run() -> None:
            worker_start()
            try:
                await asyncio.Event().wait()
            finally:
                await worker_stop()

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            self.stdout.write("stopped")
