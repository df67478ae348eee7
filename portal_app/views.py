"""Server-rendered portal pages.

The views render what the bridge itself knows (edges, plugins, roles, host facts) and a
small page context for the page's script. What lives on the edges (metrics, jobs, tasks,
queues) is fetched by the browser through the proxy routes with the session cookie, and
kept current by the ``/events`` stream, so a page never waits on an edge to render.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from bridge_app.access import policy
from bridge_app.domain import children
from bridge_app.domain.selectors import edge_add_allowed, edge_get_for_user, edge_list_for_user, edge_role_for_user
from bridge_app.models import Edge, PluginRegistration

from .forms import ChildLaunchForm

# Plugins with a page of their own; every other plugin is rendered from its UI schema.
PLUGIN_TEMPLATES = {
    "sysinfo": "portal/plugins/sysinfo.html",
    "queue_info": "portal/plugins/queue_info.html",
    "psij": "portal/plugins/psij.html",
    "rhapsody": "portal/plugins/rhapsody.html",
    "files": "portal/plugins/files.html",
}
PLUGIN_ORDER = ["sysinfo", "queue_info", "psij", "rhapsody", "files"]
# Roles that may call routes which change something (submit, cancel); viewers only read.
FACT_LABELS = {
    "hostname": "Host name", "platform": "Platform", "python": "Python", "user": "Runs as",
    "pid": "Agent process",
}
# Facts shown elsewhere on the page (the agent version under Connection, the uid with the user).
FACTS_NOT_LISTED = ("agent_version", "uid")


def _plugin_sort_key(plugin: PluginRegistration) -> tuple[int, str]:
    return (PLUGIN_ORDER.index(plugin.name) if plugin.name in PLUGIN_ORDER else len(PLUGIN_ORDER), plugin.name)


def plugin_title(plugin: PluginRegistration) -> str:
    """A plugin's display name: its UI schema's title, else its name."""
    schema = plugin.ui_schema if isinstance(plugin.ui_schema, dict) else {}
    title = schema.get("title")
    return title if isinstance(title, str) and title.strip() else plugin.name


def plugin_description(plugin: PluginRegistration) -> str:
    schema = plugin.ui_schema if isinstance(plugin.ui_schema, dict) else {}
    text = plugin.description or schema.get("description") or ""
    return text if isinstance(text, str) else ""


# What the edge page shows of the host facts. Hellos are capped (HELLO_MAX_FACTS_BYTES), but
# a row stored before that check, or by a rogue agent now refused, may hold megabytes.
FACT_SHOWN_CHARS = 2000
FACTS_SHOWN_CHARS = 64 * 1024
FACTS_SHOWN_ROWS = 200


def _facts(edge: Edge) -> list[tuple[str, str]]:
    """The host facts the agent announced, known ones first, as (label, text) pairs, cut
    to what a page may carry."""
    facts = edge.facts if isinstance(edge.facts, dict) else {}
    rows = []
    for key, label in FACT_LABELS.items():
        if facts.get(key) in (None, ""):
            continue
        text = str(facts[key])
        if key == "user" and facts.get("uid") not in (None, ""):
            text = f"{text} (uid {facts['uid']})"
        rows.append((label, text))
    rows += [(str(key), str(value)) for key, value in sorted(facts.items(), key=lambda kv: str(kv[0]))
             if key not in FACT_LABELS and key not in FACTS_NOT_LISTED and value not in (None, "")]
    shown: list[tuple[str, str]] = []
    budget = FACTS_SHOWN_CHARS
    for label, text in rows:
        if budget <= 0 or len(shown) == FACTS_SHOWN_ROWS:
            shown.append(("…", f"{len(rows) - len(shown)} more facts not shown"))
            break
        label, text = label[:200], text if len(text) <= FACT_SHOWN_CHARS else text[:FACT_SHOWN_CHARS] + "…"
        shown.append((label, text))
        budget -= len(label) + len(text)
    return shown


def acting_account(edge: Edge) -> dict[str, Any]:
    """Who a job or task started on ``edge`` runs as: the agent's Unix account and host."""
    return {"user": edge.unix_user, "host": edge.unix_host or edge.name, "root": edge.runs_as_root}


def _not_found(request: HttpRequest, title: str, detail: str, *, edge: Edge | None = None) -> HttpResponse:
    return render(request, "portal/not_found.html", {"title": title, "detail": detail, "edge": edge}, status=404)


