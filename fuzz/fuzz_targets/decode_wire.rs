//! Every wire message decoder on arbitrary bytes: no panic, no over-allocation, and whatever
//! decodes re-encodes to the same bytes. The body is `vwnet_protocol::wire::fuzz_decode`, which
//! the stable test suite also runs through proptest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vwnet_protocol::wire::fuzz_decode(data);
});
