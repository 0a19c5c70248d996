//! Signed workspace descriptions: signed by the owner, or by a delegate the owner authorised.

use super::{Record, RecordKind, Signed, SignedDelegation, Verified, VerifyError, sealed};
use crate::description::Description;
use crate::time::Timestamp;

/// A signed workspace description, not yet verified.
pub type SignedDescription = Signed<Description>;

/// A description whose signature was checked and whose signer is its owner or an authorised
/// delegate. The only form that may reach a store or a hypervisor.
pub type VerifiedDescription = Verified<Description>;

impl sealed::Sealed for Description {}

impl Record for Description {
    const KIND: RecordKind = RecordKind::Description;

    fn to_payload(&self) -> Vec<u8> {
        self.to_canonical_bytes()
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, String> {
        Description::from_canonical_bytes(bytes).map_err(|e| e.to_string())
    }
}

impl Signed<Description> {
    /// Verifies the signature strictly and that the signer may publish this description: its
    /// owner, or the delegate of a `delegation` that the owner signed, that is valid at `now`
    /// and whose scope covers this workspace. A delegation is ignored when the owner signed.
    pub fn verify(
        &self,
        delegation: Option<&SignedDelegation>,
        now: Timestamp,
    ) -> Result<VerifiedDescription, VerifyError> {
        let description = self.open()?;
        let signer = self.signer();
        let owner = description.owner;
        if signer == owner {
            return Ok(self.clone().into_verified(description, None));
        }
        let Some(delegation) = delegation else {
            return Err(VerifyError::NotOwner {
                signer: signer.short(),
                owner: owner.short(),
            });
        };
        let delegation = delegation
            .verify(now)
            .map_err(|e| VerifyError::Delegation(Box::new(e)))?;
        if delegation.delegator != owner {
            return Err(VerifyError::DelegationMismatch(format!(
                "granted by {}, but the description's owner is {}",
                delegation.delegator.short(),
                owner.short()
            )));
        }
        if delegation.delegate != signer {
            return Err(VerifyError::DelegationMismatch(format!(
                "granted to {}, but the description is signed by {}",
                delegation.delegate.short(),
                signer.short()
            )));
        }
        if !delegation.scope.allows_publish(description.id) {
            return Err(VerifyError::DelegationMismatch(format!(
                "its scope does not cover workspace {}",
                description.id.short()
            )));
        }
        Ok(self.clone().into_verified(description, Some(delegation)))
    }
}
