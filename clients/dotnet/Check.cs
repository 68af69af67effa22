// Check.cs: exercises the C# binding against a running broker (socket in
// $TURNSTILE_SOCKET): exceptions named after the codes, queue events,
// cancelling from an event, lease loss, watches, queues, the wave-2
// features (permits, detach and re-attach, yield with decline and revoke,
// stalled), and the handles' lifetime (Dispose twice is harmless; everything disposed = no native
// handle left). Run by clients/ffi/tests/dotnet.rs; prints one line per
// check and exits 0 only if all passed.

using System;
using System.Collections.Generic;
using System.Text;
using System.Threading;
using Turnstile;

static class CheckProgram
{
    static int failed, passed;

    static void Check(string what, Action body)
    {
        try { body(); passed++; Console.WriteLine("ok: " + what); }
        catch (Exception e) { failed++; Console.WriteLine("FAILED: " + what + ": " + e); }
    }

    static void Expect<T>(Action body) where T : Exception
    {
        try { body(); }
        catch (T) { return; }
        throw new Exception("expected " + typeof(T).Name);
    }

    static void Assert(bool cond, string what) { if (!cond) throw new Exception(what); }

    /// <summary>Takes watch events until a change of kind on resource.</summary>
    static WatchEvent NextOf(Watch w, EventKind kind, string resource)
    {
        for (;;)
        {
            var e = w.Next(30000);
            if (e == null) throw new Exception("no " + kind + " event on " + resource);
            if (e.Item == WatchItem.Change && e.Kind == kind && e.Resource == resource) return e;
        }
    }

