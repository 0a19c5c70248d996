//! The signed-envelope decoder and every record kind's verifier on arbitrary bytes: no panic,
//! canonical decoding, and nothing verifies without a real signature. The body is
//! `vwnet_protocol::signed::fuzz_verify`, which the stable test suite also runs through proptest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Arbitrary input cannot carry a valid ed25519 signature by chance; a verified record here
    // would mean verification accepts forgeries.
    assert!(
        vwnet_protocol::signed::fuzz_verify(data).is_none(),
        "fuzzer-made bytes verified as a signed record"
    );
});
