//! Who may do what: the access policy, decided per verb from the kernel's
//! word on who is calling (uid, effective gid and supplementary groups),
//! never from anything the client says.
//!
//! This file owns the decision ([`Policy::check`], pure) and the resolution
//! of the written policy into ids at startup ([`Policy::resolve`], the only
//! step that does I/O: it looks user and group names up once, through
//! [`NameLookup`], which `platform/accounts.rs` implements on the system's
//! databases). The TOML shapes are in `config.rs`, the name patterns in
//! `pattern.rs`. It does not read peer credentials (the platform does:
//! [`crate::platform::peer`], turned into a [`Subject`] here with `From`),
//! answer the client or log refusals: the server does, mapping [`Denied`]
//! to `ERROR_CODE_PERMISSION_DENIED`. Nothing under `platform/` imports
//! this module.
//!
//! # Semantics
//!
//! - **Root (uid 0) and the broker's own uid may do everything.** No rule
//!   can restrict them. An id the platform could not tell
//!   ([`UNKNOWN_ID`]) is never privileged and matches no rule.
//! - Otherwise, for a verb on a name (a resource, or a queue for
//!   `publish` and `consume`): the rules that list the verb **and** have a
//!   pattern matching the name *mention* the pair. If any rule mentions it,
//!   the verb is allowed iff at least one of those rules includes the
//!   subject: by uid (`users`), or by effective gid or a supplementary group
//!   (`groups`). A rule with neither `users` nor `groups` includes nobody:
//!   it takes the verb on those names away from everyone but root and the
//!   broker's user.
//! - If no rule mentions the pair, the verb's default applies
//!   (`[policy-defaults]`). Built-in defaults: `lease-exclusive`,
//!   `revoke` and `queue-admin` (purge a queue, move its dead letters
//!   back: more than consuming) deny; `lease-shared`, `watch`, `status`, `publish` and
//!   `consume` allow; `yield` (ask the holders of a resource to make way)
//!   follows `lease-shared` on the same name. So by default only root and
//!   the broker's user take EXCLUSIVE leases and revoke, and anyone who can
//!   open the socket watches, reads status, takes SHARED leases, asks
//!   holders to yield and uses queues; rules grant or restrict from there.
//! - Rules are order-independent: a grant in any mentioning rule wins.
//! - `verbs = ["*"]` is every verb, those a later version adds included
//!   (a rule that restricts then restricts them too, one that grants
//!   grants them). `users` and `groups` take names and ids only: `"*"`
//!   there is refused, since a rule includes only whom it names.
//! - Patterns are matched against the whole name: `*` matches any run of
//!   characters (also none), `?` exactly one character, `\` makes the next
//!   character literal (`\*`, `\?`, `\\`). `[`, `]`, `{` and `}` are
//!   reserved for later syntax and must be escaped to be matched literally.
//! - Rules are numbered from 1 in file order, in errors and refusals alike.
//! - A request about every name at once (a status or watch of everything)
//!   is checked with [`Policy::check_every_name`].
//!
//! # TOML
//!
//! ```toml
//! [[policy]]
//! verbs = ["lease-exclusive"]
//! resources = ["pcm", "jobs.*"]      # names or patterns (for queues: the queue name)
//! users = ["pcmsvc", 1001]           # names or ids
//! groups = ["wheel", 10]
//!
//! [policy-defaults]                  # per verb, for names no rule mentions
//! publish = "deny"
//! ```
//!
//! User and group names are resolved to ids once, at startup; an unknown
//! name is an error naming the rule and the name, as are an unknown verb,
//! an empty `verbs` or `resources` list, a `"*"` among users or groups and
//! a bad pattern. A name that is all digits and names no user (group) is
//! taken as the id, like chown(1).
//! On Windows a user or group is a SID (`S-1-5-21-...`) or an account name,
//! resolved with `LookupAccountNameW` and matched against the SIDs in the
//! client's token (see `platform::peer::windows_identity`).

mod config;
mod pattern;

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

pub use self::config::{DefaultsConfig, PolicyConfig, Principal, RuleConfig};
pub use self::pattern::Pattern;
pub use crate::platform::accounts::{NameLookup, SystemAccounts};
use crate::platform::peer::PeerCredentials;

/// An operation the policy decides. Each is decided separately per name:
/// being allowed to wait for a resource does not mean being allowed to
/// hold it alone.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// Take (or queue for) an EXCLUSIVE lease on a resource.
    LeaseExclusive,
    /// Take (or queue for) a SHARED lease on a resource.
    LeaseShared,
    /// Subscribe to a resource's state changes.
    Watch,
    /// Read a resource's state.
    Status,
    /// Publish to a queue.
    Publish,
    /// Consume from a queue.
    Consume,
    /// Ask the holders of a resource to make way (`RequestYield`).
    Yield,
    /// Take the lease of a holder that did not make way in time
    /// (`RequestYield` with `revoke`).
    Revoke,
    /// Change a queue for everyone: drop its messages (`PurgeQueue`),
    /// move its dead letters back (`RequeueDead`). More than `consume`,
    /// which only takes messages one by one as their consumer.
    QueueAdmin,
}

