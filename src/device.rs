//! Device selection.
