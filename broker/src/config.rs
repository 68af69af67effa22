//! `turnstiled`'s settings: command-line flags, the same keys in a TOML
//! file (`--config`), and the defaults, merged in that order of precedence.
//!
//! Every limit is here with its default, and `--help` prints them all.
//! Unknown keys in the file are an error, never ignored. What 0 means is
//! said for every limit: either it has a meaning its help states ("0 = no
//! limit", "0s = never"), or it is refused (exit 78) with a sentence
//! saying what it would have done. An error about a value the config
//! file gave names the file and the key.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::core::CoreConfig;
use crate::core::queues::QueueConfig;
use crate::fleet::FleetConfig;
use crate::platform::dirs;
use crate::policy::{DefaultsConfig, Policy, PolicyConfig, RuleConfig};
use crate::server::ServerConfig;

/// A duration written like `10s`, `500ms`, `1.5s`, `15m` or `1h 30m`: the
/// one syntax both binaries read (`turnstile_proto::duration`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        turnstile_proto::duration::parse(s)
            .map(Dur)
            .map_err(|e| e.to_string())
    }
}

/// A log filter `tracing_subscriber::EnvFilter` accepts, where every bare
/// word is a level: `info`, `debug,turnstile_broker::store=trace`. (A bare
/// word is a target to `RUST_LOG`, so `verbose` would log nothing at all:
/// refused here, with the levels named.)
pub fn log_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '['])
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "'{directive}' is not a level (error, warn, info, debug, trace, off); \
                 use TARGET=LEVEL for one module"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("'{s}' is not a log filter: {e}"))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every setting, as a flag and as a config-file key. `None` = not given
/// here; the defaults are applied by [`Settings::resolve`].
#[derive(Parser, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(
    name = "turnstiled",
    version,
    about = "The turnstile broker: leases with a fair wait queue, state watches and durable message queues over a local socket.",
    long_about = "The turnstile broker: leases with a fair wait queue, state watches and durable message queues over a local socket.\n\nRuns in the foreground and logs to stderr. SIGINT or SIGTERM stops it cleanly and removes the socket file; SIGHUP is logged and ignored (nothing is reloaded).\nEvery flag can also be given as a key of the same name in the TOML file of --config (flags win).",
    after_help = "Exit codes: 0 after a clean stop; 64 bad flags; 69 the endpoint is taken by a live broker or cannot be bound;\n70 internal error; 73 the data store or its directory cannot be used; 78 invalid configuration.\nOn Windows, `turnstiled service install|uninstall|run [FLAGS...]` runs it under the Service Control Manager.\n`turnstiled manpage` prints this as a man page."
)]
pub struct Settings {
    /// Socket to serve [default: $XDG_RUNTIME_DIR/turnstile.sock; for root /run/turnstile/turnstile.sock; else /tmp/turnstile-$UID/turnstile.sock; on Windows \\.\pipe\turnstile]
    #[arg(long, env = "TURNSTILE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Directory for durable state: queues and the fencing/revision counters; made (mode 700) when missing, refused when other users can write it [default: /var/lib/turnstile for root, else $XDG_STATE_HOME/turnstile or ~/.local/state/turnstile]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// TOML file with the same keys as these flags (e.g. `max-connections = 500`)
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Check the --config file (or the given FILE) and exit: 0 if valid, 78 if not
    // `Some(None)`: the flag without a FILE (then --config's file).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    #[serde(skip)]
    pub check_config: Option<Option<PathBuf>>,

    /// Log filter: a level (error, warn, info, debug, trace, off) or directives like RUST_LOG's (RUST_LOG wins when set) [default: info]
    #[arg(long, value_name = "FILTER", value_parser = log_filter)]
    pub log_level: Option<String>,

    /// Connections in all; at least 1 [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections per user, at least 1; root and the broker's own user are bound only by --max-connections [default: 256]
    #[arg(long, value_name = "N")]
    pub max_connections_per_uid: Option<usize>,

    /// Connections of one user that have not yet said Hello, at least 1; more of that user's wait their turn, other users are not concerned [default: 64]
    #[arg(long, value_name = "N")]
    pub max_handshakes_per_uid: Option<usize>,

    /// Time a new connection has to say Hello; above 0 [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<Dur>,

    /// Time a client has to finish a frame it has begun sending (slow senders are closed with TIMED_OUT); above 0 [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub frame_timeout: Option<Dur>,

    /// Largest frame in bytes, either way; 1024 to 67108864 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<u32>,

    /// Bytes (counted at what they cost the broker) queued for a client that does not read: past half of it the broker stops reading that client; past all of it, with events it did not ask for, the client is disconnected (watch events are coalesced instead; deliveries are bounded by the consumer's prefetch); at least 1 [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub max_outbound_bytes: Option<usize>,

    /// Bytes (counted as for --max-outbound-bytes) queued for all the connections of one user together, root and the broker's own user excepted: past it the broker stops reading that user's requests until what is queued goes out, so one user that opens many connections and reads none holds this much, not --max-connections-per-uid times --max-outbound-bytes; at least 1 [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub max_outbound_bytes_per_uid: Option<usize>,

