"""Django admin for site admins: edges (state, plugins, tokens, who may use them), API
tokens, and the audit trail (proxied calls, admin actions).

New tokens are shown once, on a page of their own (never stored, never put in a
message that would sit in the session). Every change that matters for access goes through
``services.py`` (so it is audited and every bridge process learns of it), never through a
plain model save.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from .access.tokens import agent_commands
from .conf import edge_settings
from .domain import services
from .models import (
    ActionRecord,
    ApiToken,
    CallRecord,
    Edge,
    EdgeGrant,
    EdgeToken,
    PluginRegistration,
    validate_edge_name,
)


def show_new_tokens(request: HttpRequest, title: str, rows: list[tuple[str, str]], *,
                    edges: bool = False) -> HttpResponse:
    """The new tokens, once, each with a copy button; edge tokens with the agent command."""
    url = edge_settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
    shown = [{"who": who, "token": token,
              "command": agent_commands(bridge_url=url, edge_name=who)["run"] if edges else ""}
             for who, token in rows]
    return TemplateResponse(request, "admin/bridge_app/new_tokens.html", {
        "title": title, "rows": shown, "site_header": admin.site.site_header,
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


class EdgeGrantInline(admin.TabularInline):
    """Who may use the edge. Saved through services (audited, applied at once everywhere)."""

    model = EdgeGrant
    extra = 0
    fields = ["user", "group", "role", "created_at", "created_by"]
    readonly_fields = ["created_at", "created_by"]
    autocomplete_fields = ["user", "group"]
    verbose_name = "role on this edge"
    verbose_name_plural = "who may use this edge (besides its owner and site admins)"


@admin.register(Edge)
class EdgeAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "online", "suspended", "last_seen", "host", "agent_version", "plugin_list",
                    "calls_link"]
    list_filter = ["status", "suspended"]
    search_fields = ["name", "host", "owner__username"]
    readonly_fields = ["status", "online", "connected_at", "last_seen", "disconnected_at", "host", "agent_version",
                       "protocol_version", "facts", "created_at", "calls_link"]
    fields = ["name", "owner", "description", "suspended", *readonly_fields]
    inlines = [EdgeGrantInline, PluginInline, EdgeTokenInline]
    actions = ["issue_token", "disconnect_now", "suspend", "resume"]

    @admin.display(description="who used it")
    def calls_link(self, edge: Edge) -> str:
        url = reverse("admin:bridge_app_callrecord_changelist") + "?" + urlencode({"edge": edge.name})
        return format_html('<a href="{}">calls</a>', url)

    def save_model(self, request: HttpRequest, obj: Edge, form, change: bool) -> None:
        # Suspension goes through services: the agent is dropped and the action audited.
        suspended = obj.suspended
        if change and "suspended" in form.changed_data:
            obj.suspended = not suspended
        super().save_model(request, obj, form, change)
        if change and "suspended" in form.changed_data:
            if suspended:
                services.edge_suspend(edge=obj, actor=request.user)
            else:
                services.edge_resume(edge=obj, actor=request.user)
        elif change:
            services.broadcast.broadcast(services.broadcast.invalidation("edge", obj.name))

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not EdgeGrant:
            return super().save_formset(request, form, formset, change)
        edge = form.instance
        for grant in formset.deleted_objects:
            services.grant_remove(edge=edge, user=grant.user, group=grant.group, actor=request.user)
        for subform in formset.forms:
            if subform in formset.deleted_forms or not subform.has_changed() or not subform.is_valid():
                continue
            data = subform.cleaned_data
            previous = subform.instance if subform.instance.pk else None
            if previous is not None and (previous.user_id, previous.group_id) != (
                    getattr(data.get("user"), "pk", None), getattr(data.get("group"), "pk", None)):
                services.grant_remove(edge=edge, user=previous.user, group=previous.group, actor=request.user)
            try:
                services.grant_set(edge=edge, role=data["role"], user=data.get("user"), group=data.get("group"),
                                   actor=request.user)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        return None

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
        return show_new_tokens(request, "New edge tokens", rows, edges=True)

    @admin.action(description="Disconnect the selected edges now")
    def disconnect_now(self, request: HttpRequest, queryset: QuerySet[Edge]) -> None:
        done = [edge.name for edge in queryset if services.edge_kick(edge=edge, actor=request.user)]
        self.message_user(request, f"Disconnected: {', '.join(done) or 'none were connected'}")

    @admin.action(description="Suspend the selected edges (disconnect them and refuse them until resumed)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Edge]) -> None:
        done = [edge.name for edge in queryset if services.edge_suspend(edge=edge, actor=request.user)]
        self.message_user(request, f"Suspended: {', '.join(done) or 'none (already suspended)'}")

    @admin.action(description="Resume the selected edges")
    def resume(self, request: HttpRequest, queryset: QuerySet[Edge]) -> None:
        done = [edge.name for edge in queryset if services.edge_resume(edge=edge, actor=request.user)]
        self.message_user(request, f"Resumed: {', '.join(done) or 'none (none were suspended)'}")


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
                    return show_new_tokens(request, "New edge token", [(form.cleaned_data["edge_name"], plaintext)],
                                           edges=True)
        return super().add_view(request, form_url, extra_context)

    @admin.action(description="Revoke the selected tokens (connected agents are dropped)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[EdgeToken]) -> None:
        for token in queryset.select_related("edge"):
            services.edge_token_revoke(token=token, actor=request.user)
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
                    actor=request.user,
                )
                return show_new_tokens(request, "New API token", [(str(form.cleaned_data["user"]), plaintext)])
        return super().add_view(request, form_url, extra_context)

    @admin.action(description="Revoke the selected API tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset.select_related("user"):
            services.api_token_revoke(token=token, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """The audit trail is read, never edited here (``manage.py audit_prune`` deletes)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class EdgeNameFilter(admin.SimpleListFilter):
    """Filter by edge, choosing among the edges that exist (not a scan of the audit table)."""

    title = "edge"
    parameter_name = "edge"

    def lookups(self, request, model_admin):
        return [(name, name) for name in Edge.objects.order_by("name").values_list("name", flat=True)[:200]]

    def queryset(self, request, queryset):
        return queryset.filter(edge=self.value()) if self.value() else queryset


class StatusClassFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status_class"

    def lookups(self, request, model_admin):
        return [("2", "2xx success"), ("3", "3xx"), ("4", "4xx refused / client error"), ("5", "5xx failure")]

    def queryset(self, request, queryset):
        value = self.value()
        if value in ("2", "3", "4", "5"):
            low = int(value) * 100
            return queryset.filter(status__gte=low, status__lt=low + 100)
        return queryset


class UserFilter(admin.SimpleListFilter):
    """Filter by user, choosing among the bridge's users (not a scan of the audit table)."""

    title = "user"
    parameter_name = "user"

    def lookups(self, request, model_admin):
        names = get_user_model().objects.order_by("username").values_list("username", flat=True)[:200]
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(username=self.value()) if self.value() else queryset


class PluginNameFilter(admin.SimpleListFilter):
    title = "plugin"
    parameter_name = "plugin"

    def lookups(self, request, model_admin):
        names = PluginRegistration.objects.order_by("name").values_list("name", flat=True).distinct()[:100]
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(plugin=self.value()) if self.value() else queryset


class CallerKindFilter(admin.SimpleListFilter):
    """Programs (API tokens) apart from the portal's own calls (browser sessions), whose
    page polling would otherwise drown them."""

    title = "made by"
    parameter_name = "via"

    def lookups(self, request, model_admin):
        return [("token", "programs (API token)"), ("mcp", "AI assistants (MCP)"),
                ("portal", "the portal (browser session)")]

    def queryset(self, request, queryset):
        if self.value() == "mcp":
            return queryset.filter(client__startswith="mcp ")
        if self.value() == "token":
            return queryset.filter(token_id__isnull=False)
        if self.value() == "portal":
            return queryset.filter(token_id__isnull=True)
        return queryset


@admin.register(CallRecord)
class CallRecordAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "via", "edge", "plugin", "method", "path", "status", "duration_ms", "size"]
    list_filter = [CallerKindFilter, UserFilter, EdgeNameFilter, PluginNameFilter, StatusClassFilter, "method", "at"]
    search_fields = ["username", "=edge", "plugin", "path", "=request_id", "client"]
    date_hierarchy = "at"
    show_full_result_count = False  # counting a large audit table on every page is slow
    list_per_page = 100

    @admin.display(description="via")
    def via(self, record: CallRecord) -> str:
        if record.client.startswith("mcp "):
            return "API token, MCP"  # the client and tool: record.client, on the record's page
        return "API token" if record.token_id is not None else "portal"

    @admin.display(description="bytes in / out")
    def size(self, record: CallRecord) -> str:
        return f"{record.bytes_in} / {record.bytes_out}"


@admin.register(ActionRecord)
class ActionRecordAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_name", "action", "edge", "target", "detail"]
    list_filter = ["action", "at"]
    search_fields = ["actor_name", "=edge", "target"]
    date_hierarchy = "at"


from .notifications import admin as notifications_admin  # noqa: E402, F401  (registers its models)

admin.site.site_header = "Radical Edge administration"
admin.site.site_title = "Radical Edge"