impl Verb {
    /// Every verb, in the order of the documentation.
    pub const ALL: [Verb; 9] = [
        Verb::LeaseExclusive,
        Verb::LeaseShared,
        Verb::Watch,
        Verb::Status,
        Verb::Publish,
        Verb::Consume,
        Verb::Yield,
        Verb::Revoke,
        Verb::QueueAdmin,
    ];

    /// The verb as written in the config file and in refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::LeaseExclusive => "lease-exclusive",
            Verb::LeaseShared => "lease-shared",
            Verb::Watch => "watch",
            Verb::Status => "status",
            Verb::Publish => "publish",
            Verb::Consume => "consume",
            Verb::Yield => "yield",
            Verb::Revoke => "revoke",
            Verb::QueueAdmin => "queue-admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The built-in default for names no rule mentions.
    pub fn builtin_default(self) -> Decision {
        match self {
            Verb::LeaseExclusive | Verb::Revoke | Verb::QueueAdmin => Decision::Deny,
            // Unless set, `yield` follows `lease-shared` name by name (see
            // `Policy::check`); this is the answer for every name at once.
            Verb::LeaseShared
            | Verb::Watch
            | Verb::Status
            | Verb::Publish
            | Verb::Consume
            | Verb::Yield => Decision::Allow,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a verb; its message lists the valid ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown verb {verb:?}; the verbs are {}", valid_verbs())]
pub struct UnknownVerb {
    /// What was written.
    pub verb: String,
}

fn valid_verbs() -> String {
    Verb::ALL.map(Verb::as_str).join(", ")
}

impl FromStr for Verb {
    type Err = UnknownVerb;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVerb {
                verb: s.to_string(),
            })
    }
}

/// What a rule's `verbs` hold for every verb.
pub const EVERY_VERB: &str = "*";

/// The id a platform reports when it cannot tell (`PeerCredentials` on
/// Windows until SIDs are mapped; `(uid_t)-1` is no valid id on Unix
/// either). It is never privileged and matches no rule, even one that lists
/// 4294967295: an unknown caller gets the defaults and nothing more. (On
/// Windows the broker's own id is unknown too, so without this every
/// caller would count as the broker's own user.)
pub const UNKNOWN_ID: u32 = u32::MAX;

/// Who is calling, as the kernel says: never taken from a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary groups (may repeat `gid`; may be empty when the
    /// platform cannot tell, which only ever denies more).
    pub groups: Vec<u32>,
}

impl From<&PeerCredentials> for Subject {
    fn from(peer: &PeerCredentials) -> Subject {
        Subject {
            uid: peer.uid,
            gid: peer.gid,
            groups: peer.groups.clone(),
        }
    }
}

/// Allow or deny.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The verb is allowed.
    Allow,
    /// The verb is refused.
    Deny,
}

/// A policy that cannot be used; each names the rule (from 1) at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A verb that does not exist.
    #[error("policy rule {rule}: {source}, or \"*\" for every verb")]
    UnknownVerb {
        /// The rule, from 1.
        rule: usize,
        /// The word and the valid verbs.
        source: UnknownVerb,
    },
    /// A rule without verbs or without resources would never apply.
    #[error(
        "policy rule {rule}: `{key}` is empty; a rule needs at least one (use \"*\" for every {})",
        if *key == "verbs" { "verb" } else { "name" }
    )]
    Empty {
        /// The rule, from 1.
        rule: usize,
        /// `verbs` or `resources`.
        key: &'static str,
    },
    /// `"*"` among a rule's users or groups: they are names or ids, not
    /// patterns.
    #[error(
        "policy rule {rule}: `{key}` cannot hold \"*\": users and groups are names or ids, not \
         patterns, and a rule includes only those it names"
    )]
    Wildcard {
        /// The rule, from 1.
        rule: usize,
        /// `users` or `groups`.
        key: &'static str,
    },
    /// A pattern that cannot be compiled.
    #[error("policy rule {rule}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The rule, from 1.
        rule: usize,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A user name that names no user on this system.
    #[error("policy rule {rule}: unknown user {name:?}")]
    UnknownUser {
        /// The rule, from 1.
        rule: usize,
        /// The name.
        name: String,
    },
    /// A group name that names no group on this system.
    #[error("policy rule {rule}: unknown group {name:?}")]
    UnknownGroup {
        /// The rule, from 1.
        rule: usize,
        /// The name.
        name: String,
    },
    /// The user or group database could not be read.
    #[error("policy rule {rule}: cannot look up {what} {name:?}: {reason}")]
    Lookup {
        /// The rule, from 1.
        rule: usize,
        /// "user" or "group".
        what: &'static str,
        /// The name.
        name: String,
        /// The system's error.
        reason: String,
    },
}

