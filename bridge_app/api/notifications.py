"""REST resources of notifications: a user's own subscriptions, their deliveries and
their audit trail (``/api/v1/notifications/…``)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, generics, pagination, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from ..notifications import services
from ..notifications.models import Delivery, Subscription
from ..notifications.test_delivery import test_delivery_send
from .views import BASE_PERMISSIONS


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription. ``secret`` (the webhook signing secret) is in the answer to its
    creation (and to rotate_secret) only: store it then."""

    edges = serializers.ListField(child=serializers.CharField(max_length=63), required=False,
                                  help_text="edge names; empty: every edge you may see")
    states = serializers.ListField(child=serializers.CharField(max_length=40), required=False,
                                   help_text="e.g. [\"COMPLETED\", \"FAILED\"]; empty: any")
    match = serializers.DictField(required=False, help_text="data fields that must be equal, e.g. {\"job_id\": …}")
    pending = serializers.SerializerMethodField()
    dead = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = ["id", "name", "edges", "plugin", "topic", "states", "match", "target", "url", "email", "active",
                  "expires_at", "created_at", "last_error", "last_delivered_at", "pending", "dead"]
        read_only_fields = ["id", "created_at", "last_error", "last_delivered_at", "pending", "dead"]
        extra_kwargs = {"target": {"help_text": "webhook, email or browser (the portal's desktop notifications)"},
                        "topic": {"help_text": "a plugin's topic (job_status, task_status, …), edge_online or "
                                               "edge_offline; bridge topics: edge_offline_long, "
                                               "job_walltime_near, allocation_low"}}

    def get_pending(self, sub: Subscription) -> int:
        return sub.deliveries.filter(status=Delivery.Status.PENDING).count()

    def get_dead(self, sub: Subscription) -> int:
        return sub.deliveries.filter(status=Delivery.Status.DEAD).count()


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    secret = serializers.CharField(read_only=True)

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["id", "event_id", "status", "attempts", "created_at", "next_attempt_at", "delivered_at",
                  "last_error"]
        read_only_fields = fields


class DeliveryPagination(pagination.CursorPagination):
    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"


def _validation(exc: DjangoValidationError) -> exceptions.ValidationError:
    return exceptions.ValidationError({"detail": "; ".join(exc.messages)})


class SubscriptionViewSet(viewsets.ModelViewSet):
    """Your subscriptions: events you may see, sent to a webhook, an e-mail address or the
    portal's desktop notifications. Changes are audited (``/api/v1/notifications/audit``)."""

    serializer_class = SubscriptionSerializer
    permission_classes = BASE_PERMISSIONS
    pagination_class = None
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Subscription.objects.none()
        qs = services.subscription_list_for_user(user=self.request.user)
        target = self.request.query_params.get("target")
        return qs.filter(target=target) if target else qs

    @extend_schema(parameters=[OpenApiParameter("target", str, description="only this target")])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="Subscribe (the answer carries the webhook secret, once)",
                   responses={201: SubscriptionCreatedSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        form = SubscriptionSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            sub = services.subscription_create(user=request.user, actor=request.user, **form.validated_data)
        except DjangoValidationError as exc:
            raise _validation(exc) from None
        return Response(SubscriptionCreatedSerializer(sub).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        sub = self.get_object()
        form = SubscriptionSerializer(sub, data=request.data, partial=kwargs.get("partial", False))
        form.is_valid(raise_exception=True)
        try:
            sub = services.subscription_update(sub=sub, actor=request.user, **form.validated_data)
        except DjangoValidationError as exc:
            raise _validation(exc) from None
        return Response(SubscriptionSerializer(sub).data)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        services.subscription_delete(sub=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Send a test event to the target now", request=None,
                   responses={200: inline_serializer("TestDelivery", {
                       "ok": serializers.BooleanField(), "status": serializers.IntegerField(allow_null=True),
                       "error": serializers.CharField()})})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        """A webhook gets a signed ``{"kind": "test", …}`` event (id 0); an e-mail target a
        test mail. Nothing is retried; the answer says what happened."""
        outcome = async_to_sync(test_delivery_send)(self.get_object())
        return Response({"ok": outcome.ok, "status": outcome.status, "error": outcome.error})

    @extend_schema(summary="Replace the webhook signing secret (the answer carries the new one, once)",
                   request=None, responses={200: inline_serializer("Secret", {"secret": serializers.CharField()})})
    @action(detail=True, methods=["post"])
    def rotate_secret(self, request: Request, pk: str) -> Response:
        return Response({"secret": services.subscription_secret_rotate(sub=self.get_object(), actor=request.user)})

    @extend_schema(summary="Deliveries of this subscription, newest first (dead-lettered ones with their error)",
                   parameters=[OpenApiParameter("status", str, enum=Delivery.Status.values)],
                   responses={200: DeliverySerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=DeliveryPagination, serializer_class=DeliverySerializer)
    def deliveries(self, request: Request, pk: str) -> Response:
        qs = self.get_object().deliveries.all()
        wanted = request.query_params.get("status")
        if wanted:
            qs = qs.filter(status=wanted)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(summary="Put dead-lettered deliveries back in the outbox", request=None,
                   responses={200: inline_serializer("Redelivered", {"redelivered": serializers.IntegerField()})})
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: str) -> Response:
        return Response({"redelivered": services.deliveries_redeliver(sub=self.get_object(), actor=request.user)})


class SubscriptionAuditSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    action = serializers.CharField()
    target = serializers.CharField()
    detail = serializers.JSONField()


class AuditPagination(pagination.CursorPagination):
    ordering = "-at"
    page_size = 100


class SubscriptionAuditView(generics.ListAPIView):
    """Changes to your subscriptions (yours only), newest first."""

    serializer_class = SubscriptionAuditSerializer
    permission_classes = BASE_PERMISSIONS
    pagination_class = AuditPagination

    def get_queryset(self) -> Any:
        return services.subscription_audit_for_user(user=self.request.user)
