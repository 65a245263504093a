//! rcri: a CRI v1 server (RuntimeService + ImageService) that runs pods through an OCI runtime
//! driven by the runc command-line contract. See shared/DESIGN.md, "cri-shim/".

pub mod cni;
pub mod config;
pub mod container;
pub mod image;
pub mod monitor;
pub mod netns;
pub mod runtime_client;
pub mod sandbox;
pub mod server;
pub mod store;