/// A resolved rule.
#[derive(Clone, Debug)]
struct Rule {
    /// From 1, in file order.
    number: usize,
    verbs: [bool; Verb::ALL.len()],
    patterns: Vec<Pattern>,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Rule {
    fn mentions(&self, verb: Verb, name: &str) -> bool {
        self.verbs[verb.index()] && self.patterns.iter().any(|p| p.matches(name))
    }

    fn includes(&self, s: &Subject) -> bool {
        let known = |id: &u32| *id != UNKNOWN_ID;
        (known(&s.uid) && self.uids.contains(&s.uid))
            || (known(&s.gid) && self.gids.contains(&s.gid))
            || s.groups
                .iter()
                .filter(|g| known(g))
                .any(|g| self.gids.contains(g))
    }
}

/// The policy in force: resolved rules and defaults. Cheap to consult;
/// built once at startup.
#[derive(Clone, Debug)]
pub struct Policy {
    own_uid: u32,
    rules: Vec<Rule>,
    defaults: [Decision; Verb::ALL.len()],
    /// `[policy-defaults] yield` was set: it no longer follows `lease-shared`.
    yield_default_set: bool,
}

/// Why a verb was refused: the rules that mention it and include nobody
/// like the subject, or the verb's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeniedBy {
    /// These rules (numbered from 1) mention the verb and the name, and
    /// none includes the subject.
    Rules(Vec<usize>),
    /// No rule mentions the verb and the name; the verb's default is deny.
    Default,
}

/// A refusal: who may not do what, on what, and why. Its `Display` is the
/// message for `ERROR_CODE_PERMISSION_DENIED` and for the log, e.g.
/// `permission denied: uid 65534 may not lease-exclusive "pcm" (default for
/// lease-exclusive)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    /// The caller's uid.
    pub uid: u32,
    /// The verb refused.
    pub verb: Verb,
    /// The name it was refused on; `None` for a request about every name.
    pub name: Option<String>,
    /// Why.
    pub by: DeniedBy,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "permission denied: uid {} may not {} ",
            self.uid, self.verb
        )?;
        match &self.name {
            Some(name) => write!(f, "{name:?}")?,
            None => f.write_str("every name")?,
        }
        match &self.by {
            DeniedBy::Rules(rules) => {
                let list: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
                let s = if rules.len() == 1 { "" } else { "s" };
                write!(f, " (policy rule{s} {})", list.join(", "))
            }
            DeniedBy::Default => write!(f, " (default for {})", self.verb),
        }
    }
}

impl Policy {
    /// The built-in policy: no rules, built-in defaults.
    pub fn builtin(own_uid: u32) -> Policy {
        Policy {
            own_uid,
            rules: Vec::new(),
            defaults: Verb::ALL.map(Verb::builtin_default),
            yield_default_set: false,
        }
    }

    /// Checks and resolves a policy: verbs parsed, patterns compiled, user
    /// and group names looked up in the system's databases (once; a user
    /// renamed later keeps its old id here until restart).
    pub fn resolve(config: &PolicyConfig, own_uid: u32) -> Result<Policy, PolicyError> {
        Policy::resolve_with(config, own_uid, &SystemAccounts)
    }

