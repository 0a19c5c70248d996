//! Access control: the policy a node loads (TOML) and the decision it makes per request.
//!
//! A policy lists trusted VO keys and rules. A rule allows or denies some [`Action`]s to
//! identities (ed25519 public keys), to holders of attributes (`vo=biology`, `role=admin`), or to
//! everyone. Attributes count only when asserted by an [`AttributeCertificate`] that verifies,
//! is inside its time window, is about the requester, and is signed by a VO key the policy trusts
//! to assert that attribute.
//!
//! # Precedence: deny overrides, default deny
//! 1. If any matching rule denies, the request is denied by the first such rule (file order).
//! 2. Otherwise, if any matching rule allows, it is allowed by the first such rule.
//! 3. Otherwise it is denied by default (no rule).
//!
//! Deny-overrides makes the outcome independent of rule order, so appending a rule can never
//! silently lift a ban written above it.
//!
//! ```toml
//! format = 1                        # optional; the only format is 1
//!
//! [[trusted_vo]]
//! name = "biology"                  # optional label
//! key = "<64 hex digits>"
//! asserts = ["vo=biology", "role=*"] # optional; default: any attribute
//!
//! [[rule]]
//! name = "biologists deploy"        # optional; default "rule[N]"
//! effect = "allow"                  # allow | deny
//! actions = ["deploy", "manage"]    # create | publish | deploy | manage, or "*"
//! identities = ["<64 hex digits>"]  # matches any of these keys
//! attributes = ["vo=biology"]       # matches a holder of ALL of these
//! everyone = false                  # matches anyone
//! ```
//! A rule matches when its actions include the request's action and at least one of its
//! subject clauses (identities, attributes, everyone) matches; a rule without any subject
//! clause is a parse error.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::PeerIdentity;
use crate::signed::{Attribute, AttributeCertificate, SignedAttributeCertificate};
use crate::time::Timestamp;

/// The policy file format this build reads.
pub const POLICY_FORMAT: u32 = 1;

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    /// Create a new workspace (or clone one).
    Create,
    /// Publish (announce) a description to the network.
    Publish,
    /// Deploy a workspace on this node.
    Deploy,
    /// Start, stop, pause, unpause or undeploy a deployed workspace.
    Manage,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [
        Action::Create,
        Action::Publish,
        Action::Deploy,
        Action::Manage,
    ];

    /// The lowercase name used in policies and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Publish => "publish",
            Action::Deploy => "deploy",
            Action::Manage => "manage",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?} (expected create, publish, deploy or manage)")]
pub struct ActionParseError(String);

impl FromStr for Action {
    type Err = ActionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ActionParseError(s.to_owned()))
    }
}

/// Whether a rule allows or denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The rule grants the action.
    Allow,
    /// The rule forbids the action, overriding every allow.
    Deny,
}

/// What a trusted VO key may assert: `name=value` exactly, or `name=*` for any value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributePattern {
    /// Exactly this attribute.
    Exact(Attribute),
    /// Any value of the attribute with this name.
    AnyValue(String),
}

impl AttributePattern {
    /// Whether `attribute` fits the pattern.
    pub fn matches(&self, attribute: &Attribute) -> bool {
        match self {
            AttributePattern::Exact(a) => a == attribute,
            AttributePattern::AnyValue(name) => attribute.name() == name,
        }
    }
}

impl fmt::Display for AttributePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributePattern::Exact(a) => write!(f, "{a}"),
            AttributePattern::AnyValue(name) => write!(f, "{name}=*"),
        }
    }
}

/// A VO key whose attribute certificates the node trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedVo {
    /// A label for messages.
    pub name: String,
    /// The VO's signing key.
    pub key: PeerIdentity,
    /// What it may assert; `None` means any attribute.
    pub asserts: Option<Vec<AttributePattern>>,
}

/// One allow or deny rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// A label for decisions and logs.
    pub name: String,
    /// Allow or deny.
    pub effect: Effect,
    /// The actions the rule is about (non-empty).
    pub actions: BTreeSet<Action>,
    /// Keys the rule applies to.
    pub identities: BTreeSet<PeerIdentity>,
    /// Attributes a requester must ALL hold for the rule to apply (empty: clause unused).
    pub attributes: BTreeSet<Attribute>,
    /// Whether the rule applies to everyone.
    pub everyone: bool,
}

/// A parsed, validated access policy.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Policy {
    /// Keys whose attribute certificates count.
    pub trusted_vos: Vec<TrustedVo>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

