//! The deploy protocol's wire messages (`/vwnet/deploy/1`, a migration's last step): golden
//! bytes, limits, round trips.

use vwnet_protocol::description::{State, template_for};
use vwnet_protocol::identity::Identity;
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::signed::SignedDescription;
use vwnet_protocol::time::Timestamp;
use vwnet_protocol::wire::*;

mod wire_support;
use wire_support::golden;

#[test]
fn deploy_responses_have_stable_bytes() {
    golden(
        &DeployResponse::Deployed {
            version: 2,
            state: State::Paused,
            bytes_fetched: 1000,
            bytes_local: 300,
            millis: 5,
        },
        concat!(
            "01",   // wire version
            "00",   // Deployed
            "02",   // version 2
            "01",   // state: paused
            "e807", // bytes_fetched 1000
            "ac02", // bytes_local 300
            "05",   // millis 5
        ),
    );
    golden(&DeployResponse::Failed("no".into()), "0101026e6f");
    golden(&DeployResponse::Refused(Refusal::Busy), "010200");
}

#[test]
fn a_failure_reason_is_capped() {
    let long = DeployResponse::Failed("x".repeat(MAX_DEPLOY_REASON_LEN + 1));
    assert!(long.encode().is_err());
    let max = DeployResponse::Failed("x".repeat(MAX_DEPLOY_REASON_LEN));
    assert_eq!(DeployResponse::decode(&max.encode().unwrap()).unwrap(), max);
}

#[test]
fn deploy_requests_carry_a_signed_description() {
    let owner = Identity::from_secret_bytes(&[7; 32]);
    let text = template_for(
        WorkspaceId::from_bytes([9; 16]),
        owner.public(),
        Timestamp::from_unix_secs(1_800_000_000),
    );
    let desc = vwnet_protocol::description::Description::from_toml_str(&text).unwrap();
    let request = DeployRequest {
        announcement: DescriptionAnnouncement {
            description: SignedDescription::sign(&owner, &desc).unwrap(),
            delegation: None,
        },
        resume: true,
    };
    let bytes = request.encode().unwrap();
    assert_eq!(DeployRequest::decode(&bytes).unwrap(), request);
    // A truncated request is refused, not half-read.
    assert!(DeployRequest::decode(&bytes[..bytes.len() - 1]).is_err());
}
