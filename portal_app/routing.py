"""WebSocket routes of the portal (live updates)."""

websocket_urlpatterns: list = []
