//! Size limits that every encoder respects and every decoder enforces before allocating.
//!
//! They live in one place because the chunker, the wire codecs and the node must agree on them:
//! a chunker configured above [`MAX_CHUNK_LEN`] would produce chunks that no peer accepts.

/// Largest chunk body, in bytes, that any store or peer accepts.
pub const MAX_CHUNK_LEN: usize = 1024 * 1024;

/// Largest canonical encoding of a workspace description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 64 * 1024;

/// Largest signed record of any kind (description, lock, certificate, delegation), in bytes.
///
/// A signed description must fit in one gossip message together with the envelope; gossipsub's
/// default 64 KiB cap is below this, so the node raises its `max_transmit_size` to
/// `wire::MAX_GOSSIP_LEN`.
pub const MAX_SIGNED_RECORD_LEN: usize = MAX_DESCRIPTION_LEN + 4 * 1024;

/// Largest canonical manifest, in bytes: about 900,000 chunks, i.e. a 55 GiB image at the
/// default 64 KiB average chunk size. Manifests travel by request-response, never by gossip.
pub const MAX_MANIFEST_LEN: usize = 32 * 1024 * 1024;
