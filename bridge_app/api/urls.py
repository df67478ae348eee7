from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.routers import SimpleRouter

from .notifications import SubscriptionAuditView, SubscriptionViewSet
from .views import ApiTokenViewSet, CallRecordViewSet, EdgeViewSet


class OptionalSlashRouter(SimpleRouter):
    """``/api/v1/edges/x`` and ``/api/v1/edges/x/`` alike. (SimpleRouter takes only a
    boolean: ``trailing_slash="/?"`` meant "/" and left the bare form to the proxy pattern.)"""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("edges", EdgeViewSet, basename="edge")
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("audit/calls", CallRecordViewSet, basename="call")
router.register("notifications/subscriptions", SubscriptionViewSet, basename="subscription")

urlpatterns = [
    path("schema/", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("notifications/audit/", SubscriptionAuditView.as_view(), name="subscription-audit"),
    path("", include(router.urls)),
]
