//! Site-aware swarms whose sites are larger than a host's neighbour view.

mod common;

use common::simulate;
use vwnet_sim::sim::{Strategy, SwarmParams, Workload};
use vwnet_sim::topology::Topology;

const MIB: u64 = 1 << 20;

/// The node ranks itself among every puller of its site for the units fetched across sites, so
/// each unit crosses about once per site. With a view of 8 neighbours and 40 pullers per site,
/// ranking among the neighbours alone would cross each unit about 40 / 7 times.
#[test]
fn a_site_larger_than_the_view_fetches_each_unit_across_about_once() {
    let topo = Topology::from_toml(
        "[defaults]\nuplink = \"1gbit\"\ndownlink = \"1gbit\"\ndelay = \"1ms\"\n\
         [[site]]\nname = \"a\"\nhosts = 40\n[[site]]\nname = \"b\"\nhosts = 40\n\
         [[wan]]\nsites = [\"a\", \"b\"]\nrate = \"10gbit\"\ndelay = \"10ms\"\n",
    )
    .unwrap();
    let size = 64 * MIB;
    let swarm = SwarmParams {
        piece: 256 * 1024,
        neighbours: 8,
        ..SwarmParams::default()
    };
    let r = simulate(&topo, Strategy::Swarm, size, &swarm, &Workload::default());
    assert!(r.hosts.iter().all(|h| h.completed.is_some()));
    let crossings = r.wan_bytes as f64 / size as f64;
    assert!(
        (1.0..=1.5).contains(&crossings),
        "{crossings:.2} x the image crossed sites"
    );
}
