//! `vwnet acl`: decide requests against a policy, and issue attribute certificates.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use vwnet_protocol::acl::{Action, Decision, Policy, Request};
use vwnet_protocol::ids::PeerIdentity;
use vwnet_protocol::signed::{Attribute, AttributeCertificate, SignedAttributeCertificate};
use vwnet_protocol::time::{Span, Timestamp};

use crate::context::Context;
use crate::fsutil;
use crate::output::Reported;

/// ACL subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Decide whether an identity may do an action under a policy; exits 1 when denied.
    Check {
        /// The policy (TOML).
        policy: PathBuf,
        /// The requester's public identity (64 hex digits).
        #[arg(long)]
        who: PeerIdentity,
        /// create, publish, deploy or manage.
        #[arg(long)]
        action: Action,
        /// An attribute certificate the requester presents (repeatable).
        #[arg(long = "attr-cert", value_name = "FILE")]
        attr_certs: Vec<PathBuf>,
    },
    /// Sign an attribute certificate with this home's key (acting as a VO).
    Issue {
        /// Whom the attributes are about.
        #[arg(long)]
        subject: PeerIdentity,
        /// An attribute such as `vo=biology` (repeatable).
        #[arg(long = "attr", value_name = "NAME=VALUE", required = true)]
        attributes: Vec<Attribute>,
        /// How long the certificate is valid, from now (e.g. `30days`).
        #[arg(long, default_value = "30days")]
        valid: Span,
        /// Where to write the certificate.
        #[arg(short, long, value_name = "OUT")]
        out: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Runs an ACL subcommand.
pub(crate) fn run(cmd: AclCommand, ctx: &Context) -> anyhow::Result<()> {
    let now = Timestamp::now();
    match cmd {
        AclCommand::Check {
            policy,
            who,
            action,
            attr_certs,
        } => {
            let text = std::fs::read_to_string(&policy)
                .with_context(|| format!("{}: cannot read", policy.display()))?;
            let parsed = Policy::from_toml(&text).with_context(|| policy.display().to_string())?;
            let certs = attr_certs
                .iter()
                .map(|p| read_cert(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let decision = parsed.decide(&Request {
                who,
                action,
                certs: &certs,
                now,
            });
            ctx.report(&decision, decision_text)?;
            if decision.allowed {
                Ok(())
            } else if ctx.json {
                Err(Reported.into())
            } else {
                anyhow::bail!("{} may not {action}: {}", who.short(), decision.reason)
            }
        }
        AclCommand::Issue {
            subject,
            attributes,
            valid,
            out,
            force,
        } => {
            fsutil::check_overwrite(&out, force)?;
            let identity = ctx.load_identity()?;
            let cert = AttributeCertificate {
                issuer: identity.public(),
                subject,
                attributes,
                not_before: now,
                not_after: now.saturating_add(valid),
            };
            let signed = SignedAttributeCertificate::sign(&identity, &cert)?;
            // Check what we wrote verifies, so a bad certificate never reaches a file.
            signed
                .verify(now)
                .context("the new certificate does not verify")?;
            fsutil::write_atomic(&out, &signed.to_bytes(), 0o644)?;
            let info = Issued {
                file: out.display().to_string(),
                issuer: cert.issuer.to_string(),
                subject: cert.subject.to_string(),
                attributes: cert.attributes.iter().map(ToString::to_string).collect(),
                not_after: cert.not_after.to_string(),
            };
            ctx.report(&info, |i| {
                format!(
                    "issued {} to {} until {} -> {}",
                    i.attributes.join(", "),
                    i.subject,
                    i.not_after,
                    i.file
                )
            })
        }
    }
}

fn read_cert(path: &Path) -> anyhow::Result<SignedAttributeCertificate> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    SignedAttributeCertificate::from_bytes(&bytes)
        .with_context(|| format!("{}: not an attribute certificate", path.display()))
}

fn decision_text(d: &Decision) -> String {
    let verdict = if d.allowed { "allow" } else { "deny" };
    let mut s = format!("{verdict}: {}", d.reason);
    for ignored in &d.ignored {
        s.push_str(&format!("\n  ignored: {ignored}"));
    }
    s
}

/// What `acl issue` prints.
#[derive(Serialize)]
struct Issued {
    file: String,
    issuer: String,
    subject: String,
    attributes: Vec<String>,
    not_after: String,
}
