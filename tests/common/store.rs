//! Store tests' access to a store's insides that the library does not offer.
use std::path::Path;

use serde::Serialize;

/// The `schema` record of the `meta` tree, as the store writes it (the fields in its order).
#[derive(Serialize)]
struct SchemaRecord {
    version: u32,
    created: u64,
    crate_version: String,
}

/// The pid in the holder file of the store at `root` (`index.holder`: `pid=`, `since=` and
/// `command=` lines, written by a process while it holds the index), if there is one.
pub fn holder_pid(root: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(root.join("index.holder")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))?
        .trim()
        .parse()
        .ok()
}

/// Rewrites the schema record of the (closed) store at `root` with `version`, enveloped as the
/// store envelopes it: for tests of the refusal of newer and older stores.
pub fn overwrite_schema_version(root: &Path, version: u32) {
    let db = open_index(root);
    let rec = SchemaRecord {
        version,
        created: ipirm::store::now_secs(),
        crate_version: env!("CARGO_PKG_VERSION").into(),
    };
    let bytes = ipirm::store::codec::encode(version, &rec).expect("the record encodes");
    db.open_tree("meta")
        .and_then(|t| t.insert(b"schema", bytes))
        .expect("the record is written");
    db.flush().expect("the index flushes");
}

/// Removes entries from the index of the (closed) store at `root`, leaving their meta files: what
/// a kill between an entry's meta file and its index insert leaves. `tree`: `artifacts` or `runs`.
pub fn drop_index_entries(root: &Path, tree: &str, ids: &[&str]) {
    let db = open_index(root);
    let t = db.open_tree(tree).expect("the tree opens");
    for id in ids {
        assert!(
            t.remove(id.as_bytes()).unwrap().is_some(),
            "no {id} in {tree}"
        );
    }
    db.flush().expect("the index flushes");
}

/// The sled database of the (closed) store at `root`.
fn open_index(root: &Path) -> sled::Db {
    // The store closes its index after each operation, but sled's background flusher may hold
    // the file lock a moment longer (this open failed once under a loaded test run): retry.
    let t0 = std::time::Instant::now();
    loop {
        match sled::open(root.join("index")) {
            Ok(db) => break db,
            Err(e) if t0.elapsed() > std::time::Duration::from_secs(10) => {
                panic!("the store's index does not open: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
