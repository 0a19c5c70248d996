//! The node's policy: who may create, publish, deploy and manage workspaces here, and how big a
//! workspace this node agrees to host.
//!
//! A [`NodePolicy`] is an access policy ([`vwnet_protocol::acl::Policy`]: deny overrides,
//! default deny, attribute certificates from trusted VOs) plus [`ResourceLimits`]. Every service
//! asks the same question through [`NodePolicy::check`]: the factory (`vwnet create`), the
//! gossip validator and `Request::Publish` (action `publish`), and the manager (deploy, manage).
//!
//! # The default policy (no `--policy FILE`)
//! ```text
//! rule[0] "default: anyone publishes"   allow publish                 everyone
//! rule[1] "default: node operator"      allow create, deploy, manage  the user key in
//!                                                                     <home>/identity.key and the
//!                                                                     node key
//! rule[2] "default: workspace owner"    allow create, deploy, manage  the description's owner
//! ```
//! Descriptions from anyone are accepted and relayed (their signatures are still checked), so a
//! node with no configuration is a useful member of the network. Changing what runs here is
//! reserved to this node's operator and to a workspace's own owner. The control socket is 0600
//! in a 0700 home, so the requests that reach create/deploy/manage come from the operator's
//! account anyway; the owner rule is what lets an owner deploy their workspace on a node that
//! is asked to (e.g. as a migration target).
//!
//! With a policy file, its rules replace the default entirely (a file cannot name "the owner of
//! the workspace in question"; list the keys instead).
//!
//! # Limits
//! [`ResourceLimits`] apply to `create` and `deploy` only: they are about what this node hosts.
//! Applying them to `publish` would make a small node reject (and penalise the relays of) a
//! large workspace it was never asked to run.
//! - `max_ram_mib`: the description's minimum RAM (`hardware.ram.min`) must not exceed it;
//! - `max_disk_bytes`: the workspace's footprint here, the larger of its virtual disk
//!   (`hardware.disk.size_mib`) and its disk image, plus its memory state, must not exceed it;
//! - `max_workspaces`: checked with [`NodePolicy::check_count`] by the caller that knows how many
//!   it has (live workspaces created here for `create`, deployed ones for `deploy`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use vwnet_protocol::acl::{Action, Effect, Policy, PolicyError, Request, Rule, RuleRef};
use vwnet_protocol::description::{Description, State};
use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::PeerIdentity;
use vwnet_protocol::signed::SignedAttributeCertificate;
use vwnet_protocol::time::Timestamp;

/// File name of the operator's (user's) signing key in the home directory, as the CLI keeps it.
pub const OPERATOR_KEY: &str = "identity.key";

const MIB: u64 = 1024 * 1024;

/// How big a workspace this node agrees to host; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Largest minimum RAM (MiB) a workspace may ask for.
    pub max_ram_mib: Option<u64>,
    /// Largest disk footprint (bytes) of one workspace.
    pub max_disk_bytes: Option<u64>,
    /// Most workspaces at once (created here, or deployed here).
    pub max_workspaces: Option<u64>,
}

/// Why the policy refused a request. `Display` names the rule or the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyDenied {
    /// An access rule denied the action, or no rule allowed it.
    #[error("policy denies {action}: {reason}")]
    Rule {
        /// The action asked for.
        action: Action,
        /// The deciding rule; `None` for the default deny.
        rule: Option<RuleRef>,
        /// The decision's one-line reason, e.g. `rule[1] "no bob" denies create to ab12cd34`.
        reason: String,
    },
    /// The workspace is bigger than a resource limit allows.
    #[error("policy denies {action}: limit {limit}={max} < requested {requested}")]
    Limit {
        /// The action asked for.
        action: Action,
        /// The limit's name, e.g. `max_ram_mib`.
        limit: &'static str,
        /// The limit.
        max: u64,
        /// What the workspace needs.
        requested: u64,
    },
}

impl PolicyDenied {
    /// The deciding rule, if a rule (not the default deny or a limit) decided.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            PolicyDenied::Rule { rule, .. } => rule.as_ref(),
            PolicyDenied::Limit { .. } => None,
        }
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    /// The policy file could not be read.
    #[error("{path}: cannot read the policy: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy file does not parse or validate.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The one-line error naming the field.
        source: PolicyError,
    },
    /// The operator key in the home directory exists but is not a key file.
    #[error("{path}: not a key file: {reason}")]
    OperatorKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Acl {
    /// The built-in default: rules 0 and 1 here, rule 2 (the owner) added per request.
    Default(Policy),
    /// Rules from a file.
    File { path: PathBuf, policy: Policy },
}

