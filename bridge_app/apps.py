from django.apps import AppConfig


class BridgeAppConfig(AppConfig):
    name = "bridge_app"
    verbose_name = "Radical Edge bridge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .access import invalidation as access
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from .calls import throttling
        from .conf import edge_settings
        from .core import rpc, runtime
        from .observability import audit, metrics

        access.connect_signals()
        # The runtime's chores and process registry start and stop with the reply inbox.
        if runtime.inbox_started not in rpc.on_start:
            rpc.on_start.append(runtime.inbox_started)
            rpc.on_stop.append(runtime.inbox_stopping)
        if edge_settings.AUDIT_CALLS:
            audit.install()
        throttling.install()
        metrics.install()
