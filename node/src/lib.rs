//! The vwnet node: the libp2p swarm, chunk transfer, locks, workspace services and the hypervisor.
