//! Training steps.
