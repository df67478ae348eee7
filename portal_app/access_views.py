"""The portal's access pages: a person's API tokens, and sharing an edge with others.

Every change goes through ``bridge_app.domain.services`` (audited, applied at once in every
bridge process). Forms are plain POSTs protected by Django's CSRF middleware.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from bridge_app.access import policy
from bridge_app.access.tokens import agent_commands
from bridge_app.conf import edge_settings
from bridge_app.domain import services
from bridge_app.domain.selectors import (
    api_token_list_for_user,
    edge_add_allowed,
    edge_get_for_user,
    edge_role_for_user,
    grant_list_for_edge,
)
from bridge_app.models import Edge

from .forms import ApiTokenCreateForm, EdgeAddForm, GrantForm
from .views import acting_account

# --- tokens -------------------------------------------------------------------------------


# A new secret waits in the session between the POST that made it and the page that shows
# it (post/redirect/get), and is removed from the session by that page.
NEW_API_TOKEN_KEY = "portal:new_api_token"  # noqa: S105 - a session key, not a secret
NEW_EDGE_TOKEN_KEY = "portal:new_edge_token"  # noqa: S105 - a session key, not a secret


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """List the caller's API tokens; POST issues one and redirects here, where it is shown
    once (so reloading the page cannot issue a second token)."""
    form = ApiTokenCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        token, plaintext = services.api_token_create(
            user=request.user, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"],
            expires_in_days=form.cleaned_data["expires_in_days"], actor=request.user,
        )
        request.session[NEW_API_TOKEN_KEY] = {"pk": token.pk, "secret": plaintext}
        return redirect("portal:tokens")
    new = request.session.pop(NEW_API_TOKEN_KEY, None)
    return render(request, "portal/tokens.html", {
        "form": form, "tokens": api_token_list_for_user(user=request.user),
        "new_token": new["secret"] if isinstance(new, dict) else None,
        "new_token_pk": new["pk"] if isinstance(new, dict) else None,
    }, status=400 if form.errors else 200)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(api_token_list_for_user(user=request.user), pk=pk)
    services.api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Token {token.prefix}… is revoked; programs using it are refused from now on.")
    return redirect("portal:tokens")


# --- sharing an edge ----------------------------------------------------------------------


def _managed_edge(request: HttpRequest, name: str) -> Edge:
    """The edge if the caller manages it (owner or admin): 404 if they cannot see it,
    403 if they can see but not manage it."""
    edge = edge_get_for_user(user=request.user, name=name)
    if edge is None:
        raise Http404("no such edge")
    if not policy.manages(edge_role_for_user(user=request.user, edge=edge)):
        raise PermissionDenied("only the edge's owner or a site admin may manage it")
    return edge


@login_required
@require_http_methods(["GET", "POST"])
def sharing(request: HttpRequest, name: str) -> HttpResponse:
    """Who may use an edge; POST gives a user or group a role."""
    edge = _managed_edge(request, name)
    account = acting_account(edge)
    form = GrantForm(request.POST or None, account=account)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if data["kind"] == "group":
            who = {"group": Group.objects.filter(name=data["name"]).first()}
        else:
            who = {"user": get_user_model().objects.filter(username=data["name"], is_active=True).first()}
        if next(iter(who.values())) is None:
            form.add_error("name", f"There is no {data['kind']} named '{data['name']}'.")
        else:
            try:
                grant = services.grant_set(edge=edge, role=data["role"], actor=request.user, **who)
            except ValidationError as exc:
                form.add_error(None, "; ".join(exc.messages))
            else:
                messages.success(request, f"{grant.grantee} is now {grant.role} on {edge.name}.")
                return redirect("portal:sharing", name=edge.name)
    return render(request, "portal/sharing.html", {
        "edge": edge, "grants": grant_list_for_edge(edge=edge), "form": form,
        "is_admin": request.user.is_superuser, "account": account,
    }, status=400 if form.errors else 200)


@login_required
@require_POST
def sharing_remove(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    edge = _managed_edge(request, name)
    grant = get_object_or_404(grant_list_for_edge(edge=edge), pk=pk)
    services.grant_remove(edge=edge, user=grant.user, group=grant.group, actor=request.user)
    messages.success(request, f"{grant.grantee} no longer has a role on {edge.name}.")
    return redirect("portal:sharing", name=edge.name)


@login_required
@require_POST
def edge_state(request: HttpRequest, name: str) -> HttpResponse:
    """Suspend or resume an edge (owner or admin), or disconnect it now (admins)."""
    edge = _managed_edge(request, name)
    action = request.POST.get("action")
    if action == "suspend":
        services.edge_suspend(edge=edge, actor=request.user)
        messages.success(request, f"{edge.name} is suspended: it is disconnected and refused until resumed.")
    elif action == "resume":
        services.edge_resume(edge=edge, actor=request.user)
        messages.success(request, f"{edge.name} is resumed: its agent may connect again.")
    elif action == "disconnect" and request.user.is_superuser:
        done = services.edge_kick(edge=edge, actor=request.user, detail="disconnected by a site admin in the portal")
        messages.success(request, f"{edge.name} was disconnected." if done else f"{edge.name} was not connected.")
    else:
        return HttpResponse("unknown action", status=400, content_type="text/plain")
    return redirect("portal:sharing", name=edge.name)


# --- adding an edge -----------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def edge_add(request: HttpRequest) -> HttpResponse:
    """A user adds an edge of their own (within the site's limit); its token is shown once,
    with the agent command, on the edge's connect page."""
    allowed = edge_add_allowed(user=request.user)
    form = EdgeAddForm(request.POST or None)
    if request.method == "POST" and allowed and form.is_valid():
        try:
            token, plaintext = services.edge_add_for_user(user=request.user, name=form.cleaned_data["name"],
                                                          description=form.cleaned_data["description"])
        except ValidationError as exc:
            form.add_error("name", "; ".join(exc.messages))
        else:
            request.session[NEW_EDGE_TOKEN_KEY] = {"edge": token.edge.name, "secret": plaintext}
            return redirect("portal:edge-connect", name=token.edge.name)
    return render(request, "portal/edge_add.html", {
        "form": form, "allowed": allowed, "limit": edge_settings.USER_EDGES_MAX,
        "owned": Edge.objects.filter(owner=request.user).count(),
    }, status=400 if form.errors else (200 if allowed or request.method == "GET" else 403))


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def edge_connect(request: HttpRequest, name: str) -> HttpResponse:
    """How to connect an agent to an edge: the exact command. POST issues a new token for it
    (shown once, after a redirect); the token just issued is shown here once."""
    edge = _managed_edge(request, name)
    if request.method == "POST":
        _, plaintext = services.edge_token_create(name=edge.name, created_by=request.user,
                                                  note="issued in the portal")
        request.session[NEW_EDGE_TOKEN_KEY] = {"edge": edge.name, "secret": plaintext}
        return redirect("portal:edge-connect", name=edge.name)
    new = request.session.get(NEW_EDGE_TOKEN_KEY)
    secret = None
    if isinstance(new, dict) and new.get("edge") == edge.name:
        secret = new.get("secret")
        del request.session[NEW_EDGE_TOKEN_KEY]
    return render(request, "portal/edge_connect.html", {
        "edge": edge, "new_token": secret, "commands": agent_commands_for(request, edge),
        "account": acting_account(edge),
    })


def agent_commands_for(request: HttpRequest, edge: Edge) -> dict[str, str]:
    """The commands that connect an agent to ``edge``, with this bridge's public URL."""
    url = edge_settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
    return agent_commands(bridge_url=url, edge_name=edge.name)
