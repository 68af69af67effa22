//! Who may do what: the access policy, decided per verb from the kernel's
//! word on who is calling (uid, effective gid and supplementary groups),
//! never from anything the client says.
//!
//! It owns the policy's TOML shape ([`PolicyConfig`]), its resolution into
//! ids at startup ([`Policy::resolve`], the only step here that does I/O:
//! it looks user and group names up in the system's databases, once) and the
//! decision itself ([`Policy::check`], pure). It does not read peer
//! credentials (see [`crate::platform::peer`] and
//! [`crate::platform::groups`]), answer the client or log refusals: the
//! server does, mapping [`Denied`] to `ERROR_CODE_PERMISSION_DENIED`.
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
//!   (`[policy-defaults]`). Built-in defaults: `lease-exclusive` deny;
//!   `lease-shared`, `watch`, `status`, `publish` and `consume` allow. So by
//!   default only root and the broker's user take EXCLUSIVE leases, and
//!   anyone who can open the socket watches, reads status, takes SHARED
//!   leases and uses queues; rules grant or restrict from there.
//! - Rules are order-independent: a grant in any mentioning rule wins.
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
//! an empty `verbs` or `resources` list and a bad pattern. A name that is
//! all digits and names no user (group) is taken as the id, like chown(1).
//! On Windows a user or group is a SID (`S-1-5-21-...`) or an account name,
//! resolved with `LookupAccountNameW` and matched against the SIDs in the
//! client's token (see `platform::peer::windows_identity`).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

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
}