    /// Bytes of status and history answers the broker builds for all the connections of one user together, per second, root and the broker's own user excepted (a history read counts at least 64 KiB): a user that owes more than a tenth of a second's worth waits, on every connection of theirs, until it is paid off at this rate, so that one user asking for large statuses in a loop cannot take the broker from the others; at least 1 [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub report_bytes_per_uid_per_second: Option<usize>,

    /// TTL of a lease whose request says 0; between --min-ttl and --max-ttl [default: 15s]
    #[arg(long, value_name = "DURATION")]
    pub default_ttl: Option<Dur>,

    /// Shortest TTL accepted; above 0 [default: 100ms]
    #[arg(long, value_name = "DURATION")]
    pub min_ttl: Option<Dur>,

    /// Longest TTL accepted; at least --min-ttl, and at most about 49 days (2^32 - 1 ms; more is taken as that) [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub max_ttl: Option<Dur>,

    /// Leases, held or queued, one connection may have; at least 1 [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_leases_per_connection: Option<usize>,

    /// Requests one user may have waiting in lease queues, over all its connections, at least 1; past it RESOURCE_EXHAUSTED (root and the broker's own user are not bound) [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_waiters_per_uid: Option<usize>,

    /// Leases, held or waiting, one user may have over all its connections, at least 1; past it RESOURCE_EXHAUSTED (root and the broker's own user are not bound) [default: 16384]
    #[arg(long, value_name = "N")]
    pub max_leases_per_uid: Option<usize>,

    /// Watches one connection may have; at least 1 [default: 64]
    #[arg(long, value_name = "N")]
    pub max_watches_per_connection: Option<usize>,

    /// State events remembered so that a watcher can resume from a revision; 0 = none (a watcher that resumes gets a fresh snapshot, marked resync) [default: 4096]
    #[arg(long, value_name = "N")]
    pub watch_history: Option<usize>,

    /// A watch quiet for this long gets a heartbeat event; 0s = never [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub heartbeat_interval: Option<Dur>,

    /// A waiter is told its place in the queue and the holder's progress at most once per this interval; changes in between are coalesced into the newest state; 0s = at every change [default: 250ms]
    #[arg(long, value_name = "DURATION")]
    pub waiter_update_interval: Option<Dur>,

    /// Updates the waiters of one resource get per second at most: a queue longer than this rate allows within --waiter-update-interval is told less often; at least 1 [default: 20000]
    #[arg(long, value_name = "N")]
    pub waiter_updates_per_second: Option<u64>,

    /// Fencing tokens and revisions covered by one durable reservation in the store; the next is written when half is used, and grants wait if it is not durable in time; at least 2 [default: 1048576]
    #[arg(long, value_name = "N")]
    pub counter_block: Option<u64>,

    /// Messages one queue may hold, ready and unacknowledged together, at least 1; past it publishes get RESOURCE_EXHAUSTED [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_queue_depth: Option<u64>,

    /// Bytes (payloads and headers) one queue may hold, at least 1; past it publishes get RESOURCE_EXHAUSTED [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub max_queue_bytes: Option<u64>,

    /// Messages one user (other than root and the broker's own) may have in one queue, so that no user can fill a queue others depend on; at least 1 (to keep a user from publishing, use a [[policy]] rule). Over all queues together see --max-stored-messages-per-uid [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_queue_depth_per_uid: Option<u64>,

    /// Bytes one user (other than root and the broker's own) may have in one queue; at least 1. Over all queues together see --max-stored-bytes-per-uid [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub max_queue_bytes_per_uid: Option<u64>,

    /// Messages one user (other than root and the broker's own) may have stored over all queues together (ready, unacknowledged and being stored; they count again after a restart, and go on counting in a dead-letter queue), so that no user can fill the broker's memory, disk and startup time by spreading over many queues; at least 1. --max-queue-depth-per-uid bounds the same user in any one queue: the stricter of the two applies [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_stored_messages_per_uid: Option<u64>,

    /// Bytes (payloads and headers) one user (other than root and the broker's own) may have stored over all queues together, counted like --max-stored-messages-per-uid; at least 1. --max-queue-bytes-per-uid bounds the same user in any one queue [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub max_stored_bytes_per_uid: Option<u64>,

    /// Queues in which one user (other than root and the broker's own) may have messages stored at once, so that it cannot spread them thin (a message alone in its queue costs the broker about 1.6 KiB of memory, one among many about 0.2 KiB); a queue stops counting once the user's messages have left it; at least 1 [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_queues_per_uid: Option<u64>,

    /// Deliveries a message may have before it moves to the dead-letter queue QUEUE.dead; 0 = no limit [default: 5]
    #[arg(long, value_name = "N")]
    pub max_delivery_attempts: Option<u32>,

    /// Queue consumers one connection may have; at least 1 [default: 64]
    #[arg(long, value_name = "N")]
    pub max_consumers_per_connection: Option<usize>,

    /// Requests one connection may have awaiting answers (durable publishes); past it the broker stops reading that connection until answers go out, it never refuses; at least 1 [default: 128]
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,

