//! Fault injection at every write the store makes (blob, meta file, index entry, flush): a run
//! whose write fails, or whose process is killed right there, leaves a store that verifies (or
//! names its damage); a rerun ends on the same digests as a run that never met a fault; and no
//! key ever holds a content other than the one its inputs define.
use std::collections::BTreeMap;
use std::path::Path;

use ipirm::store::fault::POINTS;

mod common;
use common::run::{ipirm, ipirm_env, ok, shown_digests, tiny_run, train, ONE_THREAD};

const RUN: &str = "fmnist-ipirm-quick";

/// Every (key, digest) of every blob artifact in the store, from `store show KEY --json` of each
/// key `store ls` lists (so stages of interrupted runs are included).
fn all_digests(store: &Path) -> BTreeMap<String, String> {
    let ls = ok(store, &["store", "ls"], &[]);
    let mut out = BTreeMap::new();
    for prefix in ls
        .lines()
        .filter(|l| l.starts_with("stage "))
        .filter_map(|l| l.split_whitespace().nth(3))
    {
        for (k, d) in shown_digests(store, prefix) {
            out.insert(k, d);
        }
    }
    out
}

fn check_faults(action: &str, nth: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let args = tiny_run(tmp.path());
    let clean = tmp.path().join("clean");
    // Every run on one intra-op thread, so that a rerun rounds as the clean run did.
    train(&clean, &args);
    let want: BTreeMap<String, String> = shown_digests(&clean, RUN).into_iter().collect();
    assert!(want.len() >= 8);
    for point in POINTS {
        let store = tmp.path().join(point.replace("::", "-"));
        let spec = format!("{point}={}*off->return({action})", nth - 1);
        let env = [ONE_THREAD[0], ("FAILPOINTS", spec.as_str())];
        let (success, text) = ipirm_env(&store, &["train"], &args, &env);
        assert!(!success, "{spec}: the fault was never reached:\n{text}");
        if action == "fail" {
            assert!(
                text.contains(&format!("fault injection: the write at {point} failed")),
                "{spec}:\n{text}"
            );
        }
        let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
        assert!(
            verified || v.contains("damaged") || v.contains("missing"),
            "{spec}: verify must pass or name the damage:\n{v}"
        );
        // Nothing indexed so far holds other content than the same key in the clean store.
        for (k, d) in all_digests(&store) {
            if let Some(w) = want.get(&k) {
                assert_eq!(
                    &d, w,
                    "{spec}: artifact {k} holds other bytes than in the clean store"
                );
            }
        }
        let again = train(&store, &args);
        assert!(again.contains("final checkpoint"), "{spec}:\n{again}");
        let got: BTreeMap<String, String> = shown_digests(&store, RUN).into_iter().collect();
        assert_eq!(
            got, want,
            "{spec}: the rerun must end on the clean run's digests"
        );
        let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
        assert!(verified, "{spec}: {v}");
    }
}

#[test]
fn a_failing_write_at_any_point_leaves_a_store_that_reruns_to_the_same_digests() {
    check_faults("fail", 2);
}

#[test]
fn a_kill_at_any_write_leaves_a_store_that_reruns_to_the_same_digests() {
    check_faults("kill", 3);
}