/// The node's access policy and resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePolicy {
    acl: Acl,
    limits: ResourceLimits,
}

const OWNER_RULE: &str = "default: workspace owner";

impl NodePolicy {
    /// The default policy (see the module docs) for a node whose operator keys are `operators`.
    pub fn default_for(
        operators: impl IntoIterator<Item = PeerIdentity>,
        limits: ResourceLimits,
    ) -> Self {
        let rules = vec![
            Rule {
                name: "default: anyone publishes".into(),
                effect: Effect::Allow,
                actions: [Action::Publish].into(),
                identities: BTreeSet::new(),
                attributes: BTreeSet::new(),
                everyone: true,
            },
            Rule {
                name: "default: node operator".into(),
                effect: Effect::Allow,
                actions: [Action::Create, Action::Deploy, Action::Manage].into(),
                identities: operators.into_iter().collect(),
                attributes: BTreeSet::new(),
                everyone: false,
            },
        ];
        Self {
            acl: Acl::Default(Policy {
                trusted_vos: Vec::new(),
                rules,
            }),
            limits,
        }
    }

    /// A policy from already-parsed rules; `path` names their file in messages.
    pub fn from_policy(path: impl Into<PathBuf>, policy: Policy, limits: ResourceLimits) -> Self {
        Self {
            acl: Acl::File {
                path: path.into(),
                policy,
            },
            limits,
        }
    }

    /// Reads and parses a policy file (blocking; call it at start-up or off the runtime).
    pub fn from_file(path: &Path, limits: ResourceLimits) -> Result<Self, PolicyLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let policy = Policy::from_toml(&text).map_err(|source| PolicyLoadError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_policy(path, policy, limits))
    }

    /// The node's policy: the file if one is given, else the default for the operator key in
    /// `home` (if present) and `node_key`. Blocking (reads files).
    pub fn load(
        home: &Path,
        file: Option<&Path>,
        node_key: PeerIdentity,
        limits: ResourceLimits,
    ) -> Result<Self, PolicyLoadError> {
        if let Some(path) = file {
            return Self::from_file(path, limits);
        }
        let mut operators = vec![node_key];
        if let Some(user) = read_operator_key(home)? {
            operators.push(user);
        }
        Ok(Self::default_for(operators, limits))
    }

    /// The resource limits.
    pub fn limits(&self) -> &ResourceLimits {
        &self.limits
    }

    /// Where the rules come from: `default` or the policy file's path.
    pub fn source(&self) -> String {
        match &self.acl {
            Acl::Default(_) => "default".into(),
            Acl::File { path, .. } => path.display().to_string(),
        }
    }

    /// May `who` (presenting `certs`) do `action` on the workspace `desc` at `now`?
    ///
    /// The access rules decide first (deny overrides, default deny); for `create` and `deploy`
    /// the resource limits then apply to `desc`. The error names the deciding rule or limit.
    pub fn check(
        &self,
        action: Action,
        who: PeerIdentity,
        certs: &[SignedAttributeCertificate],
        desc: &Description,
        now: Timestamp,
    ) -> Result<(), PolicyDenied> {
        let request = Request {
            who,
            action,
            certs,
            now,
        };
        let decision = match &self.acl {
            Acl::File { policy, .. } => policy.decide(&request),
            Acl::Default(base) => {
                let mut policy = base.clone();
                policy.rules.push(Rule {
                    name: OWNER_RULE.into(),
                    effect: Effect::Allow,
                    actions: [Action::Create, Action::Deploy, Action::Manage].into(),
                    identities: [desc.owner].into(),
                    attributes: BTreeSet::new(),
                    everyone: false,
                });
                policy.decide(&request)
            }
        };
        if !decision.allowed {
            return Err(PolicyDenied::Rule {
                action,
                rule: decision.rule,
                reason: decision.reason,
            });
        }
        if matches!(action, Action::Create | Action::Deploy) {
            self.check_size(action, desc)?;
        }
        Ok(())
    }

    /// May one more workspace be added when `in_use` are already there (`max_workspaces`)?
    pub fn check_count(&self, action: Action, in_use: u64) -> Result<(), PolicyDenied> {
        match self.limits.max_workspaces {
            Some(max) if in_use >= max => Err(PolicyDenied::Limit {
                action,
                limit: "max_workspaces",
                max,
                requested: in_use.saturating_add(1),
            }),
            _ => Ok(()),
        }
    }

    fn check_size(&self, action: Action, desc: &Description) -> Result<(), PolicyDenied> {
        let deny = |limit, max, requested| {
            Err(PolicyDenied::Limit {
                action,
                limit,
                max,
                requested,
            })
        };
        let ram = desc.hardware.ram.map_or(0, |r| r.min);
        if let Some(max) = self.limits.max_ram_mib
            && ram > max
        {
            return deny("max_ram_mib", max, ram);
        }
        let disk = disk_footprint(desc);
        if let Some(max) = self.limits.max_disk_bytes
            && disk > max
        {
            return deny("max_disk_bytes", max, disk);
        }
        Ok(())
    }
}

