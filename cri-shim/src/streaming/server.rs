//! placeholder: see streaming/mod.rs