    /// As [`Policy::resolve`], with names looked up in `names`.
    pub fn resolve_with(
        config: &PolicyConfig,
        own_uid: u32,
        names: &dyn NameLookup,
    ) -> Result<Policy, PolicyError> {
        let mut rules = Vec::with_capacity(config.policy.len());
        for (i, rc) in config.policy.iter().enumerate() {
            let number = i + 1;
            if rc.verbs.is_empty() {
                return Err(PolicyError::Empty {
                    rule: number,
                    key: "verbs",
                });
            }
            if rc.resources.is_empty() {
                return Err(PolicyError::Empty {
                    rule: number,
                    key: "resources",
                });
            }
            let mut verbs = [false; Verb::ALL.len()];
            for v in &rc.verbs {
                if v == EVERY_VERB {
                    verbs = [true; Verb::ALL.len()];
                    continue;
                }
                let verb: Verb = v.parse().map_err(|source| PolicyError::UnknownVerb {
                    rule: number,
                    source,
                })?;
                verbs[verb.index()] = true;
            }
            let patterns = rc
                .resources
                .iter()
                .map(|p| {
                    Pattern::new(p).map_err(|reason| PolicyError::BadPattern {
                        rule: number,
                        pattern: p.clone(),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let uids = rc
                .users
                .iter()
                .map(|p| resolve_principal(number, p, Kind::User, names))
                .collect::<Result<Vec<_>, _>>()?;
            let gids = rc
                .groups
                .iter()
                .map(|p| resolve_principal(number, p, Kind::Group, names))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                number,
                verbs,
                patterns,
                uids,
                gids,
            });
        }
        let defaults = Verb::ALL.map(|v| {
            config
                .policy_defaults
                .get(v)
                .unwrap_or_else(|| v.builtin_default())
        });
        Ok(Policy {
            own_uid,
            rules,
            defaults,
            yield_default_set: config.policy_defaults.yield_.is_some(),
        })
    }

    /// The broker's own uid, trusted like root.
    pub fn own_uid(&self) -> u32 {
        self.own_uid
    }

    /// What applies to `verb` on names no rule mentions.
    pub fn default_for(&self, verb: Verb) -> Decision {
        self.defaults[verb.index()]
    }

    fn privileged(&self, s: &Subject) -> bool {
        s.uid != UNKNOWN_ID && (s.uid == 0 || s.uid == self.own_uid)
    }

    /// May `subject` apply `verb` to `name`? See the module documentation
    /// for the rules.
    pub fn check(&self, subject: &Subject, verb: Verb, name: &str) -> Result<(), Denied> {
        if self.privileged(subject) {
            return Ok(());
        }
        let mut mentioning = Vec::new();
        for rule in self.rules.iter().filter(|r| r.mentions(verb, name)) {
            if rule.includes(subject) {
                return Ok(());
            }
            mentioning.push(rule.number);
        }
        if verb == Verb::Yield && mentioning.is_empty() && !self.yield_default_set {
            // Whoever may take a SHARED lease here may ask its holders.
            return self
                .check(subject, Verb::LeaseShared, name)
                .map_err(|denied| Denied { verb, ..denied });
        }
        self.verdict(subject, verb, Some(name), mentioning)
    }

    /// May `subject` apply `verb` to every name at once (a status or watch
    /// of everything)? Sound, not complete: allowed when the subject is
    /// privileged; or a rule listing the verb with the pattern `*` includes
    /// it; or the verb's default is allow and every rule listing the verb
    /// includes it. Otherwise refused, naming the rules that exclude it (or
    /// the default): ask for the names one by one instead.
    pub fn check_every_name(&self, subject: &Subject, verb: Verb) -> Result<(), Denied> {
        if self.privileged(subject) {
            return Ok(());
        }
        let listing: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.verbs[verb.index()])
            .collect();
        let everything = |r: &&Rule| r.patterns.iter().any(Pattern::matches_everything);
        if listing.iter().any(|r| everything(r) && r.includes(subject)) {
            return Ok(());
        }
        let excluding: Vec<usize> = listing
            .iter()
            .filter(|r| !r.includes(subject))
            .map(|r| r.number)
            .collect();
        self.verdict(subject, verb, None, excluding)
    }

    /// The answer once no rule granted: refused by the rules in `against`
    /// if there are any, else by the verb's default.
    fn verdict(
        &self,
        subject: &Subject,
        verb: Verb,
        name: Option<&str>,
        against: Vec<usize>,
    ) -> Result<(), Denied> {
        let by = if !against.is_empty() {
            DeniedBy::Rules(against)
        } else if self.default_for(verb) == Decision::Allow {
            return Ok(());
        } else {
            DeniedBy::Default
        };
        Err(Denied {
            uid: subject.uid,
            verb,
            name: name.map(str::to_string),
            by,
        })
    }
}

#[derive(Copy, Clone)]
enum Kind {
    User,
    Group,
}

fn resolve_principal(
    rule: usize,
    p: &Principal,
    kind: Kind,
    names: &dyn NameLookup,
) -> Result<u32, PolicyError> {
    let name = match p {
        Principal::Id(id) => return Ok(*id),
        // Refused before any lookup, so that a file means the same on
        // every system.
        Principal::Name(name) if name == "*" => {
            return Err(PolicyError::Wildcard {
                rule,
                key: match kind {
                    Kind::User => "users",
                    Kind::Group => "groups",
                },
            });
        }
        Principal::Name(name) => name,
    };
    let (what, found) = match kind {
        Kind::User => ("user", names.user(name)),
        Kind::Group => ("group", names.group(name)),
    };
    let numeric = name.parse::<u32>().ok();
    match found {
        Ok(Some(id)) => Ok(id),
        // Like chown(1): digits that name nobody are the id.
        Ok(None) | Err(_) if numeric.is_some() => Ok(numeric.unwrap_or_default()),
        Ok(None) => Err(match kind {
            Kind::User => PolicyError::UnknownUser {
                rule,
                name: name.clone(),
            },
            Kind::Group => PolicyError::UnknownGroup {
                rule,
                name: name.clone(),
            },
        }),
        Err(reason) => Err(PolicyError::Lookup {
            rule,
            what,
            name: name.clone(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests;