    static int Main()
    {
        Check("unreachable socket is UnavailableException", () =>
            Expect<UnavailableException>(() => Client.Connect(socket: "/nonexistent/turnstile.sock")));

        using (var holder = Client.Connect(name: "check-holder"))
        using (var agent = Client.Connect(name: "check-agent"))
        {
            Check("ping and info", () =>
            {
                agent.Ping(Encoding.UTF8.GetBytes("hé"));
                Assert(agent.Info.ProtocolVersion == 1, "protocol version");
                Assert(!string.IsNullOrEmpty(agent.Info.BrokerVersion), "broker version");
            });

            var job = holder.Acquire("job", new AcquireOptions { Purpose = "job" });
            job.ReportProgress(1, 3, "copying");
            Check("status names the holder", () => Assert(agent.StatusJson("job").Contains("check-holder"), agent.StatusJson("job")));
            Check("NoWait on a held resource is BusyException", () =>
                Expect<BusyException>(() => agent.Acquire("job", new AcquireOptions { NoWait = true })));
            Check("a timeout is TimedOutException", () =>
                Expect<TimedOutException>(() => agent.Acquire("job", null, 200)));
            Check("a queue event can cancel, with the job's progress in it", () =>
            {
                var seen = new List<QueueUpdateEventArgs>();
                var o = new AcquireOptions { Shared = true };
                o.QueueUpdated += (s, e) => { seen.Add(e); e.Cancel = true; };
                Expect<CancelledException>(() => agent.Acquire("job", o));
                Assert(seen.Count == 1 && seen[0].Position == 1, "one update at position 1");
                var a = seen[0].Ahead[0];
                Assert(a.HolderName == "check-holder" && a.Purpose == "job", "the holder ahead");
                Assert(a.HasProgress && a.ProgressDone == 1 && a.ProgressTotal == 3 && a.ProgressMessage == "copying", "its progress");
            });
            Check("a throwing handler's exception comes out of Acquire", () =>
            {
                var o = new AcquireOptions();
                o.QueueUpdated += (s, e) => { throw new InvalidOperationException("from the handler"); };
                Expect<InvalidOperationException>(() => agent.Acquire("job", o));
            });
            Check("queued, then granted when the job ends", () =>
            {
                var o = new AcquireOptions();
                var positions = new List<uint>();
                o.QueueUpdated += (s, e) => { positions.Add(e.Position); if (positions.Count == 1) ThreadPool.QueueUserWorkItem(_ => job.Release()); };
                using (var lease = agent.Acquire("job", o))
                {
                    Assert(positions.Count >= 1 && positions[0] == 1, "queued first");
                    Assert(lease.Resource == "job" && lease.FencingToken > 1, "granted after the job");
                    lease.Check();
                    lease.Release();
                    lease.Release(); // a second time does nothing
                }
            });

            Check("publish, consume, ack, nack", () =>
            {
                var seq = holder.Publish("notices", Encoding.UTF8.GetBytes("hello"), new Dictionary<string, string> { { "from", "svc" } });
                Assert(seq == 1, "seq 1");
                using (var c = agent.Consume("notices"))
                {
                    var d = c.Next(30000);
                    Assert(d != null && Encoding.UTF8.GetString(d.Payload) == "hello" && d.Headers["from"] == "svc" && d.Attempt == 1, "the message");
                    d.Nack(true);
                    d = c.Next(30000);
                    Assert(d.Attempt == 2, "redelivered");
                    d.Ack();
                    Expect<NotFoundException>(() => d.Ack());
                    Assert(c.Next(0) == null, "nothing more");
                }
            });

            Check("watch: snapshot, Available event, change", () =>
            {
                using (var w = agent.Watch("watched"))
                using (var available = new ManualResetEvent(false))
                {
                    w.Available += (s, e) => available.Set();
                    var snap = w.Next(30000);
                    Assert(snap.Item == WatchItem.Snapshot && snap.StateJson.Contains("watched"), "snapshot");
                    available.Reset();
                    using (var l = holder.Acquire("watched"))
                    {
                        Assert(available.WaitOne(30000), "Available raised");
                        var e = w.Next(0);
                        Assert(e.Item == WatchItem.Change && e.Kind == EventKind.Granted && e.Holders == 1 && e.Resource == "watched", "granted event");
                    }
                    Assert(w.Next(30000).Kind == EventKind.Released, "released event");
                }
            });
        }

        using (var agent = Client.Connect(name: "check-agent"))
        using (var w = agent.Watch())
        {
            Check("permits: a semaphore of 2, full, shown in status", () =>
            {
                var o = new AcquireOptions { Shared = true, Capacity = 2, Permits = 1 };
                using (var a = agent.Acquire("slots", o))
                using (var b = agent.Acquire("slots", o))
                {
                    Expect<BusyException>(() => agent.Acquire("slots", new AcquireOptions { Shared = true, Capacity = 2, NoWait = true }));
                    Expect<InvalidArgumentException>(() => agent.Acquire("slots", new AcquireOptions { Shared = true, Capacity = 2, Permits = 3 }));
                    var json = agent.StatusJson("slots");
                    Assert(json.Contains("\"capacity\":2") && json.Contains("\"permits_held\":2"), json);
                }
            });

            Check("detach, then re-attach from another connection with the resume token", () =>
            {
                string token; ulong id;
                using (var first = Client.Connect(name: "check-first-life"))
                {
                    var l = first.Acquire("session", new AcquireOptions { DetachGrace = TimeSpan.FromSeconds(20) });
                    token = l.ResumeToken; id = l.Id;
                    Assert(token != null && token.StartsWith(id + ":"), "a token: " + token);
                    l.Detach();
                    l.Detach(); // a second time does nothing
                }
                NextOf(w, EventKind.Detached, "session");
                using (var second = Client.Connect(name: "check-second-life"))
                {
                    Expect<NotFoundException>(() => second.Reattach(id + ":00:session"));
                    using (var back = second.Reattach(token))
                    {
                        Assert(back.Id == id && back.ResumeToken == token, "the same lease");
                        NextOf(w, EventKind.Reattached, "session");
                        back.ReportProgress(1, 1, "resumed");
                    }
                }
                using (var plain = agent.Acquire("session"))
                    Assert(plain.ResumeToken == null, "no grace, no token");
            });

            Check("yield: the holder's event, a decline, a revoke", () =>
            {
                using (var holder = Client.Connect(name: "check-printer"))
                using (var asked = new AutoResetEvent(false))
                using (var lost = new ManualResetEvent(false))
                {
                    var l = holder.Acquire("printer", new AcquireOptions { Purpose = "long print" });
                    var requests = new List<YieldRequestedEventArgs>();
                    LeaseLostEventArgs why = null;
                    l.YieldRequested += (s, e) => { lock (requests) requests.Add(e); asked.Set(); };
                    l.Lost += (s, e) => { why = e; lost.Set(); };
                    Assert(agent.RequestYield("printer", TimeSpan.FromSeconds(5), "urgent page") == 1, "one holder asked");
                    Assert(asked.WaitOne(30000), "asked");
                    lock (requests)
                        Assert(requests[0].RequesterName == "check-agent" && requests[0].Reason == "urgent page" && !requests[0].Revoke
                            && requests[0].Within == TimeSpan.FromSeconds(5) && requests[0].LeaseId == l.Id, "who asks and why");
                    l.DeclineYield("almost done");
                    Assert(NextOf(w, EventKind.YieldDeclined, "printer").Detail.Contains("almost done"), "declined, with why");
                    agent.RequestYield("printer", TimeSpan.FromMilliseconds(200), "now", revoke: true);
                    Assert(asked.WaitOne(30000), "asked again");
                    lock (requests) Assert(requests[1].Revoke, "a revoke");
                    Assert(lost.WaitOne(30000) && why.Reason == LostReason.Revoked, "revoked");
                    Expect<LostException>(() => l.Release());
                }
            });

            Check("stalled: a holder without progress is marked, progress clears it", () =>
            {
                using (var l = agent.Acquire("stuck", new AcquireOptions { StallAfter = TimeSpan.FromMilliseconds(300) }))
                {
                    Assert(NextOf(w, EventKind.Stalled, "stuck").StateJson.Contains("\"stalled\":true"), "stalled");
                    l.ReportProgress(1, 2, "moving");
                    Assert(NextOf(w, EventKind.Progress, "stuck").StateJson.Contains("\"stalled\":false"), "cleared");
                }
            });

            Check("history: the released lease, newest last", () =>
            {
                ulong id;
                using (var l = agent.Acquire("ledger", new AcquireOptions { Purpose = "for the record" }))
                {
                    id = l.Id;
                    Expect<TimedOutException>(() => agent.Acquire("ledger",
                        new AcquireOptions { MaxWait = TimeSpan.FromMilliseconds(100) }));
                }
                var h = agent.History("ledger");
                var last = h.Entries[h.Entries.Count - 1];
                Assert(last.LeaseId == id && last.EndedBy == EventKind.Released && last.Purpose == "for the record"
                    && last.HolderName == "check-agent" && last.EndedAtMs >= last.GrantedAtMs && !last.TimedOut
                    && !h.Truncated, "the entry");
                var impatient = h.Entries[h.Entries.Count - 2];
                Assert(impatient.EndedBy == EventKind.Cancelled && impatient.TimedOut && impatient.GrantedAtMs == 0,
                    "the wait that ran out");
            });
        }

        Check("disposed objects: twice is harmless, use is ObjectDisposedException", () =>
        {
            var c = Client.Connect(name: "check-dispose");
            c.Dispose();
            c.Dispose();
            Expect<ObjectDisposedException>(() => c.Ping());
        });
        Check("no native handle left", () => Assert(Library.OpenHandles == 0, "open handles: " + Library.OpenHandles));
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }
}