def _edge_page_context(request: HttpRequest, edge: Edge, *, tab: str) -> dict[str, Any]:
    """Template context shared by the edge page and its plugin tabs."""
    role = edge_role_for_user(user=request.user, edge=edge)
    plugins = sorted(edge.plugins.all(), key=_plugin_sort_key)
    names = [p.name for p in plugins]
    tabs = [{"name": p.name, "title": plugin_title(p), "current": p.name == tab,
             "url": reverse("portal:plugin", args=[edge.name, p.name])} for p in plugins]
    account = acting_account(edge)
    return {
        "edge": edge,
        "role": role,
        "account": account,
        "warn_root": account["root"] and policy.manages(role),
        "can_write": policy.may_write(role),
        "can_manage": policy.manages(role),
        "plugins": [{"reg": p, "title": plugin_title(p), "description": plugin_description(p),
                     "url": reverse("portal:plugin", args=[edge.name, p.name])} for p in plugins],
        "tabs": tabs,
        "tab": tab,
        "facts": _facts(edge),
        "job": _child_job(edge),
        "page_context": {
            "user": request.user.get_username(),
            "edge": edge.name,
            "role": role,
            "canWrite": policy.may_write(role),
            "online": edge.is_online,
            "suspended": edge.suspended,
            "plugins": names,
            "pluginTitles": {p.name: plugin_title(p) for p in plugins},
            "runsAs": account,
        },
    }


def _child_job(edge: Edge) -> dict[str, Any] | None:
    """What the page says about a child edge's batch job: its ids, state and walltime left."""
    if edge.parent_id is None:
        return None
    job = edge.job if isinstance(edge.job, dict) else {}
    left = None
    try:
        ends = datetime.fromisoformat(job["ends_at"]) if job.get("ends_at") else None
    except (TypeError, ValueError):
        ends = None
    if ends is not None and not job.get("ended"):
        left = max(0, int((ends - timezone.now()).total_seconds()))
    state = "ended" if job.get("ended") else "queued" if job.get("state") in ("QUEUED", "SUBMITTING", "NEW") \
        else "running"
    return {"id": job.get("native_id") or job.get("job_id") or "", "executor": job.get("executor") or "",
            "state": state, "job_state": job.get("state") or "", "nodes": job.get("nodes"),
            "queue": job.get("queue") or "", "left": left, "left_text": _duration_text(left),
            "detail": job.get("detail") or "", "parent": edge.parent.name if edge.parent else ""}


def _duration_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """My edges with their live state, and my recent jobs and tasks across them."""
    edges = list(edge_list_for_user(user=request.user))
    # Children right below their parent (when the caller sees it), the newest first.
    names = {e.name for e in edges}
    top = [e for e in edges if e.parent_id is None or e.name.rsplit(".", 1)[0] not in names]
    nested = [e for e in edges if e not in top]
    edges = []
    for edge in top:
        edges.append(edge)
        edges += sorted((c for c in nested if c.parent_id == edge.pk), key=lambda c: c.created_at, reverse=True)
    rows = []
    for edge in edges:
        plugins = sorted(edge.plugins.all(), key=_plugin_sort_key)
        can_manage = request.user.is_superuser or edge.owner_id == request.user.pk
        rows.append({"edge": edge, "can_manage": can_manage, "warn_root": can_manage and edge.runs_as_root,
                     "job": _child_job(edge),
                     "plugins": [{"name": p.name, "title": plugin_title(p)} for p in plugins]})
    context = {
        "rows": rows,
        "root_edges": [r["edge"] for r in rows if r["warn_root"]],
        "can_add_edge": edge_add_allowed(user=request.user),
        "page_context": {
            "user": request.user.get_username(),
            "edges": [{"name": r["edge"].name, "online": r["edge"].is_online,
                       "plugins": [p["name"] for p in r["plugins"]],
                       "pluginTitles": {p["name"]: p["title"] for p in r["plugins"]},
                       "runsAs": acting_account(r["edge"])} for r in rows],
        },
    }
    return render(request, "portal/dashboard.html", context)


@login_required
def edge_detail(request: HttpRequest, name: str) -> HttpResponse:
    """An edge's overview: state, host facts and its plugins."""
    edge = edge_get_for_user(user=request.user, name=name)
    if edge is None:
        return _not_found(request, "No such edge",
                          f"There is no edge named “{name}” that you may use. It may not exist, or its owner "
                          "has not shared it with you.")
    context = _edge_page_context(request, edge, tab="")
    context["children"] = [{"edge": c, "job": _child_job(c)} for c in
                           edge_list_for_user(user=request.user).filter(parent=edge).order_by("-created_at")[:50]]
    has_edges_plugin = any(p["reg"].name == "edges" for p in context["plugins"])
    context["launch_form"] = ChildLaunchForm() if has_edges_plugin and context["can_manage"] else None
    return render(request, "portal/edge.html", context)


