//! Access policy: parsing, default deny, identity and attribute rules, certificate checks,
//! deny-overrides precedence.

use vwnet_protocol::acl::{Action, Policy, PolicyError, Request};
use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::PeerIdentity;
use vwnet_protocol::signed::{AttributeCertificate, SignedAttributeCertificate};
use vwnet_protocol::time::Timestamp;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

/// Alice is named by key; the biology VO (seed 10) is trusted for `vo=biology` and `role=*`;
/// the physics VO (seed 11) is not trusted at all.
fn policy(extra_rules: &str) -> Policy {
    let text = format!(
        r#"
format = 1

[[trusted_vo]]
name = "biology"
key = "{vo}"
asserts = ["vo=biology", "role=*"]

[[rule]]
name = "alice deploys"
effect = "allow"
actions = ["deploy", "manage"]
identities = ["{alice}"]

[[rule]]
name = "biologists deploy"
effect = "allow"
actions = ["deploy"]
attributes = ["vo=biology"]

[[rule]]
name = "admins do everything"
effect = "allow"
actions = ["*"]
attributes = ["vo=biology", "role=admin"]
{extra_rules}
"#,
        vo = identity(10).public(),
        alice = identity(1).public(),
    );
    Policy::from_toml(&text).unwrap()
}

fn cert(
    issuer: &Identity,
    subject: PeerIdentity,
    attributes: &[&str],
    window: (u64, u64),
) -> SignedAttributeCertificate {
    let cert = AttributeCertificate {
        issuer: issuer.public(),
        subject,
        attributes: attributes.iter().map(|a| a.parse().unwrap()).collect(),
        not_before: Timestamp::from_unix_secs(window.0),
        not_after: Timestamp::from_unix_secs(window.1),
    };
    SignedAttributeCertificate::sign(issuer, &cert).unwrap()
}

fn current() -> (u64, u64) {
    (NOW.as_unix_secs() - 60, NOW.as_unix_secs() + 60)
}

fn request(who: PeerIdentity, action: Action, certs: &[SignedAttributeCertificate]) -> Request<'_> {
    Request {
        who,
        action,
        certs,
        now: NOW,
    }
}

#[test]
fn default_is_deny() {
    let empty = Policy::from_toml("").unwrap();
    let d = empty.decide(&request(identity(1).public(), Action::Deploy, &[]));
    assert!(!d.allowed);
    assert_eq!(d.rule, None);
    assert!(d.reason.contains("denied by default"), "{}", d.reason);

    // A stranger under the full policy, and Alice for an action no rule gives her.
    let p = policy("");
    assert!(
        !p.decide(&request(identity(2).public(), Action::Deploy, &[]))
            .allowed
    );
    let d = p.decide(&request(identity(1).public(), Action::Publish, &[]));
    assert!(!d.allowed);
    assert_eq!(d.rule, None);
}

#[test]
fn identity_rule_allows() {
    let d = policy("").decide(&request(identity(1).public(), Action::Manage, &[]));
    assert!(d.allowed, "{}", d.reason);
    let rule = d.rule.unwrap();
    assert_eq!((rule.index, rule.name.as_str()), (0, "alice deploys"));
}

#[test]
fn attribute_rule_allows_with_a_valid_certificate() {
    let bob = identity(2).public();
    let certs = [cert(&identity(10), bob, &["vo=biology"], current())];
    let d = policy("").decide(&request(bob, Action::Deploy, &certs));
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(d.rule.unwrap().index, 1);
    assert_eq!(d.attributes.len(), 1);
    // The attribute does not reach actions its rule does not list.
    assert!(
        !policy("")
            .decide(&request(bob, Action::Publish, &certs))
            .allowed
    );
}

#[test]
fn all_attributes_of_a_rule_are_required_across_certificates() {
    let bob = identity(2).public();
    let vo = identity(10);
    let only_role = [cert(&vo, bob, &["role=admin"], current())];
    assert!(
        !policy("")
            .decide(&request(bob, Action::Publish, &only_role))
            .allowed
    );
    let both = [
        cert(&vo, bob, &["role=admin"], current()),
        cert(&vo, bob, &["vo=biology"], current()),
    ];
    let d = policy("").decide(&request(bob, Action::Publish, &both));
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(d.rule.unwrap().name, "admins do everything");
}

#[test]
fn expired_or_not_yet_valid_certificate_denies() {
    let bob = identity(2).public();
    let now = NOW.as_unix_secs();
    for window in [(now - 100, now - 1), (now + 1, now + 100)] {
        let certs = [cert(&identity(10), bob, &["vo=biology"], window)];
        let d = policy("").decide(&request(bob, Action::Deploy, &certs));
        assert!(!d.allowed, "{window:?}: {}", d.reason);
        assert_eq!(d.ignored.len(), 1, "{:?}", d.ignored);
        assert!(d.reason.contains("certificate 0"), "{}", d.reason);
    }
}

#[test]
fn certificate_from_an_untrusted_key_denies() {
    let bob = identity(2).public();
    let certs = [cert(&identity(11), bob, &["vo=biology"], current())];
    let d = policy("").decide(&request(bob, Action::Deploy, &certs));
    assert!(!d.allowed);
    assert!(
        d.ignored[0].contains("not a trusted VO key"),
        "{:?}",
        d.ignored
    );
}

#[test]
fn certificate_for_another_subject_denies() {
    let bob = identity(2).public();
    let carol = identity(3).public();
    let certs = [cert(&identity(10), carol, &["vo=biology"], current())];
    let d = policy("").decide(&request(bob, Action::Deploy, &certs));
    assert!(!d.allowed);
    assert!(d.ignored[0].contains("issued to"), "{:?}", d.ignored);
}

