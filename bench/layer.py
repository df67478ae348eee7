"""The Redis pub/sub channel layer alone: CPU per message and messages per second, the
stock layer of channels-redis against the bridge's (publishes batched,
bridge_app/core/layers_redis.py), with 1, 8 and 32 concurrent senders in one process and one
receiver, as proxied calls crossing processes send them.

    python -m bench.layer [--messages 3000] [--redis redis://127.0.0.1:6379/5]

Each configuration runs twice, alternating with the other; a row is the mean of its two runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radical_edge_site.settings")


async def one(cls, url: str, senders: int, per: int) -> tuple[float, float]:
    layer = cls(hosts=[url], prefix=f"bench-layer.{cls.__module__}.")
    channel = await layer.new_channel("x.")
    await layer.send(channel, {"type": "warm"})
    await layer.receive(channel)
    total = senders * per

    async def receive() -> None:
        for _ in range(total):
            await layer.receive(channel)

    async def send() -> None:
        for n in range(per):
            await layer.send(channel, {"type": "t", "n": n, "body": "x" * 200})

    cpu, wall = time.process_time(), time.perf_counter()
    receiving = asyncio.ensure_future(receive())
    await asyncio.gather(*(send() for _ in range(senders)))
    await receiving
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await layer.flush()
    return cpu * 1e6 / total, total / wall


async def run(args: argparse.Namespace) -> None:
    from channels_redis.pubsub import RedisPubSubChannelLayer as Stock

    from bridge_app.core.layers_redis import RedisPubSubChannelLayer as Batching

    print(f"\nRedis pub/sub layer, {args.messages} messages per row, one process (sender and receiver)\n")
    print("| layer | senders | CPU µs/message | messages/s |")
    print("|---|---:|---:|---:|")
    for senders in (1, 8, 32):
        results: dict[str, list[tuple[float, float]]] = {"channels-redis (stock)": [], "bridge (batched)": []}
        for _ in range(2):
            results["channels-redis (stock)"].append(await one(Stock, args.redis, senders, args.messages // senders))
            results["bridge (batched)"].append(await one(Batching, args.redis, senders, args.messages // senders))
        for name, runs in results.items():
            print(f"| {name} | {senders} | {statistics.median(r[0] for r in runs):.0f} | "
                  f"{statistics.median(r[1] for r in runs):,.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--redis", default=os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/5"))
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
