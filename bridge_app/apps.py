from django.apps import AppConfig


class BridgeAppConfig(AppConfig):
    name = "bridge_app"
    verbose_name = "Radical Edge bridge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)
