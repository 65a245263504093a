//! The home-grown kubelet behind `rcrictl run`: Kubernetes `v1 Pod` manifests run through any
//! CRI runtime the way kubelet runs them — sandbox, init containers, containers, volumes,
//! configuration and secrets, restarts with back-off, probes, graceful termination, static pods.
//!
//! Reading a manifest (`manifest`, `quantity`) and turning it into CRI requests (`convert`,
//! `sources`, `volumes`, `etchosts`) is kept apart from driving it over time (`worker`, `probe`, `backoff`,
//! `status`, `records`, `staticpods`, `progress`).

pub mod backoff;
pub mod convert;
pub mod etchosts;
pub mod manifest;
pub mod probe;
pub mod progress;
pub mod quantity;
pub mod records;
pub mod sources;
pub mod staticpods;
pub mod status;
pub mod volumes;
pub mod worker;
