"""What loading edges into the bridge's cache costs (``directory._load_edges_sync``): every
process does it for each edge that registers (loaded ahead of its first call) and for all
of them when a bridge restarts and they reconnect together.

    python -m bench.edges_load                  # 1,000 edges, four plugins of 24 routes each
    python -m bench.edges_load --edges 10000

A SQLite database of its own in a temporary directory; CPU time of the best of 7 rounds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-edges-load-") as tmp:
        os.environ["SQLITE_PATH"] = os.path.join(tmp, "db.sqlite3")
        os.environ.pop("DATABASE_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radical_edge_site.settings")
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from bridge_app.core.directory import _load_edges_sync
        from bridge_app.models import Edge, EdgeGrant, PluginRegistration

        call_command("migrate", verbosity=0)
        owner = get_user_model().objects.create_user("owner")
        viewer = get_user_model().objects.create_user("viewer")
        edges = Edge.objects.bulk_create([Edge(name=f"e{i}", owner=owner, status="online", channel_name=f"c{i}")
                                          for i in range(args.edges)])
        routes = [{"method": m, "path": f"p{j}/{{id}}", "readonly": m == "GET"} for j in range(12)
                  for m in ("GET", "POST")]
        PluginRegistration.objects.bulk_create([PluginRegistration(edge=e, name=n, version="1", routes=routes)
                                                for e in edges for n in ("sysinfo", "psij", "queue_info", "files")])
        EdgeGrant.objects.bulk_create([EdgeGrant(edge=e, user=viewer, role="viewer") for e in edges])
        names = [e.name for e in edges]
        best = float("inf")
        for _ in range(args.rounds):
            started = time.process_time()
            loaded = _load_edges_sync(names)
            best = min(best, time.process_time() - started)
        assert all(entry is not None and len(entry.plugins) == 4 for entry in loaded.values())
    print(f"\nLoading {args.edges:,} edges (4 plugins of 24 routes, 1 grant each) into the cache: "
          f"{best * 1e6 / args.edges:.0f} µs of CPU per edge (best of {args.rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
