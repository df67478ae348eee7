"""Notifications: people and programs told when an event they care about happens.

Built on the durable events (``bridge_app/streams/events.py``)::

    EventRecord (ids in commit order)
      └─ matcher (worker.py): events above the cursor against active subscriptions, filtered
         (filters.py) and checked for visibility ─► Delivery rows, unique per (subscription,
         event), inserted in the transaction that advances the cursor
      └─ dispatcher (worker.py): per subscription, under a lease that one process holds,
         deliveries in event order ─► webhook (targets.py, signed: signing.py) or one e-mail
         per batch; failures retried with backoff and jitter, then dead-lettered
    browser targets are not delivered by the bridge: the portal's open pages match the
    events of their /events stream against them (static/portal/js/notify.js).

Each bridge process runs a worker (started by the runtime, woken when its events are
written); ``manage.py notify_worker`` runs one on its own. Writes go through services.py.
"""
