"""The bridge's structure rules, checked on its source (docs/ARCHITECTURE.md, "Module map").

* Channel-layer message types and channel names are written only in
  ``bridge_app/messages.py``: everyone else uses its names and constructors.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bridge_app import messages

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "bridge_app"


def _sources(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py") if "migrations" not in p.parts)


def test_channel_layer_messages_are_spelled_only_in_messages_py():
    spelled = {value for name, value in vars(messages).items()
               if name.isupper() and isinstance(value, str) and "." in value}
    assert {"edge.request", "rpc.response", "bridge.invalidate", "portal.events", "bridge.inbox."} <= spelled
    found = []
    for path in _sources(BRIDGE, ROOT / "portal_app", ROOT / "radical_edge_site"):
        if path == BRIDGE / "messages.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in spelled:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use bridge_app.messages instead of:\n" + "\n".join(found)
