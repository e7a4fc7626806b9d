//! Fault injection at the store's writes, for the tests that fail or kill a real run at each one
//! (`tests/store_faults.rs`). Built on the `fail` crate: the binary reads `FAILPOINTS` once at
//! start-up (`FAILPOINTS="store::index-insert=2*off->return(kill)"` aborts the process at the
//! third index insert; `return(fail)` makes that write return an error instead). Inert unless
//! the variable is set.
//!
//! The points, in the order a blob's put reaches them: `store::blob-write` (temporary file
//! written, not yet fsynced), `store::blob-install` (before the rename into `objects/`),
//! `store::meta-write` (before an entry's file under `meta/`), `store::index-insert` (before the
//! sled insert), `store::index-flush` (before the flush that makes it durable).

/// Every fail point the store has, for the tests and `FAILPOINTS` users.
pub const POINTS: [&str; 5] = [
    "store::blob-write",
    "store::blob-install",
    "store::meta-write",
    "store::index-insert",
    "store::index-flush",
];

/// A fail point in a function returning `crate::Result<_>`: with `FAILPOINTS=<name>=return(fail)`
/// it returns an error naming the point; with `return(kill)` the process aborts on the spot (no
/// destructor runs, nothing is flushed: as a `kill -9` would leave it).
macro_rules! fault {
    ($name:literal) => {
        fail::fail_point!($name, |arg: Option<String>| Err(
            $crate::store::fault::injected($name, arg.as_deref())
        ))
    };
}
pub(crate) use fault;

#[doc(hidden)]
pub fn injected(point: &str, arg: Option<&str>) -> crate::Error {
    if arg == Some("kill") {
        eprintln!("fault injection: aborting at {point}");
        std::process::abort();
    }
    crate::Error::Store(format!("fault injection: the write at {point} failed"))
}