/// Why a policy file was refused. Always one line, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The TOML is malformed or a value has the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A field has a value that is not allowed.
    #[error("{field}: {message}")]
    Field {
        /// Path of the field, e.g. `rule[1].identities[0]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn field_error(field: impl Into<String>, message: impl fmt::Display) -> PolicyError {
    PolicyError::Field {
        field: field.into(),
        message: message.to_string(),
    }
}

/// One request to decide on.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Who asks.
    pub who: PeerIdentity,
    /// What they want to do.
    pub action: Action,
    /// Attribute certificates they present (verified here, never trusted as given).
    pub certs: &'a [SignedAttributeCertificate],
    /// The time at which certificates must be valid.
    pub now: Timestamp,
}

/// Which rule decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Position in the policy's rule list, from 0.
    pub index: usize,
    /// The rule's name.
    pub name: String,
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// The rule that decided; `None` for the default deny.
    pub rule: Option<RuleRef>,
    /// One line saying why, for logs and the CLI.
    pub reason: String,
    /// Attributes the requester was found to hold (from valid, trusted certificates).
    pub attributes: Vec<Attribute>,
    /// Why presented certificates (or some of their attributes) were not counted.
    pub ignored: Vec<String>,
}

impl Policy {
    /// Parses and validates a policy; errors are one line naming the field.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(one_line_toml_error(text, &e)))?;
        raw.validate()
    }

    /// Decides `request`: deny overrides allow, and no matching rule means deny.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        let (held, ignored) = self.held_attributes(request);
        let matches = |rule: &Rule| {
            rule.actions.contains(&request.action)
                && (rule.everyone
                    || rule.identities.contains(&request.who)
                    || (!rule.attributes.is_empty() && rule.attributes.is_subset(&held)))
        };
        let deciding = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.effect == Effect::Deny && matches(r))
            .or_else(|| {
                self.rules
                    .iter()
                    .enumerate()
                    .find(|(_, r)| r.effect == Effect::Allow && matches(r))
            });
        let who = request.who.short();
        let action = request.action;
        let mut reason = match deciding {
            Some((index, rule)) => format!(
                "rule[{index}] {:?} {} {action} to {who}",
                rule.name,
                if rule.effect == Effect::Allow {
                    "allows"
                } else {
                    "denies"
                },
            ),
            None => format!("no rule allows {action} to {who}: denied by default"),
        };
        if !ignored.is_empty() {
            reason.push_str(&format!(" (ignored: {})", ignored.join("; ")));
        }
        Decision {
            allowed: deciding.is_some_and(|(_, r)| r.effect == Effect::Allow),
            rule: deciding.map(|(index, r)| RuleRef {
                index,
                name: r.name.clone(),
            }),
            reason,
            attributes: held.into_iter().collect(),
            ignored,
        }
    }

    /// The attributes the requester holds by valid, trusted certificates, and why others were
    /// ignored.
    fn held_attributes(&self, request: &Request<'_>) -> (BTreeSet<Attribute>, Vec<String>) {
        let mut held = BTreeSet::new();
        let mut ignored = Vec::new();
        for (i, signed) in request.certs.iter().enumerate() {
            let cert = match signed.verify(request.now) {
                Ok(cert) => cert,
                Err(e) => {
                    ignored.push(format!("certificate {i}: {e}"));
                    continue;
                }
            };
            let cert: &AttributeCertificate = &cert;
            let Some(vo) = self.trusted_vos.iter().find(|vo| vo.key == cert.issuer) else {
                ignored.push(format!(
                    "certificate {i}: issuer {} is not a trusted VO key",
                    cert.issuer.short()
                ));
                continue;
            };
            if cert.subject != request.who {
                ignored.push(format!(
                    "certificate {i}: issued to {}, not to {}",
                    cert.subject.short(),
                    request.who.short()
                ));
                continue;
            }
            for attribute in &cert.attributes {
                let allowed = vo
                    .asserts
                    .as_ref()
                    .is_none_or(|patterns| patterns.iter().any(|p| p.matches(attribute)));
                if allowed {
                    held.insert(attribute.clone());
                } else {
                    ignored.push(format!(
                        "certificate {i}: VO {:?} may not assert {attribute}",
                        vo.name
                    ));
                }
            }
        }
        (held, ignored)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    format: Option<u32>,
    #[serde(default)]
    trusted_vo: Vec<RawVo>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVo {
    name: Option<String>,
    key: String,
    asserts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    effect: Effect,
    actions: Vec<String>,
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default)]
    attributes: Vec<String>,
    #[serde(default)]
    everyone: bool,
}

