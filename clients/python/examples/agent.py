"""The seed's agent (PCMWIN-like): queues its initialisation behind the
service's job instead of timing out, follows the job's progress, and
initialises the moment the job ends.

Run a broker and a job (``cargo run --bin turnstiled`` and
``cargo run --example service``), then::

    python clients/python/examples/agent.py

The socket is ``TURNSTILE_SOCKET``, else the platform's default.
"""

from __future__ import annotations

import sys

import turnstile


def describe(queued: turnstile.Queued) -> str:
    """One line about where the agent waits and what it waits for."""
    parts = [f"queued at position {queued.position}"]
    for ahead in queued.ahead:
        who = f"{ahead.holder.client_name} (pid {ahead.holder.pid})"
        line = f"behind {who} doing {ahead.purpose!r}" if ahead.purpose else f"behind {who}"
        if ahead.progress is not None:
            p = ahead.progress
            line += f", {p.done}/{p.total} {p.message}".rstrip()
        parts.append(line)
    return "; ".join(parts)


def main() -> int:
    """Connects, queues for a SHARED lease on ``pcm``, initialises."""
    try:
        client = turnstile.connect(name="pcm-agent", retry_for=5.0)
    except turnstile.BrokerUnavailable as e:
        print(f"Package Command Manager ==> no broker: {e}", file=sys.stderr)
        return 69
    with client:
        with client.acquire(
            "pcm",
            shared=True,
            purpose="initialise",
            on_queued=lambda q: print(f"Package Command Manager ==> {describe(q)}", flush=True),
        ) as lease:
            print(
                f"Package Command Manager ==> initialised (fencing token {lease.fencing_token})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
