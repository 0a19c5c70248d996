//! The vwnet node: the libp2p swarm, chunk transfer, locks, workspace services and the hypervisor.
//!
//! - [`downloader`]: the sans-IO chunk scheduler (rarest first, per-peer limits, timeouts, bans,
//!   endgame) that the swarm and the simulator both drive.
//! - [`hypervisor`]: the `Hypervisor` trait (define, start, pause, save, restore...) and its
//!   libvirt backend for `test:///default` and `qemu:///system`.
//! - [`config`]: the node's validated configuration (builder, TOML file).
//! - [`network`]: the libp2p swarm: `EventLoop` (owns the swarm), `Client` handle, `Event`s.
//! - [`store_actor`]: the chunk store behind a bounded channel, blocking work off the runtime.
//! - [`catalog`]: the durable highest-accepted version of each workspace (`node.redb`).
//! - [`control`]: the local Unix-socket API between the CLI and a running node.
//! - [`daemon`]: `vwnet node run`: wires the tasks together and serves peers and the CLI.
//! - [`locks`]: deploy locks: leases with fencing tokens from a workspace's lock authorities.
//! - [`manager`]: deploys workspaces to the hypervisor and back (start, pause, save, undeploy
//!   with publication, migration); the node's one hypervisor connection.
//! - [`factory`], [`lifetime`]: `vwnet create`, pins, expiry and gc of expired workspaces.
//! - [`policy`]: who may create, publish, deploy, manage; resource limits; deployability.
//! - [`publish`], [`pull`]: the publish/ls/inspect handlers and the pull driver.
//! - [`metrics`], [`ratelimit`], [`shutdown`]: counters and their endpoint, byte-rate
//!   limits, the node-wide stop signal.
pub mod catalog;
pub mod config;
pub mod control;
pub mod daemon;
pub mod downloader;
pub mod factory;
pub mod hypervisor;
pub mod lifetime;
pub mod locks;
pub mod manager;
pub mod metrics;
pub mod network;
pub mod policy;
pub mod publish;
pub mod pull;
pub mod ratelimit;
pub mod shutdown;
pub mod store_actor;
