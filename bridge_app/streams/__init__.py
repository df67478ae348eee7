"""Events: the durable event log and its Server-Sent Events stream (``GET /events``)."""
