//! *Clone*: a new workspace made from an existing one (the paper's way of creating workspaces).

use super::model::{Description, Lineage};
use crate::ids::WorkspaceId;
use crate::time::Timestamp;

/// A new workspace named `new_name` with a fresh random id, made from `desc`.
///
/// Hardware, network, software, capability, state, life cycle, owner and image references are
/// copied (the images' chunks are shared, not duplicated). The lineage records the source's id,
/// version and digest. The clone starts its own history: version 1, no previous version,
/// created and last modified `now`. Lock authorities are not copied: they belong to the source
/// workspace, and the node that publishes the clone decides its own. The owner is kept; a caller
/// cloning someone else's workspace sets `owner` (and `owner_name`) to the new owner.
pub fn clone_as(desc: &Description, new_name: &str, now: Timestamp) -> Description {
    let mut clone = desc.clone();
    clone.id = WorkspaceId::random();
    clone.name = new_name.to_string();
    clone.cloned_from = Some(Lineage {
        workspace: desc.id,
        version: desc.version,
        description: desc.digest(),
    });
    clone.creation_time = now;
    clone.last_modified = now;
    clone.version = 1;
    clone.previous = None;
    clone.lock_authorities = Vec::new();
    clone
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sample;
    use super::*;

    #[test]
    fn clone_has_new_identity_same_metadata_and_lineage() {
        let mut d = sample();
        d = d.next_version(Timestamp::from_unix_secs(1_795_000_100));
        let now = Timestamp::from_unix_secs(1_796_000_000);
        let c = clone_as(&d, "bio-env-2", now);
        assert_ne!(c.id, d.id);
        assert_eq!(c.name, "bio-env-2");
        assert_eq!(c.hardware, d.hardware);
        assert_eq!(c.software, d.software);
        assert_eq!(c.image, d.image);
        assert_eq!(c.creation_time, now);
        assert_eq!(c.version, 1);
        assert_eq!(c.previous, None);
        let lineage = c.cloned_from.unwrap();
        assert_eq!(lineage.workspace, d.id);
        assert_eq!(lineage.version, 2);
        assert_eq!(lineage.description, d.digest());
        c.validate().unwrap();
    }
}