impl RawPolicy {
    fn validate(self) -> Result<Policy, PolicyError> {
        if let Some(found) = self.format.filter(|&f| f != POLICY_FORMAT) {
            return Err(field_error(
                "format",
                format!("unsupported policy format {found} (this build reads {POLICY_FORMAT})"),
            ));
        }
        let mut trusted_vos = Vec::with_capacity(self.trusted_vo.len());
        for (i, vo) in self.trusted_vo.into_iter().enumerate() {
            let key = parse_key(&vo.key, || format!("trusted_vo[{i}].key"))?;
            let asserts = vo
                .asserts
                .map(|patterns| {
                    patterns
                        .iter()
                        .enumerate()
                        .map(|(j, p)| {
                            parse_pattern(p).map_err(|e| {
                                field_error(format!("trusted_vo[{i}].asserts[{j}]"), e)
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            trusted_vos.push(TrustedVo {
                name: vo.name.unwrap_or_else(|| format!("trusted_vo[{i}]")),
                key,
                asserts,
            });
        }
        let mut rules = Vec::with_capacity(self.rule.len());
        for (i, raw) in self.rule.into_iter().enumerate() {
            let mut actions = BTreeSet::new();
            for (j, a) in raw.actions.iter().enumerate() {
                if a == "*" {
                    actions.extend(Action::ALL);
                } else {
                    actions.insert(
                        a.parse::<Action>()
                            .map_err(|e| field_error(format!("rule[{i}].actions[{j}]"), e))?,
                    );
                }
            }
            if actions.is_empty() {
                return Err(field_error(
                    format!("rule[{i}].actions"),
                    "lists no action (use create, publish, deploy, manage or \"*\")",
                ));
            }
            let identities = raw
                .identities
                .iter()
                .enumerate()
                .map(|(j, k)| parse_key(k, || format!("rule[{i}].identities[{j}]")))
                .collect::<Result<BTreeSet<_>, _>>()?;
            let attributes = raw
                .attributes
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    a.parse::<Attribute>()
                        .map_err(|e| field_error(format!("rule[{i}].attributes[{j}]"), e))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            if identities.is_empty() && attributes.is_empty() && !raw.everyone {
                return Err(field_error(
                    format!("rule[{i}]"),
                    "applies to nobody: give identities, attributes or everyone = true",
                ));
            }
            rules.push(Rule {
                name: raw.name.unwrap_or_else(|| format!("rule[{i}]")),
                effect: raw.effect,
                actions,
                identities,
                attributes,
                everyone: raw.everyone,
            });
        }
        Ok(Policy { trusted_vos, rules })
    }
}

fn parse_key(text: &str, field: impl Fn() -> String) -> Result<PeerIdentity, PolicyError> {
    let key: PeerIdentity = text.parse().map_err(|e| field_error(field(), e))?;
    // A weak or invalid key could never sign anything verifiable; say so at load time.
    key.verifying_key().map_err(|e| field_error(field(), e))?;
    Ok(key)
}

fn parse_pattern(text: &str) -> Result<AttributePattern, String> {
    match text.strip_suffix("=*") {
        Some(name) => {
            // Validate the name by parsing it with a placeholder value.
            format!("{name}=x")
                .parse::<Attribute>()
                .map_err(|_| format!("{text:?}: bad attribute name"))?;
            Ok(AttributePattern::AnyValue(name.to_owned()))
        }
        None => text
            .parse()
            .map(AttributePattern::Exact)
            .map_err(|e: crate::signed::AttributeError| e.to_string()),
    }
}

/// Turns a TOML error into one line: `line N: [field: ]message`.
///
/// `toml`'s own `Display` spans several lines with a source excerpt; the CLI prints one line.
/// The field is recovered from the error position: the enclosing `[table]` or `[[array]]`
/// header (with its index for arrays of tables) and the key on the error's line.
pub(crate) fn one_line_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let Some(span) = error.span() else {
        return message;
    };
    let offset = span.start.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    // Headers up to and including the error's line: a missing field points at its header.
    for line in lines.iter().take(line_no) {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = match counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
    }
    let key = lines
        .get(line_no - 1)
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.starts_with('#'));
    let field = match (table.is_empty(), key) {
        (_, None) => table,
        (true, Some(k)) => k.to_owned(),
        (false, Some(k)) => format!("{table}.{k}"),
    };
    if field.is_empty() {
        format!("line {line_no}: {message}")
    } else {
        format!("line {line_no}: {field}: {message}")
    }
}