#[test]
fn trusted_vo_may_only_assert_what_the_policy_lets_it() {
    let bob = identity(2).public();
    let text = format!(
        r#"
[[trusted_vo]]
key = "{vo}"
asserts = ["vo=physics"]

[[rule]]
effect = "allow"
actions = ["deploy"]
attributes = ["vo=biology"]
"#,
        vo = identity(10).public()
    );
    let p = Policy::from_toml(&text).unwrap();
    let certs = [cert(&identity(10), bob, &["vo=biology"], current())];
    let d = p.decide(&request(bob, Action::Deploy, &certs));
    assert!(!d.allowed);
    assert!(
        d.ignored[0].contains("may not assert vo=biology"),
        "{:?}",
        d.ignored
    );
}

#[test]
fn forged_certificate_denies() {
    // Claims the trusted VO as issuer but is signed by the untrusted physics VO.
    let bob = identity(2).public();
    let body = AttributeCertificate {
        issuer: identity(10).public(),
        subject: bob,
        attributes: vec!["vo=biology".parse().unwrap()],
        not_before: Timestamp::from_unix_secs(current().0),
        not_after: Timestamp::from_unix_secs(current().1),
    };
    let forged = SignedAttributeCertificate::sign(&identity(11), &body).unwrap();
    let d = policy("").decide(&request(bob, Action::Deploy, &[forged]));
    assert!(!d.allowed, "{}", d.reason);
}

#[test]
fn deny_overrides_allow_regardless_of_order() {
    let alice = identity(1).public();
    // The deny comes AFTER the allow that matches Alice; it still wins.
    let deny_alice = format!(
        r#"
[[rule]]
name = "alice suspended"
effect = "deny"
actions = ["deploy"]
identities = ["{alice}"]
"#
    );
    let d = policy(&deny_alice).decide(&request(alice, Action::Deploy, &[]));
    assert!(!d.allowed, "{}", d.reason);
    let rule = d.rule.unwrap();
    assert_eq!((rule.index, rule.name.as_str()), (3, "alice suspended"));
    // Actions the deny does not list are unaffected.
    assert!(
        policy(&deny_alice)
            .decide(&request(alice, Action::Manage, &[]))
            .allowed
    );

    // A deny by attribute beats an allow by identity.
    let vo = identity(10);
    let deny_students = r#"
[[rule]]
name = "no students deploy"
effect = "deny"
actions = ["deploy"]
attributes = ["role=student"]
"#;
    let certs = [cert(&vo, alice, &["role=student"], current())];
    let d = policy(deny_students).decide(&request(alice, Action::Deploy, &certs));
    assert!(!d.allowed);
    assert_eq!(d.rule.unwrap().name, "no students deploy");

    // `everyone = true` denies all.
    let lockdown = "[[rule]]\neffect = \"deny\"\nactions = [\"*\"]\neveryone = true\n";
    for action in Action::ALL {
        assert!(
            !policy(lockdown)
                .decide(&request(alice, action, &[]))
                .allowed
        );
    }
}

#[test]
fn parse_errors_are_one_line_and_name_the_field() {
    let alice = identity(1).public();
    let cases: Vec<(String, &str)> = vec![
        (
            "[[rule]]\neffect = \"alow\"\nactions = [\"deploy\"]\neveryone = true\n".into(),
            "rule[0].effect",
        ),
        (
            format!(
                "[[rule]]\neffect = \"allow\"\nactions = [\"deploy\"]\neveryone = true\n[[rule]]\neffect = \"allow\"\nactions = [\"launch\"]\nidentities = [\"{alice}\"]\n"
            ),
            "rule[1].actions[0]",
        ),
        (
            "[[rule]]\neffect = \"allow\"\nactions = [\"deploy\"]\nidentities = [\"abc\"]\n".into(),
            "rule[0].identities[0]",
        ),
        (
            "[[rule]]\neffect = \"allow\"\nactions = [\"deploy\"]\nattributes = [\"biology\"]\n"
                .into(),
            "rule[0].attributes[0]",
        ),
        (
            "[[rule]]\neffect = \"allow\"\nactions = [\"deploy\"]\n".into(),
            "rule[0]: applies to nobody",
        ),
        (
            "[[rule]]\neffect = \"allow\"\nactions = []\neveryone = true\n".into(),
            "rule[0].actions",
        ),
        (
            format!("[[trusted_vo]]\nkey = \"{}\"\n", "00".repeat(32)),
            "trusted_vo[0].key",
        ),
        (
            "[[rule]]\neffect = \"allow\"\nactoins = [\"deploy\"]\neveryone = true\n".into(),
            "actoins",
        ),
        ("format = 2\n".into(), "format"),
        (
            "[[rule]]\nactions = [\"deploy\"]\neveryone = true\n".into(),
            "line 1: rule[0]: missing field `effect`",
        ),
        (
            "[[rule]]\neffect = \"deny\"\nactions = \"deploy\"\neveryone = true\n".into(),
            "line 3: rule[0].actions: invalid type",
        ),
        ("[[rule]\n".into(), "line 1"),
    ];
    for (text, needle) in cases {
        let err = Policy::from_toml(&text).unwrap_err();
        let line = err.to_string();
        assert!(!line.contains('\n'), "multi-line error: {line}");
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    assert!(matches!(
        Policy::from_toml("format = 2\n"),
        Err(PolicyError::Field { .. })
    ));
}
