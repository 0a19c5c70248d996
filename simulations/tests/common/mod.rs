//! What the simulator's integration tests share.

use vwnet_sim::image::ImageModel;
use vwnet_sim::report::payload;
use vwnet_sim::sim::{RunResult, Sim, Strategy, SwarmParams, Workload};
use vwnet_sim::topology::Topology;

/// One run of `strategy` over `topo`: a random image of `size` bytes in 64 KiB chunks, fixed
/// seeds.
pub(crate) fn simulate(
    topo: &Topology,
    strategy: Strategy,
    size: u64,
    swarm: &SwarmParams,
    workload: &Workload,
) -> RunResult {
    let image = ImageModel::synthetic(size, 64 * 1024, 0.0, 3);
    let p = payload(&image, swarm.piece).unwrap();
    Sim::new(topo, strategy, &p, workload, swarm, 7)
        .unwrap()
        .run(&mut |_| {})
}
