//! Losses as free functions over tensors.
