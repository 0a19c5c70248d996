//! Ingest or export one image with the store API, for timing and peak RSS measurements without
//! building the whole CLI (which links libp2p) in release mode.
//!
//! `store_bench add STORE_DIR IMAGE` prints the image id; `store_bench export STORE_DIR ID OUT`.
#![allow(clippy::print_stdout)]

use vwnet_chunker::{IngestOptions, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["add", store, image] => {
            let store = Store::open(store)?;
            let r = store.ingest_file(image.as_ref(), &IngestOptions::default(), &mut |_, _| {})?;
            println!(
                "{} new {} existing {}",
                r.image, r.new_bytes, r.existing_bytes
            );
        }
        ["export", store, id, out] => {
            let store = Store::open(store)?;
            let r = store.export(&id.parse()?, out.as_ref(), &mut |_, _| {})?;
            println!("{} bytes, {} holes", r.size, r.hole_bytes);
        }
        _ => return Err("usage: store_bench add STORE IMAGE | export STORE ID OUT".into()),
    }
    Ok(())
}
