"""A PCMSVC-like service: runs jobs, each under an EXCLUSIVE lease on
``pcm`` kept alive in the background, reporting progress as it goes, and
posts a notice on the ``pcm.notices`` queue after each job.

Run a broker (``cargo run --bin turnstiled``), then::

    python clients/python/examples/service.py "Install Office 97" "Update antivirus"

and watch it with ``turnstile watch pcm``, or queue the agent behind it
(``python clients/python/examples/agent.py``). Asked to make way mid-job
(``turnstile yield pcm --reason "user logon"``), it declines and says why;
a step that takes over three times as long as planned marks it stalled.
"""

from __future__ import annotations

import argparse
import sys
import time

import turnstile


def main(argv: "list[str]") -> int:
    """Runs each job named on the command line under the lease."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("jobs", nargs="*", default=["Install Office 97"])
    parser.add_argument("--steps", type=int, default=5, help="steps per job (default 5)")
    parser.add_argument("--step", type=float, default=1.0, help="seconds per step (default 1)")
    args = parser.parse_args(argv)
    with turnstile.connect(name="pcmsvc", retry_for=5.0) as client:
        for job in args.jobs:
            stall_after = 3 * args.step + 1.0
            with client.acquire("pcm", ttl=10.0, stall_after=stall_after, purpose=job) as lease:
                print(f"job {job!r}: started (fencing token {lease.fencing_token})", flush=True)
                for step in range(1, args.steps + 1):
                    if lease.lost.wait(args.step):
                        print(f"job {job!r}: lease lost ({lease.lost_detail}), abandoning", flush=True)
                        return 1
                    lease.report_progress(step, args.steps, f"step {step} of {args.steps}")
                    ask = lease.yield_request
                    if lease.yield_requested.is_set() and ask is not None:
                        lease.yield_requested.clear()
                        who = ask.requester.user or ask.requester.client_name
                        print(f"job {job!r}: {who} asks to make way ({ask.reason or 'no reason'}); declining", flush=True)
                        lease.decline_yield(f"mid-job, step {step} of {args.steps}")
            seq = client.publish("pcm.notices", f"{job} done".encode(), headers={"job": job})
            print(f"job {job!r}: done, notice {seq}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