    /// Bytes of the store's log (`turnstile.wal` in the data directory), made at this size once and reused, in two halves: commits go on in one while the other is applied to the database; a log of another size is made anew at startup; 65536 to 1073741824 [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub store_log_size: Option<u64>,

    /// The store's log is applied to its database (a checkpoint, on a thread of its own) once it holds this many bytes since the last one, 1 to --store-log-size; a checkpoint comes at half of the log anyway (a half is full) [default: 4194304, or a quarter of --store-log-size if less]
    #[arg(long, value_name = "BYTES")]
    pub store_checkpoint_size: Option<u64>,

    /// A checkpoint follows the first write this long after the last one, however little the log holds; 0s = after every write (as often as the database keeps up) [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub store_checkpoint_interval: Option<Dur>,

    /// Recorded leases (`turnstile history`) kept per resource, the newest; 0 = record none [default: 10000]
    #[arg(long, value_name = "N")]
    pub history_max_entries: Option<u64>,

    /// Recorded leases older than this are dropped; 0s = kept until --history-max-entries pushes them out [default: 30d]
    #[arg(long, value_name = "DURATION")]
    pub history_max_age: Option<Dur>,

    /// Resources whose recorded leases are kept: past it, whole histories are dropped, those of the user whose resources take most of it (a resource counts against the holder of its oldest recorded lease), longest idle first (any user may name resources: this bounds the file, and one user naming resources in a loop drops their own); at least 1 [default: 10000]
    #[arg(long, value_name = "N")]
    pub history_max_resources: Option<u64>,

    /// Recorded leases kept over all resources, dropped as for --history-max-resources; at least 1 [default: 1000000]
    #[arg(long, value_name = "N")]
    pub history_max_lines: Option<u64>,
    /// etcd endpoints of the fleet, comma-separated (`http://10.0.0.5:2379,...`): mirrors this host's resources into etcd and arbitrates `global/` resources across hosts; without it `global/` names are refused. Needs a build with the `fleet` feature: in one without, this and every other fleet setting is a configuration error [default: none]
    #[arg(long, value_name = "URL[,URL...]")]
    pub fleet_etcd: Option<String>,

    /// Prefix of every key the fleet writes in etcd [default: /turnstile]
    #[arg(long, value_name = "PREFIX")]
    pub fleet_prefix: Option<String>,

    /// This host's name in the fleet [default: the machine's host name]
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,

    /// TTL of the broker's etcd lease: a dead host's keys vanish after it, and a host that cannot reach etcd gives up its global leases before it; 2s to 1h [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub fleet_ttl: Option<Dur>,

    /// Least time between two writes of the mirrored state into etcd (changes in between are coalesced, newest state per resource); above 0 [default: 200ms]
    #[arg(long, value_name = "DURATION")]
    pub fleet_mirror_interval: Option<Dur>,

    /// Access rules (config file only): `[[policy]]` tables with `verbs`,
    /// `resources`, `users`, `groups`; see README "Security model".
    #[arg(skip)]
    #[serde(default)]
    pub policy: Option<Vec<RuleConfig>>,

    /// Per-verb defaults for names no rule mentions (config file only):
    /// `[policy-defaults]` with `lease-exclusive = "deny"` and the like.
    #[arg(skip)]
    #[serde(default)]
    pub policy_defaults: Option<DefaultsConfig>,

    /// Resources whose semaphore capacity is fixed (config file only):
    /// `[[resources]]` tables with `name` and `capacity`.
    #[arg(skip)]
    #[serde(default)]
    pub resources: Option<Vec<ResourceConfig>>,
}

/// One `[[resources]]` table: a counting semaphore whose capacity the
/// broker fixes, whatever clients ask for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The resource's name.
    pub name: String,
    /// Its capacity: at most this many permits held at once (1 or more).
    pub capacity: u32,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range, or values do not go together.
    #[error("{}{message}", in_file(file.as_deref()))]
    Invalid {
        /// The keys whose values are at fault (as in the file; the flags
        /// are the same with `--`).
        keys: Vec<&'static str>,
        /// What is wrong and what to do, naming the keys.
        message: String,
        /// The config file that gave one of `keys` (and no flag overrode
        /// it), if any.
        file: Option<PathBuf>,
    },
}

/// "config file PATH: " before a sentence about a value it gave.
fn in_file(file: Option<&Path>) -> String {
    file.map(|f| format!("config file {}: ", f.display()))
        .unwrap_or_default()
}

/// A refusal of the values of `keys`.
fn invalid(keys: &[&'static str], message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        keys: keys.to_vec(),
        message: message.into(),
        file: None,
    }
}

impl ConfigError {
    /// Names `path` in a refusal of a value among `from_file`, the keys
    /// the file gave and no flag overrode.
    fn blame(self, path: &Path, from_file: &[String]) -> ConfigError {
        match self {
            ConfigError::Invalid {
                keys,
                message,
                file: None,
            } if keys.iter().any(|k| from_file.iter().any(|f| f == k)) => ConfigError::Invalid {
                keys,
                message,
                file: Some(path.to_path_buf()),
            },
            other => other,
        }
    }
}

