//! tonic services (owned by the rcri core helper).
