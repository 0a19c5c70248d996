//! Helpers shared by the cross-crate tests in `tests/tests/`.
pub mod images;
