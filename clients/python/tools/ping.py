"""Ping round trips from Python, printed like ``turnstile ping --count N``.

    python clients/python/tools/ping.py --count 10000 [--socket PATH] [--flavour sync|aio|both]

Compare with the Rust client against the same broker in the same sitting:
``target/release/turnstile ping --count 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import List, Optional

import turnstile
import turnstile.aio


def report(flavour: str, version: str, samples: List[float], total: float, size: int) -> None:
    """One line: min, p50, p99, max in µs and the rate."""
    samples.sort()

    def pick(q: float) -> float:
        return samples[round((len(samples) - 1) * q)] * 1e6

    print(
        f"python {flavour}: {len(samples)} pings of {size} bytes to turnstiled {version}: "
        f"min {pick(0):.1f}µs  p50 {pick(0.5):.1f}µs  p99 {pick(0.99):.1f}µs  max {pick(1):.1f}µs  "
        f"({len(samples) / total:.0f}/s)"
    )


def run_sync(socket: Optional[str], count: int, payload: bytes) -> None:
    """The blocking client."""
    with turnstile.connect(socket, name="ping.py") as c:
        c.ping(payload)  # warm-up
        samples = []
        started = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            c.ping(payload)
            samples.append(time.perf_counter() - t)
        report("sync", c.hello.broker_version, samples, time.perf_counter() - started, len(payload))


async def run_aio(socket: Optional[str], count: int, payload: bytes) -> None:
    """The asyncio client."""
    async with turnstile.aio.connect(socket, name="ping.py") as c:
        await c.ping(payload)
        samples = []
        started = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            await c.ping(payload)
            samples.append(time.perf_counter() - t)
        report("aio", c.hello.broker_version, samples, time.perf_counter() - started, len(payload))


def main() -> None:
    """Parses the flags and runs the chosen flavours."""
    p = argparse.ArgumentParser(description="Ping round trips from the Python client")
    p.add_argument("--socket", default=None)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--size", type=int, default=64, help="payload bytes (default 64, as turnstile ping)")
    p.add_argument("--flavour", choices=["sync", "aio", "both"], default="both")
    args = p.parse_args()
    payload = bytes(args.size)
    if args.flavour in ("aio", "both"):
        asyncio.run(run_aio(args.socket, args.count, payload))
    if args.flavour in ("sync", "both"):
        run_sync(args.socket, args.count, payload)


if __name__ == "__main__":
    main()
