//! rcrun: a low-level OCI container runtime that follows the runc command-line contract.
//!
//! The arrows go one way: `cli` → `container` → `process` → (`rootfs`, `namespaces`,
//! `cgroups`, `capabilities`, `identity`, `rlimits`, `sysctl`, `seccomp`) → the kernel.

pub mod bundle;
pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod container;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod identity;
pub mod json_path;
pub mod kernel_file;
pub mod logging;
pub mod namespaces;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sysctl;
