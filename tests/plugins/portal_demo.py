"""Plugins for the portal's browser tests: a third-party plugin the portal has no page for
(rendered from its UI schema alone), and one whose every string is hostile markup.

``ScratchPlugin`` uses every part of the UI schema: a form with each field type, monitors of
each type (metrics, table, task_list with detail and cancel, raw) and a notification topic.
``HostilePlugin`` has a title, description, form and answers made of ``<script>`` and
``<img onerror>``, and ``HostileNamePlugin`` such a name; the portal must show all of it as text.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from edge_agent.plugin import HTTPError, Plugin, Request, Session, route

XSS_SCRIPT = "<script>window.__pwned = 'script'</script>"
XSS_IMG = "<img src=x onerror=\"window.__pwned='img'\">"


class ScratchPlugin(Plugin):
    name = "scratch"
    version = "1.2.0"
    description = "Scratch file system usage and purges (a third-party plugin without portal code)."
    ui_schema = {
        "title": "Scratch space",
        "icon": "hdd",
        "description": "Free space on the scratch file system, and purges of old files.",
        "forms": [{
            "id": "purge", "title": "Purge old files", "layout": "grid2",
            "fields": [
                {"name": "older_than_days", "type": "number", "label": "Older than (days)", "default": 30,
                 "required": True},
                {"name": "pattern", "type": "text", "label": "Pattern", "placeholder": "*.tmp", "required": True},
                {"name": "mode", "type": "select", "label": "Mode", "options": ["fast", "thorough"], "default": "fast"},
                {"name": "options.seconds", "type": "number", "label": "Takes (seconds)", "default": 2},
                {"name": "dry_run", "type": "checkbox", "label": "Dry run", "default": False},
                {"name": "note", "type": "textarea", "label": "Note", "placeholder": "why"},
                {"name": "kind", "type": "hidden", "default": "purge"},
            ],
            "submit": {"label": "Purge", "endpoint": "purge/{sid}", "method": "POST"},
        }],
        "monitors": [
            {"id": "usage", "title": "Usage", "type": "metrics", "endpoint": "usage/{sid}", "auto_load": True},
            {"id": "files", "title": "Largest files", "type": "table", "endpoint": "files/{sid}", "auto_load": True,
             "data_path": "files", "row_key": "path",
             "columns": [{"key": "path", "label": "Path"}, {"key": "size", "label": "Bytes"},
                         {"key": "owner", "label": "Owner"}]},
            {"id": "purges", "title": "Purges", "type": "task_list", "endpoint": "purges/{sid}", "auto_load": True,
             "items_field": "purges", "id_field": "id", "state_field": "state",
             "columns": ["id", "pattern", "state", "removed"],
             "detail_endpoint": "purges/{sid}/{id}", "cancel_endpoint": "cancel/{sid}/{id}",
             "empty_text": "No purges yet."},
            {"id": "config", "title": "Configuration", "type": "raw", "endpoint": "config"},
        ],
        "notifications": [{"topic": "purge_status", "id_field": "id", "state_field": "state",
                           "message_field": "message"}],
    }

    def __init__(self, host, config=None) -> None:
        super().__init__(host, config)
        self.purges: dict[str, dict[str, Any]] = {}
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    @route("GET", "usage/{sid}")
    def usage(self, request: Request, session: Session) -> dict[str, Any]:
        return {"path": "/scratch", "total_gib": 1024, "used_gib": 612.5, "files": 48213,
                "quota": {"soft_gib": 800, "hard_gib": 1000}}

    @route("GET", "files/{sid}")
    def files(self, request: Request, session: Session) -> dict[str, Any]:
        return {"files": [
            {"path": "/scratch/run1/output.h5", "size": 52_428_800_000, "owner": "alice"},
            {"path": "/scratch/run2/checkpoint.bin", "size": 8_589_934_592, "owner": "alice"},
            {"path": f"/scratch/{XSS_IMG}", "size": 1, "owner": XSS_SCRIPT},
        ]}

    @route("POST", "purge/{sid}")
    def purge(self, request: Request, session: Session) -> dict[str, Any]:
        body = request.json_object()
        if "older_than_days" not in body:
            raise HTTPError(422, "missing_field", "older_than_days is required")
        seconds = float((body.get("options") or {}).get("seconds", 2))
        with self.lock:
            purge_id = f"purge-{next(self.counter)}"
            record = {"id": purge_id, "pattern": body.get("pattern"), "state": "RUNNING", "removed": 0,
                      "older_than_days": body["older_than_days"], "mode": body.get("mode"),
                      "dry_run": body.get("dry_run"), "note": body.get("note"), "kind": body.get("kind"),
                      "owner": request.caller.user}
            self.purges[purge_id] = record
        self.emit("purge_status", {"id": purge_id, "state": "RUNNING", "message": "started"}, owner=request.caller)
        caller = request.caller

        def finish() -> None:
            time.sleep(seconds)
            with self.lock:
                if record["state"] != "RUNNING":
                    return
                record.update(state="DONE", removed=17)
            self.emit("purge_status", {"id": purge_id, "state": "DONE", "message": "17 files removed"}, owner=caller)

        threading.Thread(target=finish, daemon=True).start()
        return dict(record)

    @route("GET", "purges/{sid}")
    def purge_list(self, request: Request, session: Session) -> dict[str, Any]:
        with self.lock:
            mine = [dict(p) for p in self.purges.values() if p["owner"] == request.caller.user]
        return {"purges": mine}

    @route("GET", "purges/{sid}/{purge_id}")
    def purge_detail(self, request: Request, session: Session, purge_id: str) -> dict[str, Any]:
        with self.lock:
            record = self.purges.get(purge_id)
            if record is None or record["owner"] != request.caller.user:
                raise HTTPError(404, "unknown_purge", f"no purge '{purge_id}'")
            return dict(record)

    @route("POST", "cancel/{sid}/{purge_id}")
    def cancel(self, request: Request, session: Session, purge_id: str) -> dict[str, Any]:
        with self.lock:
            record = self.purges.get(purge_id)
            if record is None or record["owner"] != request.caller.user:
                raise HTTPError(404, "unknown_purge", f"no purge '{purge_id}'")
            if record["state"] == "RUNNING":
                record["state"] = "CANCELED"
        self.emit("purge_status", {"id": purge_id, "state": record["state"], "message": "canceled"},
                  owner=request.caller)
        return dict(record)

    @route("GET", "config")
    async def config_view(self, request: Request) -> dict[str, Any]:
        return {"root": "/scratch", "purge_after_days": 30}


class HostilePlugin(Plugin):
    """Every string of a plugin's UI and answers, as markup."""

    name = "hostile"
    version = "6.6.6"
    description = f"described as {XSS_SCRIPT}"
    ui_schema = {
        "title": f"Hostile {XSS_IMG}",
        "description": f"{XSS_SCRIPT} and {XSS_IMG}",
        # The bridge refuses schemas naming URLs outside the plugin (bridge_app/agents/hello.py);
        # values filled in that spell ".." are the page's to refuse.
        "forms": [{"id": "f<b>1</b>", "title": XSS_SCRIPT,
                   "fields": [{"name": "x", "type": "select", "label": XSS_IMG,
                               "options": [XSS_SCRIPT, {"value": XSS_IMG, "label": XSS_IMG}]},
                              {"name": "up", "type": "hidden", "default": ".."}],
                   "submit": {"label": XSS_IMG, "endpoint": "steal/{up}/{up}/{x}", "method": "POST"}}],
        "monitors": [{"id": "m", "title": XSS_IMG, "type": "metrics", "endpoint": "show", "auto_load": True}],
        "notifications": [{"topic": XSS_SCRIPT}],
    }

    @route("GET", "show")
    async def show(self, request: Request) -> dict[str, Any]:
        return {XSS_IMG: XSS_SCRIPT, "nested": {"state": XSS_IMG, "list": [XSS_SCRIPT, {"k": XSS_IMG}]}}


class HostileNamePlugin(Plugin):
    """A plugin whose very name is markup (the bridge stores any name an agent announces)."""

    name = f"evil{XSS_IMG}"
    version = "0.0.1"
    description = XSS_SCRIPT