impl Verb {
    /// Every verb, in the order of the documentation.
    pub const ALL: [Verb; 6] = [
        Verb::LeaseExclusive,
        Verb::LeaseShared,
        Verb::Watch,
        Verb::Status,
        Verb::Publish,
        Verb::Consume,
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
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The built-in default for names no rule mentions.
    pub fn builtin_default(self) -> Decision {
        match self {
            Verb::LeaseExclusive => Decision::Deny,
            Verb::LeaseShared | Verb::Watch | Verb::Status | Verb::Publish | Verb::Consume => {
                Decision::Allow
            }
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

/// Allow or deny.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The verb is allowed.
    Allow,
    /// The verb is refused.
    Deny,
}

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
    /// The verbs the rule is about (see [`Verb::as_str`]); at least one.
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
}

impl DefaultsConfig {
    fn get(&self, verb: Verb) -> Option<Decision> {
        match verb {
            Verb::LeaseExclusive => self.lease_exclusive,
            Verb::LeaseShared => self.lease_shared,
            Verb::Watch => self.watch,
            Verb::Status => self.status,
            Verb::Publish => self.publish,
            Verb::Consume => self.consume,
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

/// A policy that cannot be used; each names the rule (from 1) at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A verb that does not exist.
    #[error("policy rule {rule}: {source}")]
    UnknownVerb {
        /// The rule, from 1.
        rule: usize,
        /// The word and the valid verbs.
        source: UnknownVerb,
    },
    /// A rule without verbs or without resources would never apply.
    #[error(
        "policy rule {rule}: `{key}` is empty; a rule needs at least one (use \"*\" for every name)"
    )]
    Empty {
        /// The rule, from 1.
        rule: usize,
        /// `verbs` or `resources`.
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

/// Where user and group names are looked up: the system's databases in the
/// broker ([`SystemNames`]), a fixed table in tests.
pub trait NameLookup {
    /// The uid of a user name; `Ok(None)` when there is no such user.
    fn user(&self, name: &str) -> Result<Option<u32>, String>;
    /// The gid of a group name; `Ok(None)` when there is no such group.
    fn group(&self, name: &str) -> Result<Option<u32>, String>;
}

/// The system's user and group databases: `getpwnam_r` / `getgrnam_r` on
/// Unix (through `nix`, so NSS sources such as LDAP count too); on Windows
/// SIDs and account names (see the module documentation).
#[derive(Copy, Clone, Debug, Default)]
pub struct SystemNames;

#[cfg(unix)]
impl NameLookup for SystemNames {
    fn user(&self, name: &str) -> Result<Option<u32>, String> {
        nix::unistd::User::from_name(name)
            .map(|u| u.map(|u| u.uid.as_raw()))
            .map_err(|e| e.to_string())
    }
    fn group(&self, name: &str) -> Result<Option<u32>, String> {
        nix::unistd::Group::from_name(name)
            .map(|g| g.map(|g| g.gid.as_raw()))
            .map_err(|e| e.to_string())
    }
}

/// Windows: a user or group is a SID (`S-1-5-21-...`) or an account name
/// (`LookupAccountNameW`), mapped to the same local ids the broker gives
/// the SIDs in its clients' tokens
/// ([`crate::platform::peer::windows_identity`]).
#[cfg(windows)]
impl NameLookup for SystemNames {
    fn user(&self, name: &str) -> Result<Option<u32>, String> {
        use crate::platform::peer::windows_identity::{account_sid, intern};
        account_sid(name).map(|sid| sid.map(|s| intern(&s)))
    }
    fn group(&self, name: &str) -> Result<Option<u32>, String> {
        self.user(name)
    }
}

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// This character.
    Char(char),
    /// Any one character (`?`).
    One,
    /// Any run of characters (`*`).
    Run,
}

/// A compiled name pattern (see the module documentation for the syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn new(source: &str) -> Result<Pattern, String> {
        if source.is_empty() {
            return Err("it is empty (use \"*\" for every name)".into());
        }
        if let Some(c) = source.chars().find(|c| c.is_control()) {
            return Err(format!(
                "it contains the control character {c:?}, which no name may contain"
            ));
        }
        let mut tokens = Vec::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => {
                    if tokens.last() == Some(&Token::Run) {
                        continue;
                    }
                    Token::Run
                }
                '?' => Token::One,
                '\\' => match chars.next() {
                    Some(next) => Token::Char(next),
                    None => return Err("it ends with a lone \\".into()),
                },
                '[' | ']' | '{' | '}' => {
                    return Err(format!(
                        "{c:?} is reserved; write \\{c} to match it literally"
                    ));
                }
                c => Token::Char(c),
            });
        }
        Ok(Pattern {
            source: source.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `name` matches. Allocates nothing, and is
    /// linear in practice: only the last `*` is ever backtracked to (names
    /// are at most 255 bytes).
    pub fn matches(&self, name: &str) -> bool {
        let p = &self.tokens;
        let next_char = |at: usize| name.get(at..).and_then(|rest| rest.chars().next());
        // Token index, and byte offset into `name`.
        let (mut pi, mut ni) = (0, 0);
        // Where to resume after the last `*`: (token after it, byte offset).
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = next_char(ni) {
            match p.get(pi) {
                Some(Token::Run) => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                }
                Some(Token::One) => {
                    pi += 1;
                    ni += c.len_utf8();
                }
                Some(Token::Char(t)) if *t == c => {
                    pi += 1;
                    ni += c.len_utf8();
                }
                _ => match star {
                    // Let the last `*` swallow one more character.
                    Some((after, from)) => {
                        let skipped = next_char(from).map_or(1, char::len_utf8);
                        pi = after;
                        ni = from + skipped;
                        star = Some((after, ni));
                    }
                    None => return false,
                },
            }
        }
        p.get(pi..)
            .is_some_and(|rest| rest.iter().all(|t| *t == Token::Run))
    }
}