/// Everything `turnstiled` needs, resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// The socket (or pipe) to serve.
    pub socket: PathBuf,
    /// The durable state's directory.
    pub data_dir: PathBuf,
    /// The log filter.
    pub log_level: String,
    /// The store's log and checkpoints.
    pub store: crate::store::LogOptions,
    /// Transport and core limits.
    pub server: ServerConfig,
}

/// [`Settings::or`] and [`Settings::given`], over every field.
macro_rules! every_field {
    ($($field:ident),* $(,)?) => {
        impl Settings {
            /// These settings, with `other` filling what these leave unset.
            pub fn or(self, other: Settings) -> Settings {
                Settings { $($field: self.$field.or(other.$field),)* }
            }

            /// The keys these settings give, as written in a file.
            fn given(&self) -> Vec<String> {
                let mut keys = Vec::new();
                $(
                    if self.$field.is_some() {
                        keys.push(stringify!($field).replace('_', "-"));
                    }
                )*
                keys
            }
        }
    };
}

every_field!(
    socket,
    data_dir,
    config,
    check_config,
    log_level,
    max_connections,
    max_connections_per_uid,
    max_handshakes_per_uid,
    handshake_timeout,
    frame_timeout,
    max_frame_bytes,
    max_outbound_bytes,
    max_outbound_bytes_per_uid,
    report_bytes_per_uid_per_second,
    default_ttl,
    min_ttl,
    max_ttl,
    max_leases_per_connection,
    max_waiters_per_uid,
    max_leases_per_uid,
    max_watches_per_connection,
    watch_history,
    heartbeat_interval,
    waiter_update_interval,
    waiter_updates_per_second,
    counter_block,
    max_queue_depth,
    max_queue_bytes,
    max_queue_depth_per_uid,
    max_queue_bytes_per_uid,
    max_stored_messages_per_uid,
    max_stored_bytes_per_uid,
    max_queues_per_uid,
    max_delivery_attempts,
    max_consumers_per_connection,
    max_in_flight,
    store_log_size,
    store_checkpoint_size,
    store_checkpoint_interval,
    history_max_entries,
    history_max_age,
    history_max_resources,
    history_max_lines,
    fleet_etcd,
    fleet_prefix,
    host_name,
    fleet_ttl,
    fleet_mirror_interval,
    policy,
    policy_defaults,
    resources,
);

/// `value` of `key` when it is at least 1; 0 is refused with what it
/// would do (`would`: a sentence that may go on to say what to do
/// instead).
fn at_least_one<T: PartialEq + Default>(
    key: &'static str,
    value: T,
    would: &str,
) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(invalid(
            &[key],
            format!("{key} (0) must be at least 1: 0 would {would}"),
        ));
    }
    Ok(value)
}

/// `value` of `key` when it is above 0s; 0s is refused with what it would
/// do.
fn above_zero(key: &'static str, value: Duration, would: &str) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(
            &[key],
            format!("{key} (0s) must be above 0: 0s would {would}"),
        ));
    }
    Ok(value)
}

/// Whom a per-user limit of 0 would refuse, and the tool to use instead.
const NO_USER_MAY: &str = "to every user but root and the broker's own; to deny it to some \
                           users, write a [[policy]] rule";

