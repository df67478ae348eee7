from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.routers import SimpleRouter

from .views import EdgeViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("edges", EdgeViewSet, basename="edge")

urlpatterns = [
    path("schema/", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("", include(router.urls)),
]
