"""Django admin of subscriptions (site admins): changes go through the audited services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models

from . import services
from .models import Delivery, Subscription


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["event_id", "status", "attempts", "created_at", "next_attempt_at", "delivered_at", "last_error"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0
    ordering = ["-id"]
    show_change_link = False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "name", "target", "destination", "plugin", "topic", "active", "expires_at",
                    "last_error", "last_delivered_at"]
    list_filter = ["target", "active"]
    search_fields = ["user__username", "name", "url", "email"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at", "start_after", "last_error", "last_delivered_at", "lease_owner", "lease_until",
                       "retry_at"]
    actions = ["redeliver_dead"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_model(self, request, obj, form, change):
        data = {f: form.cleaned_data[f] for f in services.FIELDS if f in form.cleaned_data}
        try:
            if change:
                services.subscription_update(sub=obj, actor=request.user, **data)
            else:
                user = form.cleaned_data["user"]
                created = services.subscription_create(user=user, actor=request.user, **data)
                obj.pk = created.pk
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))

    def delete_model(self, request, obj):
        services.subscription_delete(sub=obj, actor=request.user, reason="admin")

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.subscription_delete(sub=obj, actor=request.user, reason="admin")

    @admin.action(description="Put dead-lettered deliveries back in the outbox")
    def redeliver_dead(self, request, queryset):
        n = sum(services.deliveries_redeliver(sub=sub, actor=request.user) for sub in queryset)
        self.message_user(request, f"{n} deliveries are back in the outbox.")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "subscription", "event_id", "status", "attempts", "created_at", "delivered_at", "last_error"]
    list_filter = ["status"]
    search_fields = ["=event_id", "=subscription__id"]
    readonly_fields = ["subscription", "event_id", "status", "attempts", "created_at", "next_attempt_at",
                       "delivered_at", "last_error"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False