/// Bytes a workspace occupies on a host: the larger of its virtual disk and its disk image,
/// plus its saved memory state.
pub fn disk_footprint(desc: &Description) -> u64 {
    let virtual_disk = desc
        .hardware
        .disk
        .as_ref()
        .map_or(0, |d| d.size_mib.saturating_mul(MIB));
    let image = desc.image.disk.map_or(0, |i| i.size);
    let state = desc.image.memory_state.map_or(0, |i| i.size);
    virtual_disk.max(image).saturating_add(state)
}

fn read_operator_key(home: &Path) -> Result<Option<PeerIdentity>, PolicyLoadError> {
    let path = home.join(OPERATOR_KEY);
    match std::fs::read_to_string(&path) {
        Ok(text) => Identity::from_key_file(&text)
            .map(|id| Some(id.public()))
            .map_err(|e| PolicyLoadError::OperatorKey {
                path,
                reason: e.to_string(),
            }),
        // No user key yet: only the node key operates the node.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PolicyLoadError::Read { path, source }),
    }
}

/// Why a workspace may not be deployed, whatever the policy says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotDeployable {
    /// Its lifeCycle has run out; the owner can renew it with `vwnet extend`.
    #[error("workspace {workspace} expired at {at} (renew it with `vwnet extend`)")]
    Expired {
        /// The workspace's short id.
        workspace: String,
        /// When it expired.
        at: Timestamp,
    },
    /// It is marked corrupted.
    #[error("workspace {0} is marked corrupted")]
    Corrupted(String),
}

/// Checks what makes a workspace undeployable regardless of policy: expiry and corruption.
pub fn ensure_deployable(desc: &Description, now: Timestamp) -> Result<(), NotDeployable> {
    if let Some(at) = desc.expires_at()
        && now >= at
    {
        return Err(NotDeployable::Expired {
            workspace: desc.id.short(),
            at,
        });
    }
    if desc.state == State::Corrupted {
        return Err(NotDeployable::Corrupted(desc.id.short()));
    }
    Ok(())
}

impl fmt::Display for NodePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
        write!(
            f,
            "policy {} (max_ram_mib {}, max_disk_bytes {}, max_workspaces {})",
            self.source(),
            show(l.max_ram_mib),
            show(l.max_disk_bytes),
            show(l.max_workspaces)
        )
    }
}

#[cfg(test)]
mod tests {
    use vwnet_protocol::description::{Bounds, template_for};
    use vwnet_protocol::ids::WorkspaceId;
    use vwnet_protocol::signed::{Attribute, AttributeCertificate};
    use vwnet_protocol::time::Span;

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

    fn key(seed: u8) -> Identity {
        Identity::from_secret_bytes(&[seed; 32])
    }

    fn desc(owner: PeerIdentity) -> Description {
        let ws = WorkspaceId::from_bytes([5; WorkspaceId::LEN]);
        Description::from_toml_str(&template_for(ws, owner, NOW)).unwrap()
    }

    #[test]
    fn default_lets_anyone_publish_and_only_operator_or_owner_change_things() {
        let operator = key(1).public();
        let node = key(2).public();
        let owner = key(3).public();
        let stranger = key(4).public();
        let p = NodePolicy::default_for([operator, node], ResourceLimits::default());
        let d = desc(owner);
        for who in [operator, node, owner, stranger] {
            p.check(Action::Publish, who, &[], &d, NOW).unwrap();
        }
        for action in [Action::Create, Action::Deploy, Action::Manage] {
            for who in [operator, node, owner] {
                p.check(action, who, &[], &d, NOW).unwrap();
            }
            let err = p.check(action, stranger, &[], &d, NOW).unwrap_err();
            assert_eq!(err.rule(), None, "{err}");
            assert!(
                err.to_string().contains("no rule allows"),
                "{err} should say no rule allows it"
            );
        }
        // Which default rule allowed is visible through a file-free decision too.
        assert_eq!(p.source(), "default");
    }