@login_required
@require_POST
def child_launch(request: HttpRequest, name: str) -> HttpResponse:
    """Start an edge on compute nodes from its parent's page (owner or admin)."""
    edge = edge_get_for_user(user=request.user, name=name)
    if edge is None or not policy.manages(edge_role_for_user(user=request.user, edge=edge)):
        return _not_found(request, "No such edge", f"There is no edge named “{name}” that you manage.")
    form = ChildLaunchForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Not started: " + "; ".join(f"{form.fields[k].label if k in form.fields else k}: "
                                                           f"{' '.join(v)}" for k, v in form.errors.items()))
        return redirect("portal:edge", name=edge.name)
    try:
        child = children.child_edge_launch(parent=edge, user=request.user, launch=form.launch_fields())
    except ValidationError as exc:
        messages.error(request, "Not started: " + "; ".join(exc.messages))
        return redirect("portal:edge", name=edge.name)
    except children.LaunchFailed as exc:
        messages.error(request, f"Not started: {exc.detail}")
        return redirect("portal:edge", name=edge.name)
    messages.success(request, f"{child.name} is submitted (job {child.job.get('native_id') or child.job.get('job_id')}"
                              "); it comes online when the scheduler starts the job.")
    return redirect("portal:edge", name=child.name)


@login_required
@require_POST
def child_stop(request: HttpRequest, name: str) -> HttpResponse:
    """Stop a child edge: cancel its job and revoke its token (owner or admin)."""
    edge = edge_get_for_user(user=request.user, name=name)
    if edge is None or edge.parent_id is None or \
            not policy.manages(edge_role_for_user(user=request.user, edge=edge)):
        return _not_found(request, "No such edge", f"There is no edge on compute nodes named “{name}” that you "
                          "manage.")
    children.child_edge_stop(child=edge, user=request.user)
    messages.success(request, f"{edge.name} is stopped: its job is cancelled and its token revoked.")
    return redirect("portal:edge", name=edge.parent.name if edge.parent else edge.name)


@login_required
def plugin_page(request: HttpRequest, name: str, plugin: str) -> HttpResponse:
    """One plugin of an edge: its own page for the built-in plugins, else one generated from
    the plugin's UI schema."""
    edge = edge_get_for_user(user=request.user, name=name)
    if edge is None:
        return _not_found(request, "No such edge",
                          f"There is no edge named “{name}” that you may use.")
    registration = next((p for p in edge.plugins.all() if p.name == plugin), None)
    if registration is None:
        return _not_found(request, "No such plugin",
                          f"Edge “{edge.name}” does not offer a plugin named “{plugin}” (its agent did not "
                          "announce one when it last connected).", edge=edge)
    context = _edge_page_context(request, edge, tab=plugin)
    context["plugin"] = registration
    context["plugin_title"] = plugin_title(registration)
    context["plugin_description"] = plugin_description(registration)
    context["page_context"].update({
        "plugin": plugin,
        "uiSchema": registration.ui_schema if isinstance(registration.ui_schema, dict) else None,
        "routes": registration.routes if isinstance(registration.routes, list) else [],
    })
    template = PLUGIN_TEMPLATES.get(plugin, "portal/plugins/generic.html")
    return render(request, template, context)


@login_required
def psij_job(request: HttpRequest, name: str, job_id: str) -> HttpResponse:
    """One psij job: its state, attributes and its output, tailed while it grows."""
    edge = edge_get_for_user(user=request.user, name=name)
    if edge is None:
        return _not_found(request, "No such edge", f"There is no edge named “{name}” that you may use.")
    if not any(p.name == "psij" for p in edge.plugins.all()):
        return _not_found(request, "No batch jobs here",
                          f"Edge “{edge.name}” does not offer the psij plugin.", edge=edge)
    context = _edge_page_context(request, edge, tab="psij")
    context["plugin_title"] = next((t["title"] for t in context["tabs"] if t["name"] == "psij"), "Batch jobs")
    context["job_id"] = job_id
    context["page_context"].update({"plugin": "psij", "jobId": job_id})
    return render(request, "portal/psij_job.html", context)
