//! A flow-level simulator of vwnet transfer, deployment and migration costs.
