//! What a long run's record costs the store: `N` artifacts put under one run (each put rewrites
//! the run record, which lists every key so far), then all of them attached again the way a
//! resumed run re-attaches what it stands on: one call per key (each opens the index; before
//! 2026-12-05 each also rewrote the whole record) and in one call (as `Ctx::attach_stored` does
//! now). Prints seconds and the index size.
//!
//! `cargo run --release --example store_attach -- 3000` (default 1000)
use std::path::Path;
use std::time::Instant;

use ipirm::store::{Stage, Store};

fn main() -> ipirm::Result<()> {
    let n: u64 = match std::env::args().nth(1) {
        None => 1000,
        Some(a) => a
            .parse()
            .map_err(|_| ipirm::Error::Store(format!("N: expected a count, got `{a}`")))?,
    };
    let dir = std::env::temp_dir().join(format!("ipirm-store-attach-{}", std::process::id()));
    let store = Store::open(&dir)?;
    let run = store.start_run("bench", &n)?;
    let t = Instant::now();
    let mut keys = Vec::new();
    for i in 0..n {
        let st = Stage::new("rec", 1, &i, &[])?.run(&run.id);
        store.put_record(&st, &i)?;
        keys.push(st.key().to_string());
    }
    let puts = t.elapsed().as_secs_f64();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let t = Instant::now();
    for &k in &keys {
        store.attach(&run.id, &[k])?;
    }
    let one_by_one = t.elapsed().as_secs_f64();
    let t = Instant::now();
    store.attach(&run.id, &keys)?;
    let in_one_call = t.elapsed().as_secs_f64();
    println!(
        "{n} records put under one run: {puts:.2} s ({:.1} ms each on average)",
        puts * 1e3 / n as f64
    );
    println!("re-attaching all {n}, one call per key: {one_by_one:.2} s; in one call: {in_one_call:.3} s ({:.0}x)", one_by_one / in_one_call);
    println!("index: {:.1} MB", size(&dir.join("index")) as f64 / 1e6);
    drop(store);
    std::fs::remove_dir_all(&dir).map_err(|e| ipirm::Error::io(&dir, e))
}

fn size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