/// A resolved rule.
#[derive(Clone, Debug)]
struct Rule {
    /// From 1, in file order.
    number: usize,
    verbs: [bool; 6],
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
    defaults: [Decision; 6],
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
        }
    }

    /// Checks and resolves a policy: verbs parsed, patterns compiled, user
    /// and group names looked up in the system's databases (once; a user
    /// renamed later keeps its old id here until restart).
    pub fn resolve(config: &PolicyConfig, own_uid: u32) -> Result<Policy, PolicyError> {
        Policy::resolve_with(config, own_uid, &SystemNames)
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
            let mut verbs = [false; 6];
            for v in &rc.verbs {
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
        let everything = |r: &&Rule| r.patterns.iter().any(|p| p.tokens == [Token::Run]);
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
mod tests {
    use super::*;

    const OWN: u32 = 990;

    /// A fixed user and group table.
    struct Names;
    impl NameLookup for Names {
        fn user(&self, name: &str) -> Result<Option<u32>, String> {
            Ok(match name {
                "pcmsvc" => Some(1001),
                "alice" => Some(1002),
                "broken" => return Err("database unreachable".into()),
                _ => None,
            })
        }
        fn group(&self, name: &str) -> Result<Option<u32>, String> {
            Ok(match name {
                "wheel" => Some(10),
                "operators" => Some(37),
                _ => None,
            })
        }
    }

    fn user(uid: u32) -> Subject {
        Subject {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }

    fn policy(toml_text: &str) -> Policy {
        let config: PolicyConfig = toml::from_str(toml_text).expect("valid TOML");
        Policy::resolve_with(&config, OWN, &Names).expect("valid policy")
    }

    fn resolve_err(toml_text: &str) -> PolicyError {
        let config: PolicyConfig = toml::from_str(toml_text).expect("valid TOML");
        Policy::resolve_with(&config, OWN, &Names).expect_err("an invalid policy")
    }

    #[track_caller]
    fn allowed(p: &Policy, s: &Subject, verb: Verb, name: &str) -> bool {
        p.check(s, verb, name).is_ok()
    }

    #[test]
    fn verbs_spell_as_in_the_config_and_unknown_ones_list_the_valid_ones() {
        for v in Verb::ALL {
            assert_eq!(v.as_str().parse::<Verb>(), Ok(v));
        }
        let e = "lease".parse::<Verb>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown verb \"lease\"; the verbs are lease-exclusive, lease-shared, watch, status, publish, consume"
        );
    }

    #[test]
    fn by_default_only_root_and_the_brokers_user_lease_exclusive() {
        let p = Policy::builtin(OWN);
        let nobody = user(65534);
        assert!(!allowed(&p, &nobody, Verb::LeaseExclusive, "pcm"));
        for v in [
            Verb::LeaseShared,
            Verb::Watch,
            Verb::Status,
            Verb::Publish,
            Verb::Consume,
        ] {
            assert!(allowed(&p, &nobody, v, "pcm"), "{v}");
        }
        for v in Verb::ALL {
            assert!(allowed(&p, &user(0), v, "pcm"), "root may {v}");
            assert!(
                allowed(&p, &user(OWN), v, "pcm"),
                "the broker's user may {v}"
            );
        }
        // An empty file is the built-in policy.
        let empty = policy("");
        assert!(!allowed(&empty, &nobody, Verb::LeaseExclusive, "pcm"));
        assert!(allowed(&empty, &nobody, Verb::Publish, "work"));
    }

    #[test]
    fn a_refusal_names_the_uid_the_verb_the_name_and_the_reason() {
        let p = Policy::builtin(OWN);
        let e = p
            .check(&user(65534), Verb::LeaseExclusive, "pcm")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "permission denied: uid 65534 may not lease-exclusive \"pcm\" (default for lease-exclusive)"
        );
        let p = policy(
            r#"
            [[policy]]
            verbs = ["watch"]
            resources = ["secret"]
            users = [1]
            [[policy]]
            verbs = ["watch", "status"]
            resources = ["secr*"]
            "#,
        );
        let e = p.check(&user(7), Verb::Watch, "secret").unwrap_err();
        assert_eq!(e.by, DeniedBy::Rules(vec![1, 2]));
        assert_eq!(
            e.to_string(),
            "permission denied: uid 7 may not watch \"secret\" (policy rules 1, 2)"
        );
        // Quotes and backslashes in a name are escaped, not echoed raw.
        let e = Policy::builtin(OWN)
            .check(&user(7), Verb::LeaseExclusive, "a\"b")
            .unwrap_err();
        assert!(e.to_string().contains(r#""a\"b""#), "{e}");
    }

    #[test]
    fn a_rule_grants_one_user_exclusive_on_one_resource_only() {
        let p = policy(
            r#"
            [[policy]]
            verbs = ["lease-exclusive"]
            resources = ["pcm"]
            users = ["pcmsvc"]
            "#,
        );
        let svc = user(1001);
        let other = user(1002);
        assert!(allowed(&p, &svc, Verb::LeaseExclusive, "pcm"));
        assert!(!allowed(&p, &svc, Verb::LeaseExclusive, "spool"));
        assert!(!allowed(&p, &svc, Verb::LeaseExclusive, "pcm2"));
        assert!(!allowed(&p, &other, Verb::LeaseExclusive, "pcm"));
        let e = p.check(&other, Verb::LeaseExclusive, "pcm").unwrap_err();
        assert_eq!(e.by, DeniedBy::Rules(vec![1]));
        // Other verbs on pcm keep their defaults for everyone.
        assert!(allowed(&p, &other, Verb::LeaseShared, "pcm"));
        assert!(allowed(&p, &other, Verb::Watch, "pcm"));
    }

    #[test]
    fn a_rule_with_nobody_in_it_takes_a_verb_away_from_all_but_root_and_the_broker() {
        let p = policy(
            r#"
            [[policy]]
            verbs = ["lease-shared", "watch"]
            resources = ["private.*"]
            "#,
        );
        assert!(!allowed(&p, &user(1002), Verb::LeaseShared, "private.x"));
        assert!(!allowed(&p, &user(1002), Verb::Watch, "private.x"));
        assert!(allowed(&p, &user(1002), Verb::Watch, "public"));
        assert!(allowed(&p, &user(0), Verb::Watch, "private.x"));
        assert!(allowed(&p, &user(OWN), Verb::LeaseShared, "private.x"));
    }

    #[test]
    fn an_unknown_id_is_never_privileged_and_matches_no_rule() {
        // As on Windows today: the peer's and the broker's ids both unknown.
        let config: PolicyConfig = toml::from_str(
            r#"
            [[policy]]
            verbs = ["lease-exclusive"]
            resources = ["*"]
            users = [4294967295]
            groups = [4294967295]
            "#,
        )
        .unwrap();
        let p = Policy::resolve_with(&config, UNKNOWN_ID, &Names).unwrap();
        let unknown = Subject {
            uid: UNKNOWN_ID,
            gid: UNKNOWN_ID,
            groups: vec![UNKNOWN_ID],
        };
        assert!(!allowed(&p, &unknown, Verb::LeaseExclusive, "pcm"));
        assert!(allowed(&p, &unknown, Verb::LeaseShared, "pcm"));
        assert!(p.check_every_name(&unknown, Verb::Watch).is_ok());
    }

    #[test]
    fn groups_match_the_effective_gid_or_a_supplementary_group() {
        let p = policy(
            r#"
            [[policy]]
            verbs = ["lease-exclusive"]
            resources = ["pcm"]
            groups = ["wheel", 500]
            "#,
        );
        let by_gid = Subject {
            uid: 2000,
            gid: 10,
            groups: vec![],
        };
        let by_supplementary = Subject {
            uid: 2001,
            gid: 2001,
            groups: vec![4, 500],
        };
        let neither = Subject {
            uid: 2002,
            gid: 2002,
            groups: vec![4, 11],
        };
        assert!(allowed(&p, &by_gid, Verb::LeaseExclusive, "pcm"));
        assert!(allowed(&p, &by_supplementary, Verb::LeaseExclusive, "pcm"));
        assert!(!allowed(&p, &neither, Verb::LeaseExclusive, "pcm"));
        // A uid equal to a listed gid does not count: users and groups are
        // different namespaces.
        assert!(!allowed(
            &p,
            &Subject {
                uid: 10,
                gid: 3,
                groups: vec![]
            },
            Verb::LeaseExclusive,
            "pcm"
        ));
    }

    #[test]
    fn any_mentioning_rule_that_includes_the_subject_grants() {
        let p = policy(
            r#"
            [[policy]]
            verbs = ["publish"]
            resources = ["jobs.*"]
            users = ["pcmsvc"]
            [[policy]]
            verbs = ["publish", "consume"]
            resources = ["jobs.urgent"]
            users = ["alice"]
            [policy-defaults]
            publish = "deny"
            "#,
        );
        let (svc, alice, other) = (user(1001), user(1002), user(3000));
        assert!(allowed(&p, &svc, Verb::Publish, "jobs.urgent"));
        assert!(allowed(&p, &alice, Verb::Publish, "jobs.urgent"));
        assert!(!allowed(&p, &alice, Verb::Publish, "jobs.normal"));
        assert!(!allowed(&p, &other, Verb::Publish, "jobs.urgent"));
        // No rule mentions "notices": the default (deny) applies.
        let e = p.check(&svc, Verb::Publish, "notices").unwrap_err();
        assert_eq!(e.by, DeniedBy::Default);
        // consume on jobs.urgent is mentioned by rule 2 only.
        assert!(allowed(&p, &alice, Verb::Consume, "jobs.urgent"));
        assert!(!allowed(&p, &svc, Verb::Consume, "jobs.urgent"));
        assert!(allowed(&p, &svc, Verb::Consume, "jobs.normal"));
    }

    #[test]
    fn defaults_can_be_changed_per_verb() {
        let p = policy(
            r#"
            [policy-defaults]
            lease-exclusive = "allow"
            watch = "deny"
            "#,
        );
        let u = user(1002);
        assert!(allowed(&p, &u, Verb::LeaseExclusive, "pcm"));
        assert!(!allowed(&p, &u, Verb::Watch, "pcm"));
        assert!(allowed(&p, &u, Verb::Status, "pcm"));
        assert_eq!(p.default_for(Verb::Watch), Decision::Deny);
        assert_eq!(p.default_for(Verb::LeaseShared), Decision::Allow);
    }

    #[test]
    fn patterns_match_whole_names_with_star_question_mark_and_escapes() {
        let m = |p: &str, n: &str| Pattern::new(p).unwrap().matches(n);
        assert!(m("pcm", "pcm"));
        assert!(!m("pcm", "pcm2"));
        assert!(!m("pcm", "xpcm"));
        assert!(m("jobs.*", "jobs."));
        assert!(m("jobs.*", "jobs.1.2"));
        assert!(!m("jobs.*", "jobs"));
        assert!(m("*", "anything at all"));
        assert!(m("*.dead", "work.dead"));
        assert!(!m("*.dead", "work.dead.x"));
        assert!(m("a*b*c", "aXXbYYbc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("job?", "job7"));
        assert!(!m("job?", "job"));
        assert!(!m("job?", "job77"));
        // `?` is one character, not one byte.
        assert!(m("caf?", "café"));
        assert!(m("**a**", "a"));
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m(r"what\?", "what?"));
        assert!(m(r"a\\b", r"a\b"));
        assert!(m(r"\[x\]", "[x]"));
        // Backtracking stays cheap on a pathological pattern.
        let long = "a".repeat(255);
        assert!(!m("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (pattern, reason) in [
            ("", "empty"),
            (r"a\", "lone"),
            ("a[0-9]", "reserved"),
            ("{a,b}", "reserved"),
            ("a\nb", "control"),
        ] {
            let e = Pattern::new(pattern).unwrap_err();
            assert!(e.contains(reason), "{pattern:?}: {e}");
        }
        let e = resolve_err(
            r#"
            [[policy]]
            verbs = ["watch"]
            resources = ["ok"]
            [[policy]]
            verbs = ["watch"]
            resources = ["ok", "bad["]
            "#,
        );
        assert!(
            matches!(&e, PolicyError::BadPattern { rule: 2, pattern, .. } if pattern == "bad["),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("policy rule 2: bad pattern \"bad[\""),
            "{e}"
        );
    }

    #[test]
    fn resolve_errors_name_the_rule_and_what_is_wrong() {
        let e = resolve_err(
            r#"
            [[policy]]
            verbs = ["lease-exclusive", "lease"]
            resources = ["pcm"]
            "#,
        );
        assert_eq!(
            e.to_string(),
            "policy rule 1: unknown verb \"lease\"; the verbs are lease-exclusive, lease-shared, watch, status, publish, consume"
        );
        let e = resolve_err(
            r#"
            [[policy]]
            verbs = ["watch"]
            resources = ["pcm"]
            users = ["pcmsvc"]
            [[policy]]
            verbs = ["watch"]
            resources = ["pcm"]
            users = ["pcmsvc", "mallory"]
            "#,
        );
        assert_eq!(e.to_string(), "policy rule 2: unknown user \"mallory\"");
        let e = resolve_err(
            r#"
            [[policy]]
            verbs = ["watch"]
            resources = ["pcm"]
            groups = ["wheel", "nogroup-here"]
            "#,
        );
        assert_eq!(
            e,
            PolicyError::UnknownGroup {
                rule: 1,
                name: "nogroup-here".into()
            }
        );
        // The fake lookup fails the same way on every platform.
        {
            let e = resolve_err(
                r#"
            [[policy]]
            verbs = ["watch"]
            resources = ["pcm"]
            users = ["broken"]
            "#,
            );
            assert!(
                e.to_string()
                    .contains("cannot look up user \"broken\": database unreachable"),
                "{e}"
            );
        }
        let e = resolve_err("[[policy]]\nverbs = []\nresources = [\"pcm\"]");
        assert!(e.to_string().contains("`verbs` is empty"), "{e}");
        let e = resolve_err("[[policy]]\nverbs = [\"watch\"]\nresources = []");
        assert!(e.to_string().contains("`resources` is empty"), "{e}");
    }

    #[test]
    fn names_resolve_to_ids_and_digit_names_fall_back_to_ids() {
        let p = policy(
            r#"
            [[policy]]
            verbs = ["lease-exclusive"]
            resources = ["pcm"]
            users = ["alice", "4242", 77]
            groups = ["operators"]
            "#,
        );
        assert!(allowed(&p, &user(1002), Verb::LeaseExclusive, "pcm"));
        assert!(allowed(&p, &user(4242), Verb::LeaseExclusive, "pcm"));
        assert!(allowed(&p, &user(77), Verb::LeaseExclusive, "pcm"));
        let op = Subject {
            uid: 5000,
            gid: 5000,
            groups: vec![37],
        };
        assert!(allowed(&p, &op, Verb::LeaseExclusive, "pcm"));
    }

    #[cfg(unix)]
    #[test]
    fn the_system_databases_know_root_and_not_a_made_up_name() {
        assert_eq!(SystemNames.user("root"), Ok(Some(0)));
        assert_eq!(
            SystemNames.user("turnstile-no-such-user-x9"),
            Ok(None),
            "a made-up user"
        );
        let config: PolicyConfig = toml::from_str(
            r#"
            [[policy]]
            verbs = ["lease-exclusive"]
            resources = ["pcm"]
            users = ["root", "turnstile-no-such-user-x9"]
            "#,
        )
        .unwrap();
        let e = Policy::resolve(&config, OWN).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy rule 1: unknown user \"turnstile-no-such-user-x9\""
        );
    }

    #[test]
    fn every_name_requests_are_allowed_only_when_no_name_could_be_refused() {
        let p = policy(
            r#"
            [[policy]]
            verbs = ["watch"]
            resources = ["secret"]
            users = ["alice"]
            [[policy]]
            verbs = ["status"]
            resources = ["*"]
            users = ["pcmsvc"]
            [policy-defaults]
            status = "deny"
            "#,
        );
        let (svc, alice, other) = (user(1001), user(1002), user(3000));
        assert!(p.check_every_name(&alice, Verb::Watch).is_ok());
        let e = p.check_every_name(&other, Verb::Watch).unwrap_err();
        assert_eq!(e.by, DeniedBy::Rules(vec![1]));
        assert_eq!(
            e.to_string(),
            "permission denied: uid 3000 may not watch every name (policy rule 1)"
        );
        assert!(p.check_every_name(&svc, Verb::Status).is_ok());
        assert!(p.check_every_name(&alice, Verb::Status).is_err());
        assert!(p.check_every_name(&other, Verb::LeaseShared).is_ok());
        assert!(p.check_every_name(&user(0), Verb::Status).is_ok());
        let builtin = Policy::builtin(OWN);
        let e = builtin
            .check_every_name(&other, Verb::LeaseExclusive)
            .unwrap_err();
        assert_eq!(e.by, DeniedBy::Default);
    }

    #[test]
    fn the_toml_shape_refuses_unknown_keys_and_bad_values() {
        let c: PolicyConfig = toml::from_str(
            r#"
            [[policy]]
            verbs = ["lease-exclusive"]
            resources = ["pcm", "jobs.*"]
            users = ["pcmsvc", 1001]
            groups = ["wheel", 10]
            [policy-defaults]
            publish = "deny"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.policy[0].users,
            vec![Principal::Name("pcmsvc".into()), Principal::Id(1001)]
        );
        assert_eq!(c.policy[0].groups[1], Principal::Id(10));
        assert_eq!(c.policy_defaults.publish, Some(Decision::Deny));
        assert_eq!(c.policy_defaults.watch, None);

        for (text, expect) in [
            (
                "[[policy]]\nverbs = [\"watch\"]\nresources = [\"a\"]\nuser = [1]",
                "unknown field `user`",
            ),
            (
                "[policy-defaults]\nlease = \"deny\"",
                "unknown field `lease`",
            ),
            (
                "[policy-defaults]\nwatch = \"maybe\"",
                "unknown variant `maybe`",
            ),
            ("polcy = []", "unknown field `polcy`"),
            ("[[policy]]\nresources = [\"a\"]", "missing field `verbs`"),
            (
                "[[policy]]\nverbs = [\"watch\"]\nresources = [\"a\"]\nusers = [-1]",
                "out of range",
            ),
            (
                "[[policy]]\nverbs = [\"watch\"]\nresources = [\"a\"]\nusers = [4294967296]",
                "out of range",
            ),
            (
                "[[policy]]\nverbs = [\"watch\"]\nresources = [\"a\"]\nusers = [\"\"]",
                "empty user or group name",
            ),
            (
                "[[policy]]\nverbs = [\"watch\"]\nresources = [\"a\"]\ngroups = [true]",
                "a user or group name",
            ),
        ] {
            let e = toml::from_str::<PolicyConfig>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
    }

    #[test]
    fn it_embeds_as_two_fields_of_a_strict_settings_struct() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct Settings {
            max_connections: Option<usize>,
            #[serde(default)]
            policy: Option<Vec<RuleConfig>>,
            #[serde(default)]
            policy_defaults: Option<DefaultsConfig>,
        }
        let s: Settings = toml::from_str(
            r#"
            max-connections = 5
            [[policy]]
            verbs = ["consume"]
            resources = ["work"]
            groups = [10]
            [policy-defaults]
            consume = "deny"
            "#,
        )
        .unwrap();
        assert_eq!(s.max_connections, Some(5));
        let config = PolicyConfig {
            policy: s.policy.unwrap_or_default(),
            policy_defaults: s.policy_defaults.unwrap_or_default(),
        };
        let p = Policy::resolve_with(&config, OWN, &Names).unwrap();
        let wheel = Subject {
            uid: 3000,
            gid: 10,
            groups: vec![],
        };
        assert!(allowed(&p, &wheel, Verb::Consume, "work"));
        assert!(!allowed(&p, &user(3000), Verb::Consume, "work"));
        assert!(!allowed(&p, &wheel, Verb::Consume, "other"));
        // Unknown keys are still refused around it.
        assert!(toml::from_str::<Settings>("polici = 1").is_err());
    }
}