/// Milliseconds of a duration, saturating (a duration may be far longer
/// than `u64` milliseconds).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// These settings (the flags) over the config file `file`, if any,
    /// resolved: a refusal of a value the file gave, and no flag
    /// overrode, names the file.
    pub fn resolve_with(self, file: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = file else {
            return self.resolve();
        };
        let from_file = Settings::from_file(path)?;
        let flags = self.given();
        let blamed: Vec<String> = from_file
            .given()
            .into_iter()
            .filter(|k| !flags.contains(k))
            .collect();
        self.or(from_file)
            .resolve()
            .map_err(|e| e.blame(path, &blamed))
    }

    /// Applies the defaults and checks the ranges.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let d = ServerConfig::default();
        let c = CoreConfig::default();
        let ms = |v: Option<Dur>, default: u64| v.map_or(default, |d| millis(d.0));
        let queues = self.queues()?;
        let (min_ttl_ms, max_ttl_ms, default_ttl_ms) = self.ttls(&c)?;
        let core = CoreConfig {
            default_ttl_ms,
            min_ttl_ms,
            max_ttl_ms,
            max_leases_per_session: at_least_one(
                "max-leases-per-connection",
                self.max_leases_per_connection
                    .unwrap_or(c.max_leases_per_session),
                "refuse every lease",
            )?,
            max_waiters_per_uid: at_least_one(
                "max-waiters-per-uid",
                self.max_waiters_per_uid.unwrap_or(c.max_waiters_per_uid),
                &format!("refuse every wait for a lease {NO_USER_MAY}"),
            )?,
            max_leases_per_uid: at_least_one(
                "max-leases-per-uid",
                self.max_leases_per_uid.unwrap_or(c.max_leases_per_uid),
                &format!("refuse every lease {NO_USER_MAY}"),
            )?,
            own_uid: d.own_uid,
            max_watches_per_session: at_least_one(
                "max-watches-per-connection",
                self.max_watches_per_connection
                    .unwrap_or(c.max_watches_per_session),
                "refuse every watch",
            )?,
            watch_history: self.watch_history.unwrap_or(c.watch_history),
            heartbeat_ms: ms(self.heartbeat_interval, c.heartbeat_ms),
            waiter_update_interval_ms: ms(self.waiter_update_interval, c.waiter_update_interval_ms),
            waiter_updates_per_second: at_least_one(
                "waiter-updates-per-second",
                self.waiter_updates_per_second
                    .unwrap_or(c.waiter_updates_per_second),
                "tell waiters nothing of their place",
            )?,
            counter_block: self.counter_block.unwrap_or(c.counter_block),
            queues,
            capacities: capacities(self.resources.as_deref().unwrap_or_default())?,
            fleet: self.fleet_etcd.is_some(),
        };
        if core.counter_block < 2 {
            return Err(invalid(
                &["counter-block"],
                format!("counter-block ({}) must be at least 2", core.counter_block),
            ));
        }
        let fleet = self.fleet()?;
        let store = self.store()?;
        let max_frame_bytes = self.max_frame_bytes.unwrap_or(d.max_frame_bytes);
        if !(1024..=64 << 20).contains(&max_frame_bytes) {
            return Err(invalid(
                &["max-frame-bytes"],
                format!("max-frame-bytes ({max_frame_bytes}) must lie between 1024 and 67108864"),
            ));
        }
        let max_connections = at_least_one(
            "max-connections",
            self.max_connections.unwrap_or(d.max_connections),
            "refuse every connection, root's too",
        )?;
        let server = ServerConfig {
            max_connections,
            max_connections_per_uid: at_least_one(
                "max-connections-per-uid",
                self.max_connections_per_uid
                    .unwrap_or(d.max_connections_per_uid),
                "refuse every connection of every user but root and the broker's own; to keep \
                 other users out, put the socket in a directory they cannot enter",
            )?,
            max_handshakes_per_uid: at_least_one(
                "max-handshakes-per-uid",
                self.max_handshakes_per_uid
                    .unwrap_or(d.max_handshakes_per_uid),
                "let no connection say Hello",
            )?,
            handshake_timeout: above_zero(
                "handshake-timeout",
                self.handshake_timeout.map_or(d.handshake_timeout, |d| d.0),
                "close every connection before its Hello",
            )?,
            frame_timeout: above_zero(
                "frame-timeout",
                self.frame_timeout.map_or(d.frame_timeout, |d| d.0),
                "close every client whose frame arrives in more than one piece",
            )?,
            max_frame_bytes,
            max_outbound_bytes: at_least_one(
                "max-outbound-bytes",
                self.max_outbound_bytes.unwrap_or(d.max_outbound_bytes),
                "disconnect every consumer at its first delivery",
            )?,
            max_outbound_bytes_per_uid: at_least_one(
                "max-outbound-bytes-per-uid",
                self.max_outbound_bytes_per_uid
                    .unwrap_or(d.max_outbound_bytes_per_uid),
                "stop reading a user's requests whenever one answer of theirs waits to go out",
            )?,
            report_bytes_per_uid_per_second: at_least_one(
                "report-bytes-per-uid-per-second",
                self.report_bytes_per_uid_per_second
                    .unwrap_or(d.report_bytes_per_uid_per_second),
                "make a user's requests wait after any status",
            )?,
            max_in_flight: at_least_one(
                "max-in-flight",
                self.max_in_flight.unwrap_or(d.max_in_flight),
                "never read a request",
            )?,
            own_uid: d.own_uid,
            policy: std::sync::Arc::new(
                Policy::resolve(
                    &PolicyConfig {
                        policy: self.policy.unwrap_or_default(),
                        policy_defaults: self.policy_defaults.unwrap_or_default(),
                    },
                    d.own_uid,
                )
                .map_err(|e| invalid(&["policy", "policy-defaults"], e.to_string()))?,
            ),
            core,
            storage: None,
            history: crate::store::HistoryBounds {
                max_entries: self.history_max_entries.unwrap_or(d.history.max_entries),
                max_age_ms: ms(self.history_max_age, d.history.max_age_ms),
                max_resources: at_least_one(
                    "history-max-resources",
                    self.history_max_resources
                        .unwrap_or(d.history.max_resources),
                    "keep no history; --history-max-entries 0 says so",
                )?,
                max_lines: at_least_one(
                    "history-max-lines",
                    self.history_max_lines.unwrap_or(d.history.max_lines),
                    "keep no history; --history-max-entries 0 says so",
                )?,
            },
            fleet,
        };
        Ok(Config {
            socket: self.socket.unwrap_or_else(dirs::default_socket),
            data_dir: self.data_dir.unwrap_or_else(dirs::default_data_dir),
            log_level: match self.log_level {
                Some(l) => log_filter(&l)
                    .map_err(|e| invalid(&["log-level"], format!("log-level: {e}")))?,
                None => "info".to_string(),
            },
            store,
            server,
        })
    }
}

