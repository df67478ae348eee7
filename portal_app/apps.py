from django.apps import AppConfig


class PortalAppConfig(AppConfig):
    name = "portal_app"
    verbose_name = "Radical Edge portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import lockout

        lockout.connect_signals()