    #[test]
    fn load_reads_the_operator_key_from_home() {
        let dir = tempfile::tempdir().unwrap();
        let node = key(2).public();
        let owner = key(3).public();
        let p = NodePolicy::load(dir.path(), None, node, ResourceLimits::default()).unwrap();
        // Without a user key, only the node key (and owners) operate.
        assert!(
            p.check(Action::Deploy, key(1).public(), &[], &desc(owner), NOW)
                .is_err()
        );
        std::fs::write(dir.path().join(OPERATOR_KEY), key(1).to_key_file()).unwrap();
        let p = NodePolicy::load(dir.path(), None, node, ResourceLimits::default()).unwrap();
        p.check(Action::Deploy, key(1).public(), &[], &desc(owner), NOW)
            .unwrap();
        std::fs::write(dir.path().join(OPERATOR_KEY), "garbage").unwrap();
        assert!(matches!(
            NodePolicy::load(dir.path(), None, node, ResourceLimits::default()),
            Err(PolicyLoadError::OperatorKey { .. })
        ));
    }

    #[test]
    fn file_rules_replace_the_default_and_the_deciding_rule_is_named() {
        let alice = key(1).public();
        let bob = key(2).public();
        let text = format!(
            "[[rule]]\nname = \"alice creates\"\neffect = \"allow\"\nactions = [\"create\", \"publish\"]\nidentities = [\"{alice}\", \"{bob}\"]\n\n[[rule]]\nname = \"no bob\"\neffect = \"deny\"\nactions = [\"create\"]\nidentities = [\"{bob}\"]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        let p = NodePolicy::from_file(&path, ResourceLimits::default()).unwrap();
        // The owner rule of the default does not exist under a file.
        let d = desc(bob);
        p.check(Action::Create, alice, &[], &d, NOW).unwrap();
        p.check(Action::Publish, bob, &[], &d, NOW).unwrap();
        let err = p.check(Action::Create, bob, &[], &d, NOW).unwrap_err();
        assert_eq!(
            err.rule().map(|r| (r.index, r.name.as_str())),
            Some((1, "no bob"))
        );
        assert!(
            err.to_string().contains("\"no bob\" denies create"),
            "{err}"
        );
        let err = p.check(Action::Deploy, alice, &[], &d, NOW).unwrap_err();
        assert!(err.to_string().contains("no rule allows deploy"), "{err}");
        let err = p
            .check(Action::Publish, key(9).public(), &[], &d, NOW)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("policy denies publish: "),
            "{err}"
        );
    }

    #[test]
    fn attribute_certificates_from_a_trusted_vo_count() {
        let vo = key(7);
        let member = key(8);
        let text = format!(
            "[[trusted_vo]]\nname = \"bio\"\nkey = \"{}\"\n\n[[rule]]\nname = \"biologists deploy\"\neffect = \"allow\"\nactions = [\"deploy\"]\nattributes = [\"vo=biology\"]\n",
            vo.public()
        );
        let policy = Policy::from_toml(&text).unwrap();
        let p = NodePolicy::from_policy("p.toml", policy, ResourceLimits::default());
        let cert = AttributeCertificate {
            issuer: vo.public(),
            subject: member.public(),
            attributes: vec!["vo=biology".parse::<Attribute>().unwrap()],
            not_before: NOW,
            not_after: NOW.saturating_add(Span::from_secs(3600)),
        };
        let signed = SignedAttributeCertificate::sign(&vo, &cert).unwrap();
        let d = desc(key(1).public());
        assert!(
            p.check(Action::Deploy, member.public(), &[], &d, NOW)
                .is_err()
        );
        p.check(
            Action::Deploy,
            member.public(),
            std::slice::from_ref(&signed),
            &d,
            NOW,
        )
        .unwrap();
        // Out of its window, the certificate no longer counts.
        let late = NOW.saturating_add(Span::from_secs(7200));
        assert!(
            p.check(Action::Deploy, member.public(), &[signed], &d, late)
                .is_err()
        );
    }

