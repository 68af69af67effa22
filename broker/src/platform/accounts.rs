//! User and group names to ids, from the system's account databases: what
//! the policy's `users` and `groups` are resolved with, once, at startup.
//!
//! It owns the lookup and nothing else: the policy decides what the ids
//! mean (see `crate::policy`), and it is the policy that calls in here,
//! never the other way round. Tests of the policy give it a fixed table
//! through the same [`NameLookup`] trait.

/// Where user and group names are looked up: the system's databases in the
/// broker ([`SystemAccounts`]), a fixed table in tests.
pub trait NameLookup {
    /// The uid of a user name; `Ok(None)` when there is no such user.
    fn user(&self, name: &str) -> Result<Option<u32>, String>;
    /// The gid of a group name; `Ok(None)` when there is no such group.
    fn group(&self, name: &str) -> Result<Option<u32>, String>;
}

/// The system's user and group databases: `getpwnam_r` / `getgrnam_r` on
/// Unix (through `nix`, so NSS sources such as LDAP count too); on Windows
/// a user or group is a SID (`S-1-5-21-...`) or an account name.
#[derive(Copy, Clone, Debug, Default)]
pub struct SystemAccounts;

#[cfg(unix)]
impl NameLookup for SystemAccounts {
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
impl NameLookup for SystemAccounts {
    fn user(&self, name: &str) -> Result<Option<u32>, String> {
        use super::peer::windows_identity::{account_sid, intern};
        account_sid(name).map(|sid| sid.map(|s| intern(&s)))
    }
    fn group(&self, name: &str) -> Result<Option<u32>, String> {
        self.user(name)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_system_databases_know_root_and_not_a_made_up_name() {
        assert_eq!(SystemAccounts.user("root"), Ok(Some(0)));
        assert_eq!(
            SystemAccounts.user("turnstile-no-such-user-x9"),
            Ok(None),
            "a made-up user"
        );
    }
}