impl Settings {
    /// The queue limits, checked.
    fn queues(&self) -> Result<QueueConfig, ConfigError> {
        let q = QueueConfig::default();
        let publish = format!("refuse every publish {NO_USER_MAY}");
        Ok(QueueConfig {
            max_depth: at_least_one(
                "max-queue-depth",
                self.max_queue_depth.unwrap_or(q.max_depth),
                "refuse every publish",
            )?,
            max_bytes: at_least_one(
                "max-queue-bytes",
                self.max_queue_bytes.unwrap_or(q.max_bytes),
                "refuse every publish",
            )?,
            max_depth_per_uid: at_least_one(
                "max-queue-depth-per-uid",
                self.max_queue_depth_per_uid.unwrap_or(q.max_depth_per_uid),
                &publish,
            )?,
            max_bytes_per_uid: at_least_one(
                "max-queue-bytes-per-uid",
                self.max_queue_bytes_per_uid.unwrap_or(q.max_bytes_per_uid),
                &publish,
            )?,
            max_stored_messages_per_uid: at_least_one(
                "max-stored-messages-per-uid",
                self.max_stored_messages_per_uid
                    .unwrap_or(q.max_stored_messages_per_uid),
                &publish,
            )?,
            max_stored_bytes_per_uid: at_least_one(
                "max-stored-bytes-per-uid",
                self.max_stored_bytes_per_uid
                    .unwrap_or(q.max_stored_bytes_per_uid),
                &publish,
            )?,
            max_queues_per_uid: at_least_one(
                "max-queues-per-uid",
                self.max_queues_per_uid.unwrap_or(q.max_queues_per_uid),
                &publish,
            )?,
            max_attempts: self.max_delivery_attempts.unwrap_or(q.max_attempts),
            max_consumers_per_session: at_least_one(
                "max-consumers-per-connection",
                self.max_consumers_per_connection
                    .unwrap_or(q.max_consumers_per_session),
                "refuse every consumer",
            )?,
        })
    }

    /// The TTL bounds, checked in whole milliseconds before they are
    /// narrowed to the `u32` the wire carries (so that a huge value cannot
    /// wrap into range): `(min, max, default)`. A longer `max-ttl` is taken
    /// as the longest a request can carry.
    fn ttls(&self, c: &CoreConfig) -> Result<(u32, u32, u32), ConfigError> {
        let ms = |v: Option<Dur>, default: u32| v.map_or(u64::from(default), |d| millis(d.0));
        let min = ms(self.min_ttl, c.min_ttl_ms);
        let max = ms(self.max_ttl, c.max_ttl_ms).min(u64::from(u32::MAX));
        let default = ms(self.default_ttl, c.default_ttl_ms);
        if min == 0 || min > max {
            return Err(invalid(
                &["min-ttl", "max-ttl"],
                format!("min-ttl ({min} ms) must be above 0 and at most max-ttl ({max} ms)"),
            ));
        }
        if !(min..=max).contains(&default) {
            return Err(invalid(
                &["default-ttl", "min-ttl", "max-ttl"],
                format!(
                    "default-ttl ({default} ms) must lie between min-ttl ({min} ms) and max-ttl \
                     ({max} ms)"
                ),
            ));
        }
        // All three are at most `max`, itself at most u32::MAX.
        let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok((narrow(min), narrow(max), narrow(default)))
    }

    /// The store's log sizes and checkpoint bounds, checked.
    fn store(&self) -> Result<crate::store::LogOptions, ConfigError> {
        let d = crate::store::LogOptions::default();
        let options = crate::store::LogOptions {
            capacity: self.store_log_size.unwrap_or(d.capacity),
            checkpoint_bytes: self.store_checkpoint_size.unwrap_or(
                d.checkpoint_bytes
                    .min(self.store_log_size.unwrap_or(d.capacity) / 4),
            ),
            checkpoint_interval: self
                .store_checkpoint_interval
                .map_or(d.checkpoint_interval, |i| i.0),
        };
        if !(64 << 10..=1 << 30).contains(&options.capacity) {
            return Err(invalid(
                &["store-log-size"],
                format!(
                    "store-log-size ({}) must lie between 65536 and 1073741824",
                    options.capacity
                ),
            ));
        }
        if options.checkpoint_bytes == 0 || options.checkpoint_bytes > options.capacity {
            return Err(invalid(
                &["store-checkpoint-size", "store-log-size"],
                format!(
                    "store-checkpoint-size ({}) must lie between 1 and store-log-size ({})",
                    options.checkpoint_bytes, options.capacity
                ),
            ));
        }
        Ok(options)
    }