    #[test]
    fn limits_apply_to_create_and_deploy_and_name_the_limit() {
        let owner = key(3).public();
        let limits = ResourceLimits {
            max_ram_mib: Some(512),
            max_disk_bytes: Some(8 * MIB),
            max_workspaces: Some(2),
        };
        let p = NodePolicy::default_for([], limits);
        let mut d = desc(owner);
        d.hardware.ram = Some(Bounds::new(1024, 2048));
        let err = p.check(Action::Create, owner, &[], &d, NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy denies create: limit max_ram_mib=512 < requested 1024"
        );
        assert!(p.check(Action::Deploy, owner, &[], &d, NOW).is_err());
        // Publishing (relaying) is not about hosting: no limits.
        p.check(Action::Publish, owner, &[], &d, NOW).unwrap();
        p.check(Action::Manage, owner, &[], &d, NOW).unwrap();

        d.hardware.ram = Some(Bounds::new(512, 4096));
        if let Some(disk) = d.hardware.disk.as_mut() {
            disk.size_mib = 9;
        }
        let err = p.check(Action::Create, owner, &[], &d, NOW).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "limit max_disk_bytes={} < requested {}",
                8 * MIB,
                9 * MIB
            )),
            "{err}"
        );
        if let Some(disk) = d.hardware.disk.as_mut() {
            disk.size_mib = 8;
        }
        p.check(Action::Create, owner, &[], &d, NOW).unwrap();

        p.check_count(Action::Create, 1).unwrap();
        assert_eq!(
            p.check_count(Action::Deploy, 2).unwrap_err().to_string(),
            "policy denies deploy: limit max_workspaces=2 < requested 3"
        );
    }

    #[test]
    fn the_acl_decides_before_the_limits() {
        let p = NodePolicy::default_for(
            [],
            ResourceLimits {
                max_ram_mib: Some(1),
                ..ResourceLimits::default()
            },
        );
        let d = desc(key(3).public());
        let err = p
            .check(Action::Create, key(4).public(), &[], &d, NOW)
            .unwrap_err();
        assert!(matches!(err, PolicyDenied::Rule { .. }), "{err}");
    }

    #[test]
    fn config_file_and_flags_set_the_policy_file_and_limits() {
        use crate::config::{ConfigFile, NodeConfig};
        let file = ConfigFile::parse(
            Path::new("c.toml"),
            "policy = \"/etc/vwnet/policy.toml\"\nmax_ram_mib = 1024\nmax_workspaces = 3\n",
        )
        .unwrap();
        let cfg = NodeConfig::builder("/tmp/h")
            .resource_limits(ResourceLimits {
                max_ram_mib: Some(512),
                ..ResourceLimits::default()
            })
            .apply_file(file)
            .build()
            .unwrap();
        assert_eq!(cfg.policy_file(), Some(Path::new("/etc/vwnet/policy.toml")));
        // The flag wins; the file fills in what the flags left unset.
        assert_eq!(
            cfg.resource_limits(),
            ResourceLimits {
                max_ram_mib: Some(512),
                max_disk_bytes: None,
                max_workspaces: Some(3),
            }
        );
        let err =
            NodePolicy::from_file(Path::new("/nonexistent/p.toml"), ResourceLimits::default())
                .unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/p.toml: "),
            "{err}"
        );
    }

    #[test]
    fn a_bad_policy_file_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[[rule]]\neffect = \"allow\"\nactions = [\"fly\"]\neveryone = true\n",
        )
        .unwrap();
        let err = NodePolicy::from_file(&path, ResourceLimits::default()).unwrap_err();
        assert!(err.to_string().contains("rule[0].actions[0]"), "{err}");
    }

    #[test]
    fn expired_or_corrupted_workspaces_are_not_deployable() {
        let mut d = desc(key(3).public());
        let end = d.expires_at().expect("the template has a lifeCycle");
        ensure_deployable(&d, NOW).unwrap();
        let err = ensure_deployable(&d, end).unwrap_err();
        assert!(err.to_string().contains("expired at"), "{err}");
        d.life_cycle = None;
        ensure_deployable(&d, end).unwrap();
        d.state = State::Corrupted;
        assert!(matches!(
            ensure_deployable(&d, NOW),
            Err(NotDeployable::Corrupted(_))
        ));
    }
}
