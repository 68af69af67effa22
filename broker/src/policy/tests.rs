//! The policy's tests: decisions, resolution errors, patterns and the TOML
//! shape, with a fixed table of users and groups (no system lookups).

use serde::Deserialize;

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
        "unknown verb \"lease\"; the verbs are lease-exclusive, lease-shared, watch, status, publish, consume, yield, revoke, queue-admin"
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
        "policy rule 1: unknown verb \"lease\"; the verbs are lease-exclusive, lease-shared, watch, status, publish, consume, yield, revoke, queue-admin, or \"*\" for every verb"
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
fn what_an_error_suggests_is_accepted() {
    // An empty `verbs` said to use "*", which was then refused as an
    // unknown verb. Whatever an error suggests for a key is valid there:
    // "*" in `verbs` is every verb, in `resources` every name.
    for key in ["verbs", "resources"] {
        let mut rule = [("verbs", "[\"watch\"]"), ("resources", "[\"pcm\"]")];
        for (k, v) in &mut rule {
            if *k == key {
                *v = "[]";
            }
        }
        let text = format!(
            "[[policy]]\n{} = {}\n{} = {}\n",
            rule[0].0, rule[0].1, rule[1].0, rule[1].1
        );
        let e = resolve_err(&text).to_string();
        let (_, hint) = e
            .split_once("(use ")
            .unwrap_or_else(|| panic!("no suggestion: {e}"));
        let suggested = hint.split(' ').next().unwrap();
        assert_eq!(suggested, "\"*\"", "{e}");
        policy(&text.replace("[]", &format!("[{suggested}]")));
    }
    let e = resolve_err("[[policy]]\nverbs = []\nresources = [\"pcm\"]");
    assert!(e.to_string().ends_with("(use \"*\" for every verb)"), "{e}");
}

#[test]
fn every_verb_is_a_star_and_users_and_groups_take_no_star() {
    // `verbs = ["*"]` mentions every verb: a rule with it grants each of
    // them to whom it includes and takes each away from the others.
    let p = policy(
        r#"
        [[policy]]
        verbs = ["*"]
        resources = ["pcm"]
        users = ["alice"]
        "#,
    );
    let (alice, bob) = (user(1002), user(1003));
    for v in Verb::ALL {
        assert!(allowed(&p, &alice, v, "pcm"), "alice may {v}");
        assert!(!allowed(&p, &bob, v, "pcm"), "bob may not {v}");
        let denied = p.check(&bob, v, "pcm").unwrap_err();
        assert_eq!(denied.by, DeniedBy::Rules(vec![1]), "{v}");
        // Other names keep their defaults.
        assert_eq!(
            allowed(&p, &bob, v, "other"),
            v.builtin_default() == Decision::Allow,
            "{v}"
        );
    }
    // With other verbs beside it, "*" still means every verb.
    let p = policy(
        r#"
        [[policy]]
        verbs = ["watch", "*"]
        resources = ["*"]
        groups = ["wheel"]
        "#,
    );
    let wheel = Subject {
        uid: 5000,
        gid: 10,
        groups: Vec::new(),
    };
    for v in Verb::ALL {
        assert!(p.check_every_name(&wheel, v).is_ok(), "{v}");
    }
    // A user or group "*" would read as everyone; it is refused, naming
    // the key, without looking the name up.
    for key in ["users", "groups"] {
        let e = resolve_err(&format!(
            "[[policy]]\nverbs = [\"watch\"]\nresources = [\"pcm\"]\n{key} = [\"*\"]\n"
        ));
        assert_eq!(e, PolicyError::Wildcard { rule: 1, key }, "{e}");
        assert!(
            e.to_string()
                .contains(&format!("`{key}` cannot hold \"*\"")),
            "{e}"
        );
    }
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

/// The made-up name is unknown to the system's databases on every platform
/// (the lookup itself is tested in `platform/accounts.rs`).
#[test]
fn an_unknown_user_in_the_system_databases_is_an_error_naming_it() {
    let config: PolicyConfig = toml::from_str(
        r#"
        [[policy]]
        verbs = ["lease-exclusive"]
        resources = ["pcm"]
        users = ["turnstile-no-such-user-x9"]
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

#[test]
fn yield_follows_lease_shared_and_revoke_is_root_and_the_brokers_only() {
    // By default whoever may take a SHARED lease on a resource may ask its
    // holders to yield there; only root and the broker's user revoke.
    let p = policy(
        r#"
        [[policy]]
        verbs = ["lease-shared"]
        resources = ["private"]
        users = [1001]
        "#,
    );
    assert!(allowed(&p, &user(65534), Verb::Yield, "pcm"));
    assert!(allowed(&p, &user(1001), Verb::Yield, "private"));
    let e = p.check(&user(65534), Verb::Yield, "private").unwrap_err();
    assert_eq!(e.verb, Verb::Yield, "the refusal names the verb asked for");
    assert!(!allowed(&p, &user(65534), Verb::Revoke, "pcm"));
    assert!(!allowed(&p, &user(1001), Verb::Revoke, "private"));
    assert!(allowed(&p, &user(0), Verb::Revoke, "pcm"));
    assert!(allowed(&p, &user(OWN), Verb::Revoke, "pcm"));
    // Set explicitly, both are plain verbs.
    let p = policy(
        r#"
        [[policy]]
        verbs = ["revoke"]
        resources = ["pcm"]
        users = [1001]
        [policy-defaults]
        yield = "deny"
        "#,
    );
    assert!(!allowed(&p, &user(65534), Verb::Yield, "pcm"));
    assert!(allowed(&p, &user(1001), Verb::Revoke, "pcm"));
    assert!(!allowed(&p, &user(1001), Verb::Revoke, "other"));
}

#[test]
fn queue_admin_is_more_than_consume_and_denied_by_default() {
    // Purging a queue or moving its dead letters back changes it for every
    // consumer: by default only root and the broker's user may, whoever
    // may consume; a rule grants it like any verb.
    let p = policy("");
    assert!(allowed(&p, &user(65534), Verb::Consume, "jobs"));
    assert!(!allowed(&p, &user(65534), Verb::QueueAdmin, "jobs"));
    assert!(allowed(&p, &user(0), Verb::QueueAdmin, "jobs"));
    assert!(allowed(&p, &user(OWN), Verb::QueueAdmin, "jobs"));
    let p = policy(
        r#"
        [[policy]]
        verbs = ["queue-admin"]
        resources = ["jobs"]
        users = [1001]
        "#,
    );
    assert!(allowed(&p, &user(1001), Verb::QueueAdmin, "jobs"));
    assert!(!allowed(&p, &user(1001), Verb::QueueAdmin, "other"));
    let e = p.check(&user(65534), Verb::QueueAdmin, "jobs").unwrap_err();
    assert!(e.to_string().contains("queue-admin"), "{e}");
}
