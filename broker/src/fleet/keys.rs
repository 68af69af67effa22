//! Where the fleet keeps things in etcd. Every key is under the prefix
//! (`--fleet-prefix`, default `/turnstile`):
//!
//! - `PREFIX/hosts/HOST`: the broker's description ([`super::records::HostRecord`]);
//! - `PREFIX/hosts/HOST/resources/NAME`: one resource's state
//!   ([`super::records::ResourceRecord`]);
//! - `PREFIX/global/NAME/HOST/ETCDLEASE-LEASE`: one request of a host for a
//!   `global/` resource ([`super::records::QueueRecord`]), ordered by its
//!   create revision.
//!
//! Every key is bound to its broker's etcd lease, so a dead host's keys
//! vanish with it. Names and host names are escaped (`%` and `/` as
//! `%25` and `%2F`), so that one resource's keys are never a prefix of
//! another's (`global/a` and `global/a/b`) and a key splits cleanly.

/// Escapes `%` and `/` so that `s` is one path segment of a key.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for a segment `escape` cannot give.
pub fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "2F" => '/',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The key layout under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// `PREFIX/hosts/`: every host's keys.
    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// `PREFIX/hosts/HOST`.
    pub fn host(&self, host: &str) -> String {
        format!("{}{}", self.hosts(), escape(host))
    }

    /// `PREFIX/hosts/HOST/resources/NAME`.
    pub fn resource(&self, host: &str, name: &str) -> String {
        format!("{}/resources/{}", self.host(host), escape(name))
    }

    /// `PREFIX/global/`: every global queue.
    pub fn global(&self) -> String {
        format!("{}/global/", self.prefix)
    }

    /// `PREFIX/global/NAME/HOST/ETCDLEASE-LEASE`: a request's key.
    pub fn waiter(&self, name: &str, host: &str, etcd_lease: i64, lease: u64) -> String {
        format!(
            "{}{}/{}/{:x}-{}",
            self.global(),
            escape(name),
            escape(host),
            etcd_lease,
            lease
        )
    }

    /// The resource a key under [`Keys::global`] belongs to.
    pub fn waiter_resource(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.global())?;
        let (name, _) = rest.split_once('/')?;
        unescape(name)
    }

    /// What a key under [`Keys::hosts`] is: a host's description, or one
    /// of its resources.
    pub fn host_key(&self, key: &str) -> Option<HostKey> {
        let rest = key.strip_prefix(&self.hosts())?;
        match rest.split_once('/') {
            None => Some(HostKey::Host(unescape(rest)?)),
            Some((host, tail)) => {
                let name = tail.strip_prefix("resources/")?;
                Some(HostKey::Resource(unescape(host)?, unescape(name)?))
            }
        }
    }
}

/// A key under `PREFIX/hosts/`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKey {
    /// `PREFIX/hosts/HOST`.
    Host(String),
    /// `PREFIX/hosts/HOST/resources/NAME`.
    Resource(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_and_percents_round_trip_and_never_nest() {
        let k = Keys::new("/turnstile/");
        for name in ["global/a", "global/a/b", "50%/x", "%2F"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
            let key = k.waiter(name, "host/1", 0x1f, 7);
            assert_eq!(k.waiter_resource(&key).as_deref(), Some(name));
        }
        let a = format!("{}{}/", k.global(), escape("global/a"));
        assert!(!k.waiter("global/a/b", "h", 1, 1).starts_with(&a));
        assert_eq!(
            k.host_key(&k.resource("h/1", "global/x")),
            Some(HostKey::Resource("h/1".into(), "global/x".into()))
        );
        assert_eq!(k.host_key(&k.host("h")), Some(HostKey::Host("h".into())));
        assert_eq!(unescape("%zz"), None);
        assert_eq!(unescape("%2"), None);
    }
}
