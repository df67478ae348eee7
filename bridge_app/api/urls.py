from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.routers import SimpleRouter

from .views import ApiTokenViewSet, CallRecordViewSet, EdgeViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("edges", EdgeViewSet, basename="edge")
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("audit/calls", CallRecordViewSet, basename="call")

urlpatterns = [
    path("schema/", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("", include(router.urls)),
]
