from django.apps import AppConfig


class BridgeAppConfig(AppConfig):
    name = "bridge_app"
    verbose_name = "Radical Edge bridge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import access, audit, metrics, throttling
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from .conf import edge_settings

        access.connect_signals()
        if edge_settings.AUDIT_CALLS:
            audit.install()
        throttling.install()
        metrics.install()
