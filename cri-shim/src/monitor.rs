//! See shared/DESIGN.md (owned by the rcri core helper).
