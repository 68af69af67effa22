// Agent.cs: the PCMWIN-like agent in C#, on Turnstile.cs (P/Invoke).
//
// It initialises under a SHARED lease on "pcm". Started while the service
// runs a job, it queues instead of timing out, prints its position, who is
// ahead and how far the job has got each time that changes, and
// initialises the moment the job ends.
//
// Build and run with Mono (Linux), from the repository root:
//
//   cargo build -p turnstile-ffi
//   mcs -out:Agent.exe clients/dotnet/Turnstile.cs clients/dotnet/Agent.cs
//   LD_LIBRARY_PATH=target/debug TURNSTILE_SOCKET=/path/to/turnstile.sock mono Agent.exe alice
//
// With .NET on Windows: put both files in a console project (any target
// from netstandard2.0-compatible frameworks) and turnstile.dll beside the exe.
//
// Exit status: 0 initialised, 1 failed (the reason is printed), 64 usage.

using System;
using Turnstile;

static class AgentProgram
{
    static int Main(string[] args)
    {
        if (args.Length > 1)
        {
            Console.Error.WriteLine("usage: Agent.exe [USER]   (socket: $TURNSTILE_SOCKET)");
            return 64;
        }
        var user = args.Length > 0 ? args[0] : "user";
        try
        {
            using (var client = Client.Connect(name: "pcmwin[" + user + "]", retry: TimeSpan.FromSeconds(5)))
            {
                var options = new AcquireOptions { Shared = true, Purpose = "initialise" };
                options.QueueUpdated += (sender, q) =>
                {
                    var line = "agent[" + user + "]: queued: position " + q.Position;
                    if (q.EstimatedWait > TimeSpan.Zero)
                        line += ", about " + (long)q.EstimatedWait.TotalMilliseconds + " ms to wait";
                    Console.WriteLine(line);
                    foreach (var l in q.Ahead)
                    {
                        line = "agent[" + user + "]:   ahead: " + (l.Position == 0 ? "holder" : "waiter")
                            + " \"" + l.Purpose + "\" by " + l.HolderName + " (pid " + l.HolderPid + ")";
                        if (l.HasProgress)
                            line += ", progress " + l.ProgressDone + "/" + l.ProgressTotal + " " + l.ProgressMessage;
                        Console.WriteLine(line);
                    }
                };
                Console.WriteLine("agent[" + user + "]: waiting for pcm");
                using (var lease = client.Acquire("pcm", options))
                {
                    lease.Lost += (sender, e) =>
                        Console.WriteLine("agent[" + user + "]: lease " + e.LeaseId + " lost (" + e.Reason + "): " + e.Detail);
                    Console.WriteLine("agent[" + user + "]: granted: lease " + lease.Id + ", fencing token " + lease.FencingToken);
                    lease.ReportProgress(1, 1, "initialising", 5000);
                    Console.WriteLine("agent[" + user + "]: initialised");
                    lease.Release(5000);
                }
            }
            return 0;
        }
        catch (TurnstileException e)
        {
            Console.Error.WriteLine("agent: " + e.GetType().Name + " (" + Library.ErrorName(e.Code) + "): " + e.Message);
            return 1;
        }
    }
}
