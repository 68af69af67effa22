// Turnstile.cs: the C# binding of libturnstile (P/Invoke over turnstile.h).
//
// One file, no dependencies, written against .NET Standard 2.0 APIs only,
// so it builds unchanged with .NET Framework 4.6.1+, .NET (Core) on Windows,
// Linux and macOS, and Mono (`mcs Turnstile.cs YourProgram.cs`). It needs
// the native library beside the program or on the library path:
// turnstile.dll on Windows, libturnstile.so on Linux, libturnstile.dylib on
// macOS (build it with `cargo build --release -p turnstile-ffi`).
//
//   using (var client = Turnstile.Client.Connect(name: "agent"))
//   {
//       var options = new Turnstile.AcquireOptions { Shared = true, Purpose = "initialise" };
//       options.QueueUpdated += (s, e) => Console.WriteLine("position " + e.Position);
//       using (var lease = client.Acquire("pcm", options))
//       {
//           lease.ReportProgress(1, 2, "loading");
//       }   // released
//   }
//
// Errors are exceptions named after the codes (BusyException,
// PermissionDeniedException, TimedOutException, ...), all TurnstileException
// with the Code. Handles are SafeHandles: Dispose frees them once, a second
// Dispose does nothing, and the finalizer frees what was forgotten.
//
// Wave 2: AcquireOptions.Permits / Capacity (counting semaphores),
// DetachGrace with Lease.ResumeToken, Lease.Detach and Client.Reattach,
// Client.RequestYield with Lease.YieldRequested and Lease.DeclineYield,
// StallAfter (watchers see EventKind.Stalled), Client.History.
//
// Threads: as in turnstile.h, every object may be used from any thread.
// QueueUpdated runs on the thread inside Acquire; Lease.Lost,
// Lease.YieldRequested and the
// Available events of Watch and Consumer run on the library's callback
// thread (marshal to your UI thread yourself, e.g. Control.BeginInvoke).
// An exception thrown by a handler is caught there, never let through the
// native library.

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace Turnstile
{
    /// <summary>The library's codes (turnstile.h ts_error): 1..10 are the broker's wire codes.</summary>
    public enum ErrorCode
    {
        Ok = 0,
        InvalidArgument = 1,
        PermissionDenied = 2,
        Busy = 3,
        NotFound = 4,
        ResourceExhausted = 5,
        UnsupportedVersion = 6,
        FrameTooLarge = 7,
        TimedOut = 8,
        ProtocolViolation = 9,
        Internal = 10,
        Unavailable = 100,
        Disconnected = 101,
        Lost = 102,
        Protocol = 103,
        InvalidHandle = 104,
        Cancelled = 105,
        Closed = 106,
        Panic = 107,
    }

    /// <summary>Any failure of the library; the subclasses are named after the codes.</summary>
    public class TurnstileException : Exception
    {
        public ErrorCode Code { get; private set; }
        public TurnstileException(ErrorCode code, string message) : base(message) { Code = code; }

        internal static TurnstileException Of(ErrorCode code, string message)
        {
            switch (code)
            {
                case ErrorCode.InvalidArgument: return new InvalidArgumentException(message);
                case ErrorCode.PermissionDenied: return new PermissionDeniedException(message);
                case ErrorCode.Busy: return new BusyException(message);
                case ErrorCode.NotFound: return new NotFoundException(message);
                case ErrorCode.ResourceExhausted: return new ResourceExhaustedException(message);
                case ErrorCode.UnsupportedVersion: return new UnsupportedVersionException(message);
                case ErrorCode.FrameTooLarge: return new FrameTooLargeException(message);
                case ErrorCode.TimedOut: return new TimedOutException(message);
                case ErrorCode.ProtocolViolation: return new ProtocolViolationException(message);
                case ErrorCode.Internal: return new InternalException(message);
                case ErrorCode.Unavailable: return new UnavailableException(message);
                case ErrorCode.Disconnected: return new DisconnectedException(message);
                case ErrorCode.Lost: return new LostException(message);
                case ErrorCode.Protocol: return new ProtocolException(message);
                case ErrorCode.InvalidHandle: return new InvalidHandleException(message);
                case ErrorCode.Cancelled: return new CancelledException(message);
                case ErrorCode.Closed: return new ClosedException(message);
                default: return new TurnstileException(code, message);
            }
        }
    }

    public sealed class InvalidArgumentException : TurnstileException { public InvalidArgumentException(string m) : base(ErrorCode.InvalidArgument, m) { } }
    public sealed class PermissionDeniedException : TurnstileException { public PermissionDeniedException(string m) : base(ErrorCode.PermissionDenied, m) { } }
    public sealed class BusyException : TurnstileException { public BusyException(string m) : base(ErrorCode.Busy, m) { } }
    public sealed class NotFoundException : TurnstileException { public NotFoundException(string m) : base(ErrorCode.NotFound, m) { } }
    public sealed class ResourceExhaustedException : TurnstileException { public ResourceExhaustedException(string m) : base(ErrorCode.ResourceExhausted, m) { } }
    public sealed class UnsupportedVersionException : TurnstileException { public UnsupportedVersionException(string m) : base(ErrorCode.UnsupportedVersion, m) { } }
    public sealed class FrameTooLargeException : TurnstileException { public FrameTooLargeException(string m) : base(ErrorCode.FrameTooLarge, m) { } }
    public sealed class TimedOutException : TurnstileException { public TimedOutException(string m) : base(ErrorCode.TimedOut, m) { } }
    public sealed class ProtocolViolationException : TurnstileException { public ProtocolViolationException(string m) : base(ErrorCode.ProtocolViolation, m) { } }
    public sealed class InternalException : TurnstileException { public InternalException(string m) : base(ErrorCode.Internal, m) { } }
    public sealed class UnavailableException : TurnstileException { public UnavailableException(string m) : base(ErrorCode.Unavailable, m) { } }
    public sealed class DisconnectedException : TurnstileException { public DisconnectedException(string m) : base(ErrorCode.Disconnected, m) { } }
    public sealed class LostException : TurnstileException { public LostException(string m) : base(ErrorCode.Lost, m) { } }
    public sealed class ProtocolException : TurnstileException { public ProtocolException(string m) : base(ErrorCode.Protocol, m) { } }
    public sealed class InvalidHandleException : TurnstileException { public InvalidHandleException(string m) : base(ErrorCode.InvalidHandle, m) { } }
    public sealed class CancelledException : TurnstileException { public CancelledException(string m) : base(ErrorCode.Cancelled, m) { } }
    public sealed class ClosedException : TurnstileException { public ClosedException(string m) : base(ErrorCode.Closed, m) { } }

    public enum Mode { Unspecified = 0, Exclusive = 1, Shared = 2 }
    public enum LostReason { Connection = 0, Expired = 1, TimedOut = 2, Revoked = 3 }
    public enum WatchItem { Snapshot = 1, Change = 2, Disconnected = 3, Reconnected = 4 }
    public enum EventKind
    {
        None = 0, Granted = 1, Released = 2, Expired = 3, Disconnected = 4, Queued = 5, Cancelled = 6, Progress = 7, Resync = 8, Heartbeat = 9,
        YieldRequested = 10, YieldDeclined = 11, Revoked = 12, Detached = 13, Reattached = 14, Stalled = 15,
    }

    /// <summary>A lease as the broker shows it: a holder or a waiter ahead of you.</summary>
    public sealed class LeaseInfo
    {
        public ulong LeaseId; public string Resource; public Mode Mode; public string Purpose;
        public string HolderName; public uint HolderUid; public uint HolderPid; public ulong FencingToken;
        /// <summary>Whether the holder reported progress (ProgressDone, ProgressTotal, ProgressMessage).</summary>
        public bool HasProgress; public uint ProgressDone; public uint ProgressTotal; public string ProgressMessage;
        public ulong GrantedAtMs; public ulong QueuedAtMs; public uint ExpiresInMs;
        /// <summary>1 = next in line for a waiter; 0 for a holder.</summary>
        public uint Position;
        /// <summary>Permits of the resource's semaphore it holds or waits for; 0 when it has no capacity.</summary>
        public uint Permits;
        /// <summary>Its connection closed; it is kept for its owner to re-attach.</summary>
        public bool Detached;
        /// <summary>It keeps its lease alive but reported no progress for its StallAfter: stuck.</summary>
        public bool Stalled;
        public string HolderUser; public string HolderLoginSession;
    }

    /// <summary>Where a queued request stands. Set Cancel to leave the queue (Acquire then throws CancelledException).</summary>
    public sealed class QueueUpdateEventArgs : EventArgs
    {
        public ulong LeaseId { get; internal set; }
        public uint Position { get; internal set; }
        /// <summary>The broker's estimate of the wait; TimeSpan.Zero when it has none.</summary>
        public TimeSpan EstimatedWait { get; internal set; }
        public IList<LeaseInfo> Ahead { get; internal set; }
        /// <summary>With DetachGrace, the token of this place in the queue for Client.Reattach; else null.</summary>
        public string ResumeToken { get; internal set; }
        public bool Cancel { get; set; }
    }

    /// <summary>Someone asks this holder to make way (Client.RequestYield).</summary>
    public sealed class YieldRequestedEventArgs : EventArgs
    {
        public ulong LeaseId { get; internal set; }
        public string RequesterName { get; internal set; }
        public uint RequesterUid { get; internal set; }
        public uint RequesterPid { get; internal set; }
        public string RequesterUser { get; internal set; }
        public string Reason { get; internal set; }
        /// <summary>How long the holder has.</summary>
        public TimeSpan Within { get; internal set; }
        /// <summary>The lease is taken (Lost, Revoked) if still held after Within.</summary>
        public bool Revoke { get; internal set; }
    }

    public sealed class LeaseLostEventArgs : EventArgs
    {
        public ulong LeaseId { get; internal set; }
        public LostReason Reason { get; internal set; }
        public string Detail { get; internal set; }
    }

    /// <summary>How to acquire. Defaults: EXCLUSIVE, queued, the broker's TTL.</summary>
    public sealed class AcquireOptions
    {
        public bool Shared;
        /// <summary>Throw BusyException instead of queueing.</summary>
        public bool NoWait;
        /// <summary>Time to live (kept alive by the library); zero = the broker's default.</summary>
        public TimeSpan Ttl;
        /// <summary>Leave the queue after this long, at the broker; zero = no limit.</summary>
        public TimeSpan MaxWait;
        public string Purpose;
        /// <summary>With Capacity: permits this SHARED lease takes (0 = 1).</summary>
        public uint Permits;
        /// <summary>With Shared: the resource is a counting semaphore of this many permits; 0 = not one.</summary>
        public uint Capacity;
        /// <summary>Keep the lease (or queue place) this long after the connection closes, for Client.Reattach.</summary>
        public TimeSpan DetachGrace;
        /// <summary>Mark the holder stalled after this long without a progress report; zero = never.</summary>
        public TimeSpan StallAfter;
        /// <summary>Each change of the queue position; on the thread inside Acquire.</summary>
        public event EventHandler<QueueUpdateEventArgs> QueueUpdated;

        internal bool Raise(object sender, QueueUpdateEventArgs e)
        {
            var h = QueueUpdated;
            if (h != null) h(sender, e);
            return e.Cancel;
        }
    }

    /// <summary>One lease (or waiting request) that ended, as the broker recorded it.
    /// Times are wall-clock ms since the Unix epoch; 0 where it does not apply.</summary>
    public sealed class HistoryEntry
    {
        public ulong LeaseId; public string Resource; public Mode Mode; public uint Permits; public string Purpose;
        public string HolderName; public uint HolderUid; public uint HolderPid; public string HolderUser;
        public ulong QueuedAtMs; public ulong GrantedAtMs; public ulong EndedAtMs;
        /// <summary>Released, Expired, Disconnected, Cancelled (left the queue) or Revoked.</summary>
        public EventKind EndedBy; public string Detail; public ulong FencingToken;
        /// <summary>Cancelled because its MaxWait ran out.</summary>
        public bool TimedOut;
    }

    /// <summary>What Client.History answers: entries oldest first.</summary>
    public sealed class History
    {
        public IList<HistoryEntry> Entries { get; internal set; }
        /// <summary>Older matching entries were left out (by the limit, or to fit one answer).</summary>
        public bool Truncated { get; internal set; }
    }

    public sealed class ClientInfo
    {
        public string BrokerVersion; public uint ProtocolVersion; public ulong SessionId;
        public uint MaxFrameBytes; public uint Uid; public uint Pid;
    }

    /// <summary>One connection to the broker.</summary>
    public sealed class Client : IDisposable
    {
        /// <summary>Timeout value: wait as long as it takes.</summary>
        public const int Forever = -1;
        internal readonly Native.ClientHandle Handle;
        public ClientInfo Info { get; private set; }

        Client(Native.ClientHandle h)
        {
            Handle = h;
            Native.ClientInfo i;
            Native.Check(Native.ts_client_get_info(h, out i));
            Info = new ClientInfo
            {
                BrokerVersion = Native.FromUtf8(i.broker_version), ProtocolVersion = i.protocol_version,
                SessionId = i.session_id, MaxFrameBytes = i.max_frame_bytes, Uid = i.uid, Pid = i.pid,
            };
        }

        /// <summary>Connects. socket null = TURNSTILE_SOCKET or the default; retry = how long to keep trying.</summary>
        public static Client Connect(string socket = null, string name = "dotnet", TimeSpan retry = default(TimeSpan))
        {
            Native.ClientHandle h;
            Native.Check(Native.ts_connect(Native.Utf8(socket), Native.Utf8(name), Native.Ms(retry), out h));
            return new Client(h);
        }

        /// <summary>One round trip to the broker.</summary>
        public void Ping(byte[] payload = null, int timeoutMs = Forever)
        {
            payload = payload ?? new byte[0];
            Native.Check(Native.ts_ping(Handle, payload, (UIntPtr)payload.Length, Native.Timeout(timeoutMs)));
        }

        /// <summary>The status as JSON (schema of `turnstile status --json`).</summary>
        public string StatusJson(params string[] resources)
        {
            using (var names = new Native.Utf8Array(resources))
            {
                IntPtr json;
                Native.Check(Native.ts_status(Handle, names.Pointer, (UIntPtr)names.Count, uint.MaxValue, out json));
                return Native.FromUtf8(json);
            }
        }

        /// <summary>Acquires a lease, queueing up to timeoutMs (Forever: until granted).</summary>
        public Lease Acquire(string resource, AcquireOptions options = null, int timeoutMs = Forever)
        {
            var name = Native.Utf8(resource);
            return Take(options, (ref Native.AcquireOptions o, out Native.LeaseHandle h) =>
                Native.ts_acquire(Handle, name, ref o, Native.Timeout(timeoutMs), out h));
        }

        /// <summary>Takes back a detached lease or queue place (acquired with DetachGrace, its
        /// connection gone) with its resume token; waits like Acquire if it is still queued.
        /// Of options only the QueueUpdated handlers are used. NotFoundException for a wrong
        /// token, another user, or a lease that ended.</summary>
        public Lease Reattach(string resumeToken, AcquireOptions options = null, int timeoutMs = Forever)
        {
            var token = Native.Utf8(resumeToken);
            return Take(options, (ref Native.AcquireOptions o, out Native.LeaseHandle h) =>
                Native.ts_reattach(Handle, token, ref o, Native.Timeout(timeoutMs), out h));
        }

        delegate int Taking(ref Native.AcquireOptions o, out Native.LeaseHandle h);

        Lease Take(AcquireOptions options, Taking take)
        {
            options = options ?? new AcquireOptions();
            var state = new Lease.State { Options = options, Sender = this };
            // Freed with the lease handle (after which no callback runs), or here on failure.
            var gc = GCHandle.Alloc(state);
            bool owned = false;
            var purpose = Native.Utf8Alloc(options.Purpose);
            try
            {
                Native.AcquireOptions o;
                Native.Check(Native.ts_acquire_options_init(out o, (UIntPtr)Marshal.SizeOf(typeof(Native.AcquireOptions))));
                o.flags = (options.Shared ? 1u : 0u) | (options.NoWait ? 2u : 0u);
                o.ttl_ms = Native.Ms(options.Ttl);
                o.max_wait_ms = Native.Ms(options.MaxWait);
                o.purpose = purpose;
                o.on_queue = Native.OnQueuePtr;
                o.on_queue_data = GCHandle.ToIntPtr(gc);
                o.on_lost = Native.OnLostPtr;
                o.on_lost_data = GCHandle.ToIntPtr(gc);
                o.permits = options.Permits;
                o.capacity = options.Capacity;
                o.detach_grace_ms = Native.Ms(options.DetachGrace);
                o.stall_after_ms = Native.Ms(options.StallAfter);
                o.on_yield = Native.OnYieldPtr;
                o.on_yield_data = GCHandle.ToIntPtr(gc);
                Native.LeaseHandle h;
                var e = take(ref o, out h);
                if (e == 0) { h.Gc = gc; owned = true; }
                if (state.Failure != null) throw state.Failure;
                Native.Check(e);
                return new Lease(h, state);
            }
            catch
            {
                if (!owned) gc.Free();
                throw;
            }
            finally
            {
                Marshal.FreeHGlobal(purpose);
            }
        }

        /// <summary>The recorded leases of resource that ended at or after sinceMs (Unix epoch
        /// ms; 0 = as far back as the broker keeps), at most the newest limit (0 = as many as fit).</summary>
        public History History(string resource, ulong sinceMs = 0, uint limit = 0, int timeoutMs = Forever)
        {
            IntPtr h; UIntPtr count; byte truncated;
            Native.Check(Native.ts_get_history(Handle, Native.Utf8(resource), sinceMs, limit, Native.Timeout(timeoutMs), out h, out count, out truncated));
            try
            {
                var entries = new List<HistoryEntry>();
                for (ulong i = 0; i < (ulong)count; i++)
                {
                    IntPtr p;
                    Native.Check(Native.ts_history_get_entry(h, (UIntPtr)i, out p));
                    var e = (Native.HistoryEntryNative)Marshal.PtrToStructure(p, typeof(Native.HistoryEntryNative));
                    entries.Add(new HistoryEntry
                    {
                        LeaseId = e.lease_id, Resource = Native.FromUtf8(e.resource), Mode = (Mode)e.mode, Permits = e.permits,
                        Purpose = Native.FromUtf8(e.purpose), HolderName = Native.FromUtf8(e.holder_name),
                        HolderUid = e.holder_uid, HolderPid = e.holder_pid, HolderUser = Native.FromUtf8(e.holder_user),
                        QueuedAtMs = e.queued_at_ms, GrantedAtMs = e.granted_at_ms, EndedAtMs = e.ended_at_ms,
                        EndedBy = (EventKind)e.ended_by, Detail = Native.FromUtf8(e.detail), FencingToken = e.fencing_token,
                        TimedOut = e.timed_out != 0,
                    });
                }
                return new History { Entries = entries, Truncated = truncated != 0 };
            }
            finally
            {
                Native.ts_history_free(h);
            }
        }

        /// <summary>Asks every holder of resource to make way within the given time (their
        /// Lease.YieldRequested); with revoke, a holder still holding then loses the lease.
        /// Returns how many holders were asked (0: nobody held it).</summary>
        public int RequestYield(string resource, TimeSpan within, string reason = null, bool revoke = false, int timeoutMs = Forever)
        {
            uint asked;
            Native.Check(Native.ts_request_yield_asked(Handle, Native.Utf8(resource), Native.Ms(within), Native.Utf8(reason),
                revoke ? 1u : 0u, Native.Timeout(timeoutMs), out asked));
            return (int)asked;
        }

        /// <summary>Appends a message to a queue; its sequence number once stored durably.</summary>
        public ulong Publish(string queue, byte[] payload, IDictionary<string, string> headers = null, int timeoutMs = Forever)
        {
            payload = payload ?? new byte[0];
            var keys = new List<string>(); var values = new List<string>();
            if (headers != null) foreach (var kv in headers) { keys.Add(kv.Key); values.Add(kv.Value); }
            using (var k = new Native.Utf8Array(keys.ToArray()))
            using (var v = new Native.Utf8Array(values.ToArray()))
            {
                ulong seq;
                Native.Check(Native.ts_publish(Handle, Native.Utf8(queue), payload, (UIntPtr)payload.Length,
                    k.Pointer, v.Pointer, (UIntPtr)k.Count, Native.Timeout(timeoutMs), out seq));
                return seq;
            }
        }

        /// <summary>Watches resources (all when none named), on a connection of its own.</summary>
        public Watch Watch(params string[] resources)
        {
            return new Watch(this, resources);
        }

        /// <summary>Consumes a queue (prefetch 0 = the broker's default).</summary>
        public Consumer Consume(string queue, uint prefetch = 0)
        {
            return new Consumer(this, queue, prefetch);
        }

        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>A granted lease, kept alive by the library until Release or Dispose
    /// (or, if forgotten, until the finalizer releases it).</summary>
    public sealed class Lease : IDisposable
    {
        /// <summary>What the native callbacks reach through their user data.</summary>
        internal sealed class State
        {
            public AcquireOptions Options;
            public object Sender;
            public WeakReference Lease = new WeakReference(null);
            public LeaseLostEventArgs LostArgs;
            public EventHandler<LeaseLostEventArgs> LostHandlers;
            public EventHandler<YieldRequestedEventArgs> YieldHandlers;
            public List<YieldRequestedEventArgs> YieldsUnheard = new List<YieldRequestedEventArgs>();
            public Exception Failure;
        }

        readonly Native.LeaseHandle handle;
        readonly State state;

        public ulong Id { get; private set; }
        public ulong FencingToken { get; private set; }
        public TimeSpan Ttl { get; private set; }
        public string Resource { get; private set; }
        /// <summary>With DetachGrace: the secret for Client.Reattach (keep it where only this
        /// user can read it); null without.</summary>
        public string ResumeToken { get; private set; }

        internal Lease(Native.LeaseHandle h, State state)
        {
            handle = h; this.state = state;
            Native.LeaseDetails d;
            Native.Check(Native.ts_lease_get_details(h, out d));
            Id = d.lease_id; FencingToken = d.fencing_token;
            Ttl = TimeSpan.FromMilliseconds(d.ttl_ms); Resource = Native.FromUtf8(d.resource);
            IntPtr token;
            Native.Check(Native.ts_lease_resume_token(h, out token));
            var t = Native.FromUtf8(token);
            ResumeToken = string.IsNullOrEmpty(t) ? null : t;
            lock (state) state.Lease.Target = this;
        }

        /// <summary>Raised once, on the library's callback thread, if the lease is lost
        /// (at once on subscription if it already was).</summary>
        public event EventHandler<LeaseLostEventArgs> Lost
        {
            add
            {
                LeaseLostEventArgs already;
                lock (state) { state.LostHandlers += value; already = state.LostArgs; }
                if (already != null) value(this, already);
            }
            remove { lock (state) state.LostHandlers -= value; }
        }

        internal static void RaiseLost(State state, LeaseLostEventArgs e)
        {
            EventHandler<LeaseLostEventArgs> h;
            object sender;
            lock (state) { state.LostArgs = e; h = state.LostHandlers; sender = state.Lease.Target; }
            if (h != null) h(sender, e);
        }

        /// <summary>Raised on the library's callback thread each time someone asks this holder
        /// to make way (requests that came before the first subscription are raised on it).
        /// Make way with Release, or answer DeclineYield.</summary>
        public event EventHandler<YieldRequestedEventArgs> YieldRequested
        {
            add
            {
                List<YieldRequestedEventArgs> unheard;
                lock (state)
                {
                    state.YieldHandlers += value;
                    unheard = state.YieldsUnheard;
                    state.YieldsUnheard = new List<YieldRequestedEventArgs>();
                }
                foreach (var e in unheard) value(this, e);
            }
            remove { lock (state) state.YieldHandlers -= value; }
        }

        internal static void RaiseYield(State state, YieldRequestedEventArgs e)
        {
            EventHandler<YieldRequestedEventArgs> h;
            object sender;
            lock (state)
            {
                h = state.YieldHandlers; sender = state.Lease.Target;
                if (h == null) { state.YieldsUnheard.Add(e); return; }
            }
            h(sender, e);
        }

        /// <summary>Answers a yield request: this holder will not make way now (a revoke still stands).</summary>
        public void DeclineYield(string reason = null, int timeoutMs = Client.Forever)
        {
            Native.Check(Native.ts_lease_decline_yield(handle, Native.Utf8(reason), Native.Timeout(timeoutMs)));
        }

        /// <summary>Lets go of the lease without releasing it: with DetachGrace the broker keeps
        /// it, once this connection closes (dispose the client and its other leases), for
        /// Client.Reattach with ResumeToken. Does nothing the second time.</summary>
        public void Detach()
        {
            Close(h => Native.ts_lease_detach(h));
        }

        /// <summary>Throws LostException if the lease was lost.</summary>
        public void Check()
        {
            int reason;
            Native.Check(Native.ts_lease_check(handle, out reason));
        }

        /// <summary>Reports how far the job under the lease has got.</summary>
        public void ReportProgress(uint done, uint total, string message = null, int timeoutMs = Client.Forever)
        {
            Native.Check(Native.ts_lease_report_progress(handle, done, total, Native.Utf8(message), Native.Timeout(timeoutMs)));
        }

        /// <summary>Releases and waits for the broker to confirm; throws LostException
        /// if it had been lost. Does nothing the second time.</summary>
        public void Release(int timeoutMs = Client.Forever)
        {
            Close(h => Native.ts_lease_release(h, Native.Timeout(timeoutMs)));
        }

        /// <summary>Frees the native handle with close (release or detach), once.</summary>
        void Close(Func<IntPtr, int> close)
        {
            if (handle.IsClosed || handle.IsInvalid) return;
            bool added = false;
            handle.DangerousAddRef(ref added);
            int e;
            try
            {
                if (handle.IsClosed || handle.IsInvalid) return;
                e = close(handle.DangerousGetHandle());
                handle.SetHandleAsInvalid();
                handle.FreeGc();
            }
            finally
            {
                if (added) handle.DangerousRelease();
            }
            Native.Check(e);
        }

        /// <summary>Releases (waiting up to 5 s) if not released yet.</summary>
        public void Dispose() { handle.Dispose(); }
    }

    /// <summary>One watch event. StateJson: a resource state (Change) or an array of them (Snapshot).</summary>
    public sealed class WatchEvent
    {
        public WatchItem Item; public EventKind Kind; public ulong Revision; public string Resource;
        public int Holders; public int Waiters; public bool Coalesced; public bool Resync;
        public string Detail; public string StateJson;
    }

    /// <summary>A live watch; events wait until taken with Next.</summary>
    public sealed class Watch : IDisposable
    {
        readonly Native.WatchHandle handle;
        readonly Native.Notifier notifier;

        /// <summary>Raised on the library's callback thread when events become available
        /// after none were: drain with Next(0) until it returns null.</summary>
        public event EventHandler Available { add { notifier.Available += value; } remove { notifier.Available -= value; } }

        internal Watch(Client client, string[] resources)
        {
            notifier = new Native.Notifier(this);
            using (var names = new Native.Utf8Array(resources))
            {
                handle = notifier.Open(data =>
                {
                    Native.WatchHandle h;
                    var e = Native.ts_watch_open(client.Handle, names.Pointer, (UIntPtr)names.Count, Native.NotifyPtr, data, out h);
                    return Tuple.Create(e, h);
                });
            }
        }

        /// <summary>The next event, or null when none came within timeoutMs.</summary>
        public WatchEvent Next(int timeoutMs = Client.Forever)
        {
            Native.WatchEventNative e;
            var code = Native.ts_watch_next(handle, Native.Timeout(timeoutMs), out e);
            if (code == (int)ErrorCode.TimedOut) return null;
            Native.Check(code);
            return new WatchEvent
            {
                Item = (WatchItem)e.item, Kind = (EventKind)e.kind, Revision = e.revision,
                Resource = Native.FromUtf8(e.resource), Holders = (int)e.holders, Waiters = (int)e.waiters,
                Coalesced = e.coalesced != 0, Resync = e.resync != 0,
                Detail = Native.FromUtf8(e.detail), StateJson = Native.FromUtf8(e.state_json),
            };
        }

        public void Dispose() { handle.Dispose(); }
    }

    /// <summary>One message; settle it with Ack or Nack.</summary>
    public sealed class Delivery
    {
        readonly Consumer consumer;
        public ulong DeliveryId { get; private set; }
        public ulong Seq { get; private set; }
        public uint Attempt { get; private set; }
        public string Queue { get; private set; }
        public byte[] Payload { get; private set; }
        public IDictionary<string, string> Headers { get; private set; }

        internal Delivery(Consumer c, ulong id, ulong seq, uint attempt, string queue, byte[] payload, IDictionary<string, string> headers)
        {
            consumer = c; DeliveryId = id; Seq = seq; Attempt = attempt; Queue = queue; Payload = payload; Headers = headers;
        }

        public void Ack(int timeoutMs = Client.Forever) { consumer.Ack(DeliveryId, timeoutMs); }
        public void Nack(bool requeue, int timeoutMs = Client.Forever) { consumer.Nack(DeliveryId, requeue, timeoutMs); }
    }

    /// <summary>A subscription to a queue.</summary>
    public sealed class Consumer : IDisposable
    {
        readonly Native.ConsumerHandle handle;
        readonly Native.Notifier notifier;

        /// <summary>As Watch.Available.</summary>
        public event EventHandler Available { add { notifier.Available += value; } remove { notifier.Available -= value; } }

        internal Consumer(Client client, string queue, uint prefetch)
        {
            notifier = new Native.Notifier(this);
            handle = notifier.Open(data =>
            {
                Native.ConsumerHandle h;
                var e = Native.ts_consume(client.Handle, Native.Utf8(queue), prefetch, Native.NotifyPtr, data, out h);
                return Tuple.Create(e, h);
            });
        }

        /// <summary>The next delivery, or null when none came within timeoutMs.</summary>
        public Delivery Next(int timeoutMs = Client.Forever)
        {
            Native.DeliveryNative d;
            var code = Native.ts_consumer_next(handle, Native.Timeout(timeoutMs), out d);
            if (code == (int)ErrorCode.TimedOut) return null;
            Native.Check(code);
            var payload = new byte[(int)d.payload_len];
            if (payload.Length > 0) Marshal.Copy(d.payload, payload, 0, payload.Length);
            var headers = new Dictionary<string, string>();
            for (int i = 0; i < (int)d.header_count; i++)
            {
                headers[Native.FromUtf8(Marshal.ReadIntPtr(d.header_names, i * IntPtr.Size))] =
                    Native.FromUtf8(Marshal.ReadIntPtr(d.header_values, i * IntPtr.Size));
            }
            return new Delivery(this, d.delivery_id, d.seq, d.attempt, Native.FromUtf8(d.queue), payload, headers);
        }

        public void Ack(ulong deliveryId, int timeoutMs = Client.Forever)
        {
            Native.Check(Native.ts_consumer_ack(handle, deliveryId, Native.Timeout(timeoutMs)));
        }

        public void Nack(ulong deliveryId, bool requeue, int timeoutMs = Client.Forever)
        {
            Native.Check(Native.ts_consumer_nack(handle, deliveryId, requeue ? 1 : 0, Native.Timeout(timeoutMs)));
        }

        public void Dispose() { handle.Dispose(); }
    }

    /// <summary>The P/Invoke declarations, mirroring turnstile.h.</summary>
    internal static class Native
    {
        const string Lib = "turnstile";
        const CallingConvention CC = CallingConvention.Cdecl;

        /// <summary>A native handle; Gc is the user data the native side holds for it,
        /// freed only after the handle is closed (no callback runs after that).</summary>
        internal abstract class Handle : SafeHandle
        {
            internal GCHandle Gc;
            protected Handle() : base(IntPtr.Zero, true) { }
            public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
            protected abstract int Close(IntPtr h);
            protected override bool ReleaseHandle()
            {
                var r = Close(handle);
                FreeGc();
                return r == 0;
            }
            internal void FreeGc() { if (Gc.IsAllocated) Gc.Free(); }
        }

        internal sealed class ClientHandle : Handle { protected override int Close(IntPtr h) { return ts_client_close(h); } }
        internal sealed class LeaseHandle : Handle { protected override int Close(IntPtr h) { return ts_lease_release(h, 5000); } }
        internal sealed class WatchHandle : Handle { protected override int Close(IntPtr h) { return ts_watch_close(h); } }
        internal sealed class ConsumerHandle : Handle { protected override int Close(IntPtr h) { return ts_consumer_close(h); } }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ClientInfo
        {
            public IntPtr broker_version; public uint protocol_version; public ulong session_id;
            public uint max_frame_bytes; public uint uid; public uint pid;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct AcquireOptions
        {
            public uint struct_size; public uint flags; public uint ttl_ms; public uint max_wait_ms;
            public IntPtr purpose; public IntPtr on_queue; public IntPtr on_queue_data;
            public IntPtr on_lost; public IntPtr on_lost_data;
            // Version 2.
            public uint permits; public uint capacity; public uint detach_grace_ms; public uint stall_after_ms;
            public IntPtr on_yield; public IntPtr on_yield_data;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct LeaseInfoNative
        {
            public ulong lease_id; public IntPtr resource; public int mode; public IntPtr purpose;
            public IntPtr holder_name; public uint holder_uid; public uint holder_pid; public ulong fencing_token;
            public byte has_progress; public uint progress_done; public uint progress_total; public IntPtr progress_message;
            public ulong granted_at_ms; public ulong queued_at_ms; public uint expires_in_ms; public uint position;
            public uint permits; public byte detached; public byte stalled;
            public IntPtr holder_user; public IntPtr holder_login_session;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct QueueUpdateNative
        {
            public ulong lease_id; public uint position; public uint estimated_wait_ms;
            public UIntPtr ahead_count; public IntPtr ahead; public IntPtr resume_token;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct HistoryEntryNative
        {
            public ulong lease_id; public IntPtr resource; public int mode; public uint permits; public IntPtr purpose;
            public IntPtr holder_name; public uint holder_uid; public uint holder_pid; public IntPtr holder_user;
            public ulong queued_at_ms; public ulong granted_at_ms; public ulong ended_at_ms;
            public int ended_by; public IntPtr detail; public ulong fencing_token; public byte timed_out;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct YieldRequestNative
        {
            public IntPtr requester_name; public uint requester_uid; public uint requester_pid;
            public IntPtr requester_user; public IntPtr reason; public uint within_ms; public byte revoke;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct LeaseDetails
        {
            public ulong lease_id; public ulong fencing_token; public uint ttl_ms; public IntPtr resource;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct WatchEventNative
        {
            public int item; public int kind; public ulong revision; public IntPtr resource;
            public UIntPtr holders; public UIntPtr waiters; public byte coalesced; public byte resync;
            public IntPtr detail; public IntPtr state_json;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct DeliveryNative
        {
            public ulong delivery_id; public ulong seq; public uint attempt; public IntPtr queue;
            public IntPtr payload; public UIntPtr payload_len; public UIntPtr header_count;
            public IntPtr header_names; public IntPtr header_values;
        }

        [UnmanagedFunctionPointer(CC)] internal delegate int QueueFn(IntPtr userData, IntPtr update);
        [UnmanagedFunctionPointer(CC)] internal delegate void LostFn(IntPtr userData, ulong leaseId, int reason, IntPtr detail);
        [UnmanagedFunctionPointer(CC)] internal delegate void NotifyFn(IntPtr userData);
        [UnmanagedFunctionPointer(CC)] internal delegate void YieldFn(IntPtr userData, ulong leaseId, IntPtr request);

        // Kept in static fields: the native library holds their pointers for the process's life.
        static readonly QueueFn onQueue = OnQueue;
        static readonly LostFn onLost = OnLost;
        static readonly NotifyFn onNotify = OnNotify;
        static readonly YieldFn onYield = OnYield;
        internal static readonly IntPtr OnQueuePtr = Marshal.GetFunctionPointerForDelegate(onQueue);
        internal static readonly IntPtr OnLostPtr = Marshal.GetFunctionPointerForDelegate(onLost);
        internal static readonly IntPtr NotifyPtr = Marshal.GetFunctionPointerForDelegate(onNotify);
        internal static readonly IntPtr OnYieldPtr = Marshal.GetFunctionPointerForDelegate(onYield);

        static int OnQueue(IntPtr data, IntPtr updatePtr)
        {
            var state = (Lease.State)GCHandle.FromIntPtr(data).Target;
            try
            {
                var u = (QueueUpdateNative)Marshal.PtrToStructure(updatePtr, typeof(QueueUpdateNative));
                var ahead = new List<LeaseInfo>();
                int size = Marshal.SizeOf(typeof(LeaseInfoNative));
                for (int i = 0; i < (int)u.ahead_count; i++)
                {
                    var l = (LeaseInfoNative)Marshal.PtrToStructure(new IntPtr(u.ahead.ToInt64() + (long)i * size), typeof(LeaseInfoNative));
                    ahead.Add(new LeaseInfo
                    {
                        LeaseId = l.lease_id, Resource = FromUtf8(l.resource), Mode = (Mode)l.mode,
                        Purpose = FromUtf8(l.purpose), HolderName = FromUtf8(l.holder_name),
                        HolderUid = l.holder_uid, HolderPid = l.holder_pid, FencingToken = l.fencing_token,
                        HasProgress = l.has_progress != 0, ProgressDone = l.progress_done,
                        ProgressTotal = l.progress_total, ProgressMessage = FromUtf8(l.progress_message),
                        GrantedAtMs = l.granted_at_ms, QueuedAtMs = l.queued_at_ms,
                        ExpiresInMs = l.expires_in_ms, Position = l.position,
                        Permits = l.permits, Detached = l.detached != 0, Stalled = l.stalled != 0,
                        HolderUser = FromUtf8(l.holder_user), HolderLoginSession = FromUtf8(l.holder_login_session),
                    });
                }
                var e = new QueueUpdateEventArgs
                {
                    LeaseId = u.lease_id, Position = u.position,
                    EstimatedWait = TimeSpan.FromMilliseconds(u.estimated_wait_ms), Ahead = ahead,
                    ResumeToken = string.IsNullOrEmpty(FromUtf8(u.resume_token)) ? null : FromUtf8(u.resume_token),
                };
                return state.Options.Raise(state.Sender, e) ? 1 : 0;
            }
            catch (Exception ex)
            {
                // Never through the native library: give up, and rethrow from Acquire.
                state.Failure = ex;
                return 1;
            }
        }

        static void OnLost(IntPtr data, ulong leaseId, int reason, IntPtr detail)
        {
            try
            {
                var state = (Lease.State)GCHandle.FromIntPtr(data).Target;
                var e = new LeaseLostEventArgs { LeaseId = leaseId, Reason = (LostReason)reason, Detail = FromUtf8(detail) };
                Lease.RaiseLost(state, e);
            }
            catch (Exception)
            {
                // A handler's exception must not unwind into native code.
            }
        }

        static void OnYield(IntPtr data, ulong leaseId, IntPtr requestPtr)
        {
            try
            {
                var state = (Lease.State)GCHandle.FromIntPtr(data).Target;
                var r = (YieldRequestNative)Marshal.PtrToStructure(requestPtr, typeof(YieldRequestNative));
                var e = new YieldRequestedEventArgs
                {
                    LeaseId = leaseId, RequesterName = FromUtf8(r.requester_name), RequesterUid = r.requester_uid,
                    RequesterPid = r.requester_pid, RequesterUser = FromUtf8(r.requester_user), Reason = FromUtf8(r.reason),
                    Within = TimeSpan.FromMilliseconds(r.within_ms), Revoke = r.revoke != 0,
                };
                Lease.RaiseYield(state, e);
            }
            catch (Exception)
            {
                // A handler's exception must not unwind into native code.
            }
        }

        /// <summary>The managed end of a notify callback.</summary>
        internal sealed class Notifier
        {
            readonly WeakReference sender;
            public event EventHandler Available;
            public Notifier(object sender) { this.sender = new WeakReference(sender); }
            internal void Raise()
            {
                var h = Available;
                var s = sender.Target;
                if (h != null && s != null) h(s, EventArgs.Empty);
            }

            /// <summary>Runs open(userData) and gives the handle it opened the GCHandle
            /// of this notifier (freed with it), or frees it on failure.</summary>
            internal T Open<T>(Func<IntPtr, Tuple<int, T>> open) where T : Handle
            {
                var gc = GCHandle.Alloc(this);
                var r = open(GCHandle.ToIntPtr(gc));
                if (r.Item1 != 0) { gc.Free(); Check(r.Item1); }
                r.Item2.Gc = gc;
                return r.Item2;
            }
        }

        static void OnNotify(IntPtr data)
        {
            try
            {
                ((Notifier)GCHandle.FromIntPtr(data).Target).Raise();
            }
            catch (Exception) { }
        }

        internal static void Check(int code)
        {
            if (code == 0) return;
            throw TurnstileException.Of((ErrorCode)code, FromUtf8(ts_last_error_message()));
        }

        internal static uint Timeout(int ms) { return ms < 0 ? uint.MaxValue : (uint)ms; }

        internal static uint Ms(TimeSpan t)
        {
            var ms = t.TotalMilliseconds;
            return ms <= 0 ? 0u : ms >= uint.MaxValue ? uint.MaxValue : (uint)ms;
        }

        /// <summary>NUL-terminated UTF-8 (null for null), for a byte[] parameter.</summary>
        internal static byte[] Utf8(string s)
        {
            if (s == null) return null;
            var n = Encoding.UTF8.GetByteCount(s);
            var b = new byte[n + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, b, 0);
            return b;
        }

        /// <summary>NUL-terminated UTF-8 in unmanaged memory (IntPtr.Zero for null); free with FreeHGlobal.</summary>
        internal static IntPtr Utf8Alloc(string s)
        {
            var b = Utf8(s);
            if (b == null) return IntPtr.Zero;
            var p = Marshal.AllocHGlobal(b.Length);
            Marshal.Copy(b, 0, p, b.Length);
            return p;
        }

        /// <summary>A string from NUL-terminated UTF-8 (Marshal.PtrToStringUTF8 is not in .NET Standard 2.0).</summary>
        internal static string FromUtf8(IntPtr p)
        {
            if (p == IntPtr.Zero) return null;
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var b = new byte[n];
            Marshal.Copy(p, b, 0, n);
            return Encoding.UTF8.GetString(b);
        }

        /// <summary>An array of UTF-8 strings in unmanaged memory, for `const char *const *`.</summary>
        internal sealed class Utf8Array : IDisposable
        {
            readonly IntPtr[] strings;
            public IntPtr Pointer { get; private set; }
            public int Count { get { return strings.Length; } }
            public Utf8Array(string[] items)
            {
                items = items ?? new string[0];
                strings = new IntPtr[items.Length];
                for (int i = 0; i < items.Length; i++) strings[i] = Utf8Alloc(items[i] ?? "");
                if (items.Length > 0)
                {
                    Pointer = Marshal.AllocHGlobal(IntPtr.Size * items.Length);
                    Marshal.Copy(strings, 0, Pointer, items.Length);
                }
            }
            public void Dispose()
            {
                foreach (var s in strings) Marshal.FreeHGlobal(s);
                if (Pointer != IntPtr.Zero) Marshal.FreeHGlobal(Pointer);
                Pointer = IntPtr.Zero;
            }
        }

        [DllImport(Lib, CallingConvention = CC)] internal static extern IntPtr ts_version();
        [DllImport(Lib, CallingConvention = CC)] internal static extern IntPtr ts_last_error_message();
        [DllImport(Lib, CallingConvention = CC)] internal static extern IntPtr ts_error_name(int code);
        [DllImport(Lib, CallingConvention = CC)] internal static extern UIntPtr ts_open_handles();
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_connect(byte[] socket, byte[] name, uint retryMs, out ClientHandle client);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_client_close(IntPtr client);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_client_get_info(ClientHandle client, out ClientInfo info);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_ping(ClientHandle client, byte[] payload, UIntPtr len, uint timeoutMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_status(ClientHandle client, IntPtr resources, UIntPtr count, uint timeoutMs, out IntPtr json);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_publish(ClientHandle client, byte[] queue, byte[] payload, UIntPtr len, IntPtr names, IntPtr values, UIntPtr count, uint timeoutMs, out ulong seq);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_acquire_options_init(out AcquireOptions options, UIntPtr structSize);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_acquire(ClientHandle client, byte[] resource, ref AcquireOptions options, uint timeoutMs, out LeaseHandle lease);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_get_details(LeaseHandle lease, out LeaseDetails details);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_report_progress(LeaseHandle lease, uint done, uint total, byte[] message, uint timeoutMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_check(LeaseHandle lease, out int reason);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_release(IntPtr lease, uint timeoutMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_reattach(ClientHandle client, byte[] token, ref AcquireOptions options, uint timeoutMs, out LeaseHandle lease);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_resume_token(LeaseHandle lease, out IntPtr token);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_detach(IntPtr lease);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_lease_decline_yield(LeaseHandle lease, byte[] reason, uint timeoutMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_get_history(ClientHandle client, byte[] resource, ulong sinceMs, uint limit, uint timeoutMs, out IntPtr history, out UIntPtr count, out byte truncated);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_history_get_entry(IntPtr history, UIntPtr index, out IntPtr entry);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_history_free(IntPtr history);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_request_yield_asked(ClientHandle client, byte[] resource, uint withinMs, byte[] reason, uint flags, uint timeoutMs, out uint asked);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_watch_open(ClientHandle client, IntPtr resources, UIntPtr count, IntPtr notify, IntPtr userData, out WatchHandle watch);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_watch_next(WatchHandle watch, uint timeoutMs, out WatchEventNative ev);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_watch_close(IntPtr watch);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_consume(ClientHandle client, byte[] queue, uint prefetch, IntPtr notify, IntPtr userData, out ConsumerHandle consumer);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_consumer_next(ConsumerHandle consumer, uint timeoutMs, out DeliveryNative d);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_consumer_ack(ConsumerHandle consumer, ulong deliveryId, uint timeoutMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_consumer_nack(ConsumerHandle consumer, ulong deliveryId, int requeue, uint timeoutMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern int ts_consumer_close(IntPtr consumer);
    }

    /// <summary>The library itself.</summary>
    public static class Library
    {
        public static string Version { get { return Native.FromUtf8(Native.ts_version()); } }
        /// <summary>Open handles of any kind in this process (0 once all are disposed).</summary>
        public static long OpenHandles { get { return (long)Native.ts_open_handles(); } }
        public static string ErrorName(ErrorCode code) { return Native.FromUtf8(Native.ts_error_name((int)code)); }
    }
}
