"""Django admin for site admins: edges (state, plugins, tokens) and API tokens.

New tokens are shown once, on a page of their own (never stored, never put in a
message that would sit in the session).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from . import services
from .models import ApiToken, Edge, EdgeToken, PluginRegistration, validate_edge_name


def show_new_tokens(request: HttpRequest, title: str, rows: list[tuple[str, str]]) -> HttpResponse:
    return TemplateResponse(request, "admin/bridge_app/new_tokens.html", {
        "title": title, "rows": rows, "site_header": admin.site.site_header,
        "has_permission": True,
    })


class PluginInline(admin.TabularInline):
    model = PluginRegistration
    extra = 0
    can_delete = False
    fields = ["name", "version", "description", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class EdgeTokenInline(admin.TabularInline):
    model = EdgeToken
    extra = 0
    can_delete = False
    fields = ["prefix", "note", "created_at", "created_by", "last_used_at", "expires_at", "revoked_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Edge)
class EdgeAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "online", "suspended", "last_seen", "host", "agent_version", "plugin_list"]
    list_filter = ["status", "suspended"]
    search_fields = ["name", "host", "owner__username"]
    readonly_fields = ["status", "online", "connected_at", "last_seen", "disconnected_at", "host", "agent_version",
                       "protocol_version", "facts", "created_at"]
    fields = ["name", "owner", "description", "suspended", *readonly_fields]
    inlines = [PluginInline, EdgeTokenInline]
    actions = ["issue_token", "disconnect_now"]

    @admin.display(boolean=True, description="online")
    def online(self, edge: Edge) -> bool:
        return edge.is_online

    @admin.display(description="plugins")
    def plugin_list(self, edge: Edge) -> str:
        return ", ".join(p.name for p in edge.plugins.all())

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").prefetch_related("plugins")

    @admin.action(description="Issue a new token for the selected edges")
    def issue_token(self, request: HttpRequest, queryset: QuerySet[Edge]) -> HttpResponse:
        rows = []
        for edge in queryset:
            _, plaintext = services.edge_token_create(name=edge.name, created_by=request.user, note="issued in admin")
            rows.append((edge.name, plaintext))
        return show_new_tokens(request, "New edge tokens", rows)

    @admin.action(description="Disconnect the selected edges now")
    def disconnect_now(self, request: HttpRequest, queryset: QuerySet[Edge]) -> None:
        done = [edge.name for edge in queryset if services.edge_kick(edge=edge)]
        self.message_user(request, f"Disconnected: {', '.join(done) or 'none were connected'}")


class EdgeTokenAddForm(forms.ModelForm):
    edge_name = forms.CharField(max_length=63, help_text="created if it does not exist yet",
                                validators=[validate_edge_name])
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.all(), required=False)
    expires_in_days = forms.IntegerField(required=False, min_value=1)

    class Meta:
        model = EdgeToken
        fields = ["note"]


@admin.register(EdgeToken)
class EdgeTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "edge", "note", "created_at", "created_by", "last_used_at", "expires_at", "revoked_at",
                    "active"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "edge__name", "note"]
    readonly_fields = ["prefix", "edge", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(boolean=True)
    def active(self, token: EdgeToken) -> bool:
        return token.is_active

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = EdgeTokenAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["edge_name", "owner", "note", "expires_in_days"]
        return ["prefix", "edge", "note", "created_at", "created_by", "last_used_at", "expires_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST":
            form = EdgeTokenAddForm(request.POST)
            if form.is_valid():
                try:
                    _, plaintext = services.edge_token_create(
                        name=form.cleaned_data["edge_name"], owner=form.cleaned_data["owner"],
                        created_by=request.user, note=form.cleaned_data["note"],
                        expires_in_days=form.cleaned_data["expires_in_days"],
                    )
                except ValidationError as exc:
                    form.add_error("edge_name", exc)
                else:
                    return show_new_tokens(request, "New edge token", [(form.cleaned_data["edge_name"], plaintext)])
        return super().add_view(request, form_url, extra_context)

    @admin.action(description="Revoke the selected tokens (connected agents are dropped)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[EdgeToken]) -> None:
        for token in queryset.select_related("edge"):
            services.edge_token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


class ApiTokenAddForm(forms.ModelForm):
    expires_in_days = forms.IntegerField(required=False, min_value=1)

    class Meta:
        model = ApiToken
        fields = ["user", "name", "scope"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "scope", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["scope", "revoked_at"]
    search_fields = ["prefix", "user__username", "name"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name", "scope", "expires_in_days"]
        return ["prefix", "user", "name", "scope", "created_at", "last_used_at", "expires_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["prefix", "user", "scope", "created_at", "last_used_at", "revoked_at"]

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST":
            form = ApiTokenAddForm(request.POST)
            if form.is_valid():
                _, plaintext = services.api_token_create(
                    user=form.cleaned_data["user"], name=form.cleaned_data["name"],
                    scope=form.cleaned_data["scope"], expires_in_days=form.cleaned_data["expires_in_days"],
                )
                return show_new_tokens(request, "New API token", [(str(form.cleaned_data["user"]), plaintext)])
        return super().add_view(request, form_url, extra_context)

    @admin.action(description="Revoke the selected API tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.api_token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


admin.site.site_header = "Radical Edge administration"
admin.site.site_title = "Radical Edge"