    /// The fleet's settings, checked; `None` without `--fleet-etcd`.
    ///
    /// In a build without the `fleet` feature every fleet key is refused,
    /// not only `fleet-etcd`: whoever wrote one expects a fleet (global
    /// resources arbitrated across hosts), and a broker that starts
    /// without one would only say so when a `global/` request is refused.
    /// In a build with it, the values given are checked even without
    /// `fleet-etcd`, which a flag may add to a shared file.
    fn fleet(&self) -> Result<Option<FleetConfig>, ConfigError> {
        let given: Vec<&'static str> = [
            ("fleet-etcd", self.fleet_etcd.is_some()),
            ("fleet-prefix", self.fleet_prefix.is_some()),
            ("host-name", self.host_name.is_some()),
            ("fleet-ttl", self.fleet_ttl.is_some()),
            (
                "fleet-mirror-interval",
                self.fleet_mirror_interval.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if !crate::fleet::AVAILABLE {
            return match given.first() {
                None => Ok(None),
                Some(first) => Err(invalid(
                    &given,
                    format!(
                        "{first}: this turnstiled was built without the `fleet` feature, so it \
                         cannot join a fleet; build it with `cargo build --features fleet` (it \
                         needs protoc), or remove {}",
                        given.join(", ")
                    ),
                )),
            };
        }
        let ttl = self.fleet_ttl.map_or(Duration::from_secs(10), |d| d.0);
        if ttl < Duration::from_secs(2) || ttl > Duration::from_secs(3600) {
            return Err(invalid(
                &["fleet-ttl"],
                format!("fleet-ttl ({} ms) must lie between 2s and 1h", millis(ttl)),
            ));
        }
        let mirror_interval = above_zero(
            "fleet-mirror-interval",
            self.fleet_mirror_interval
                .map_or(Duration::from_millis(200), |d| d.0),
            "write to etcd at every change",
        )?;
        let prefix = self
            .fleet_prefix
            .clone()
            .unwrap_or_else(|| "/turnstile".to_string());
        crate::core::check_name("fleet-prefix", &prefix)
            .map_err(|e| invalid(&["fleet-prefix"], format!("fleet-prefix: {e}")))?;
        if let Some(host) = &self.host_name {
            check_host_name(host)?;
        }
        let Some(etcd) = &self.fleet_etcd else {
            return Ok(None);
        };
        let endpoints = crate::fleet::endpoints(etcd);
        if endpoints.is_empty() {
            return Err(invalid(
                &["fleet-etcd"],
                "fleet-etcd: no endpoint given (URL[,URL...])",
            ));
        }
        let host = match &self.host_name {
            Some(host) => host.clone(),
            None => {
                let host = crate::platform::host::host_name();
                check_host_name(&host)?;
                host
            }
        };
        Ok(Some(FleetConfig {
            endpoints,
            prefix,
            host,
            ttl,
            mirror_interval,
        }))
    }
}

/// A host name the fleet can use as a key.
fn check_host_name(host: &str) -> Result<(), ConfigError> {
    crate::core::check_name("host-name", host).map_err(|e| {
        invalid(
            &["host-name"],
            format!("host-name {host:?}: {e} (give one with --host-name)"),
        )
    })
}

/// The `[[resources]]` tables, checked: valid names, a capacity of 1 or
/// more, each name once.
fn capacities(resources: &[ResourceConfig]) -> Result<Vec<(String, u32)>, ConfigError> {
    let mut out: Vec<(String, u32)> = Vec::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        let which = format!("[[resources]] entry {}", i + 1);
        crate::core::check_name("resource", &r.name)
            .map_err(|e| invalid(&["resources"], format!("{which}: {e}")))?;
        if r.capacity == 0 {
            return Err(invalid(
                &["resources"],
                format!("{which} ({}): capacity must be 1 or more", r.name),
            ));
        }
        if out.iter().any(|(n, _)| *n == r.name) {
            return Err(invalid(
                &["resources"],
                format!("{which}: {} is configured twice", r.name),
            ));
        }
        out.push((r.name.clone(), r.capacity));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_fix_capacities_and_bad_ones_are_refused() {
        let s: Settings =
            toml::from_str("[[resources]]\nname = \"downloads\"\ncapacity = 3\n").unwrap();
        let c = s.resolve().unwrap();
        assert_eq!(c.server.core.capacities, vec![("downloads".to_string(), 3)]);
        for bad in [
            "[[resources]]\nname = \"d\"\ncapacity = 0\n",
            "[[resources]]\nname = \"\"\ncapacity = 1\n",
            "[[resources]]\nname = \"d\"\ncapacity = 1\n[[resources]]\nname = \"d\"\ncapacity = 2\n",
        ] {
            let s: Settings = toml::from_str(bad).unwrap();
            assert!(s.resolve().is_err(), "{bad}");
        }
    }

    #[test]
    fn file_keys_are_the_flag_names_and_unknown_keys_are_refused() {
        let s: Settings =
            toml::from_str("max-connections = 5\nheartbeat-interval = \"2s\"").unwrap();
        assert_eq!(s.max_connections, Some(5));
        assert_eq!(s.heartbeat_interval, Some(Dur(Duration::from_secs(2))));
        let e = toml::from_str::<Settings>("max-conections = 5").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let flags = Settings {
            max_connections: Some(7),
            ..Settings::default()
        };
        let file = Settings {
            max_connections: Some(5),
            max_handshakes_per_uid: Some(3),
            ..Settings::default()
        };
        let c = flags.or(file).resolve().unwrap();
        assert_eq!(c.server.max_connections, 7);
        assert_eq!(c.server.max_handshakes_per_uid, 3);
        assert_eq!(c.server.max_connections_per_uid, 256);
        assert_eq!(c.server.core.default_ttl_ms, 15_000);
        assert_eq!(c.server.core.queues.max_depth, 100_000);
        assert_eq!(c.server.core.queues.max_bytes, 64 << 20);
        assert_eq!(c.server.core.queues.max_attempts, 5);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let s = Settings {
            default_ttl: Some("10ms".parse().unwrap()),
            ..Settings::default()
        };
        assert!(s.resolve().is_err());
    }

    /// `turnstiled ARGS` resolved without a file.
    fn flags(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("turnstiled").chain(args.iter().copied());
        Settings::try_parse_from(argv).unwrap().resolve()
    }

    #[test]
    fn zero_means_what_the_help_says_or_is_refused_naming_the_key() {
        // Every flag that takes a count, a size or a duration: 0 either has
        // a meaning its help states ("0 = ...", "0s = ..."), and is taken,
        // or is refused with a sentence naming the key. A new flag falls
        // under this test by itself.
        let command = <Settings as clap::CommandFactory>::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(key) = arg.get_long() else { continue };
            let zero = match arg.get_value_names().and_then(|n| n.first()) {
                Some(n) if n.as_str() == "N" || n.as_str() == "BYTES" => "0",
                Some(n) if n.as_str() == "DURATION" => "0s",
                _ => continue,
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let flag = format!("--{key}");
            let result = flags(&[&flag, zero]);
            if help.contains(&format!("{zero} = ")) {
                assert!(result.is_ok(), "{flag} {zero}: {:?}", result.err());
            } else {
                let e = result
                    .err()
                    .unwrap_or_else(|| panic!("{flag} {zero} was taken"));
                assert!(e.to_string().contains(key), "{flag} {zero}: {e}");
            }
            checked += 1;
        }
        assert!(checked > 30, "only {checked} flags checked");
    }

    #[test]
    fn a_refused_value_from_the_file_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("turnstiled.toml");
        let resolve = |toml: &str, args: &[&str]| {
            std::fs::write(&file, toml).unwrap();
            let argv = std::iter::once("turnstiled").chain(args.iter().copied());
            Settings::try_parse_from(argv)
                .unwrap()
                .resolve_with(Some(&file))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let named = format!("config file {}: ", file.display());
        for (toml, key) in [
            ("max-queue-depth = 0\n", "max-queue-depth (0)"),
            ("max-frame-bytes = 10\n", "max-frame-bytes (10)"),
            ("min-ttl = \"2h\"\n", "min-ttl (7200000 ms)"),
            ("log-level = \"loud\"\n", "log-level: 'loud'"),
            (
                "[[policy]]\nverbs = [\"fly\"]\nresources = [\"x\"]\n",
                "policy rule 1",
            ),
            (
                "[[resources]]\nname = \"d\"\ncapacity = 0\n",
                "[[resources]] entry 1",
            ),
        ] {
            let e = resolve(toml, &[]).unwrap_err();
            assert!(e.starts_with(&format!("{named}{key}")), "{toml}: {e}");
        }
        // A flag that overrides the file's value is what is in effect.
        resolve("max-queue-depth = 0\n", &["--max-queue-depth", "5"]).unwrap();
        let e = resolve("max-connections = 5\n", &["--max-queue-depth", "0"]).unwrap_err();
        assert!(e.starts_with("max-queue-depth (0)"), "{e}");
        // Two keys at fault, one of them from the file: the file is named.
        let e = resolve("max-ttl = \"1s\"\n", &["--default-ttl", "5s"]).unwrap_err();
        assert!(e.starts_with(&format!("{named}default-ttl")), "{e}");
    }

    #[test]
    fn a_ttl_too_long_for_the_wire_does_not_wrap_into_range() {
        // 2^32 ms + 15 s: as a u32 it would have been 15 s, accepted.
        let e = flags(&["--default-ttl", "4294982296ms"]).unwrap_err();
        assert!(e.to_string().contains("default-ttl"), "{e}");
        let c = flags(&["--max-ttl", "100d"]).unwrap();
        assert_eq!(c.server.core.max_ttl_ms, u32::MAX);
    }

    #[test]
    fn fleet_settings_need_a_build_with_the_fleet() {
        for args in [
            &["--fleet-ttl", "10s"][..],
            &["--fleet-prefix", "/t"],
            &["--host-name", "pc42"],
            &["--fleet-mirror-interval", "1s"],
        ] {
            let result = flags(args);
            if crate::fleet::AVAILABLE {
                // Checked, not used, without --fleet-etcd (a flag may add
                // it to a shared file).
                assert!(result.unwrap().server.fleet.is_none(), "{args:?}");
            } else {
                let e = result.unwrap_err().to_string();
                assert!(e.contains("without the `fleet` feature"), "{args:?}: {e}");
                assert!(e.contains(&args[0][2..]), "{args:?}: {e}");
            }
        }
        // Below its minimum, fleet-ttl is refused either way.
        let e = flags(&["--fleet-ttl", "1s"]).unwrap_err().to_string();
        assert!(e.contains("fleet-ttl"), "{e}");
    }
}
