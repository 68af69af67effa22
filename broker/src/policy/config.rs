//! The policy as written in the config file: the `[[policy]]` rules and the
//! `[policy-defaults]` table, as serde reads them (unknown keys refused).
//!
//! These are shapes only: nothing here is checked beyond its type. Verbs,
//! patterns and user and group names are checked and resolved by
//! [`Policy::resolve`](super::Policy::resolve), which names the rule at
//! fault.

use std::fmt;

use serde::Deserialize;

use super::{Decision, Verb};

/// A user or group as written in a rule: a name, or a numeric id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A numeric uid or gid.
    Id(u32),
    /// A name, resolved at startup.
    Name(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Id(id) => id.fmt(f),
            Principal::Name(name) => write!(f, "{name:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Principal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user or group name (string) or a numeric id from 0 to 4294967295")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Principal, E> {
                if v.is_empty() {
                    return Err(E::custom("an empty user or group name"));
                }
                Ok(Principal::Name(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Principal, E> {
                u32::try_from(v)
                    .map(Principal::Id)
                    .map_err(|_| E::custom(format!("id {v} is out of range 0..=4294967295")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Principal, E> {
                u32::try_from(v)
                    .map(Principal::Id)
                    .map_err(|_| E::custom(format!("id {v} is out of range 0..=4294967295")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One `[[policy]]` table, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// The verbs the rule is about (see [`Verb::as_str`]), or `"*"` for
    /// every verb; at least one.
    pub verbs: Vec<String>,
    /// Resource (or queue) names or patterns the rule is about; at least one.
    pub resources: Vec<String>,
    /// Users the rule includes, by name or uid.
    #[serde(default)]
    pub users: Vec<Principal>,
    /// Groups the rule includes, by name or gid: a subject is in a group if
    /// it is its effective gid or one of its supplementary groups.
    #[serde(default)]
    pub groups: Vec<Principal>,
}

/// The `[policy-defaults]` table: for each verb, what applies to names no
/// rule mentions. A verb left out keeps its built-in default
/// ([`Verb::builtin_default`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DefaultsConfig {
    /// Default for `lease-exclusive` (built in: deny).
    pub lease_exclusive: Option<Decision>,
    /// Default for `lease-shared` (built in: allow).
    pub lease_shared: Option<Decision>,
    /// Default for `watch` (built in: allow).
    pub watch: Option<Decision>,
    /// Default for `status` (built in: allow).
    pub status: Option<Decision>,
    /// Default for `publish` (built in: allow).
    pub publish: Option<Decision>,
    /// Default for `consume` (built in: allow).
    pub consume: Option<Decision>,
    /// Default for `yield` (built in: whatever `lease-shared` decides for
    /// the subject on that name).
    #[serde(rename = "yield")]
    pub yield_: Option<Decision>,
    /// Default for `revoke` (built in: deny).
    pub revoke: Option<Decision>,
    /// Default for `queue-admin` (built in: deny).
    pub queue_admin: Option<Decision>,
}

impl DefaultsConfig {
    pub(super) fn get(&self, verb: Verb) -> Option<Decision> {
        match verb {
            Verb::LeaseExclusive => self.lease_exclusive,
            Verb::LeaseShared => self.lease_shared,
            Verb::Watch => self.watch,
            Verb::Status => self.status,
            Verb::Publish => self.publish,
            Verb::Consume => self.consume,
            Verb::Yield => self.yield_,
            Verb::Revoke => self.revoke,
            Verb::QueueAdmin => self.queue_admin,
        }
    }
}

/// The whole policy as written: the `policy` array of tables and the
/// `policy-defaults` table, both optional.
///
/// Deserializable on its own (a file holding only these two keys). To embed
/// it in a struct that has `deny_unknown_fields`, as `Settings` does, use
/// **two fields**, not `#[serde(flatten)]`: serde does not support
/// `flatten` together with `deny_unknown_fields` on the outer struct.
///
/// ```ignore
/// #[serde(default)] pub policy: Option<Vec<RuleConfig>>,          // + #[arg(skip)]
/// #[serde(default)] pub policy_defaults: Option<DefaultsConfig>,  // + #[arg(skip)]
/// // then
/// PolicyConfig { policy: s.policy.unwrap_or_default(),
///                policy_defaults: s.policy_defaults.unwrap_or_default() }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyConfig {
    /// The rules, in file order (numbered from 1).
    #[serde(default)]
    pub policy: Vec<RuleConfig>,
    /// Per-verb defaults.
    #[serde(default)]
    pub policy_defaults: DefaultsConfig,
}
