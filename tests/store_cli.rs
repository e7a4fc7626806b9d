//! The `store` commands through the binary, with their real flags, on a store holding a finished
//! tiny run: export/import, gc after failed and running runs, pin by name, a read-only store, a
//! damaged index (a stale sled snapshot, changed bytes, a full disk) and `store repair`.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;
use common::run::{ipirm, ipirm_env, ok, ok_one_thread, shown_digests, tiny_run, with, ONE_THREAD};

const RUN: &str = "fmnist-ipirm-quick";

/// A folder holding `data/` and `store/` with one finished tiny run, made once per test binary
/// on one intra-op thread (a test that recomputes it compares bytes).
fn finished() -> &'static (PathBuf, Vec<String>) {
    static MADE: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let args = tiny_run(&dir);
        ok_one_thread(&dir.join("store"), &["run"], &args);
        (dir, args)
    })
}

/// A private copy of the finished store (and the flags of its run).
fn copy_of_finished() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let (dir, args) = finished();
    let tmp = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(dir.join("store"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(st.success());
    let store = tmp.path().join("store");
    (tmp, store, args.clone())
}

/// `ipirm ARGS` with no `--store` added: (exit code, stdout, stderr).
fn raw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(args)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!e.contains("panicked"), "ipirm {args:?} panicked:\n{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn export_and_import_through_the_cli_with_the_flag_anywhere() {
    let (tmp, store, _) = copy_of_finished();
    let want = shown_digests(&store, RUN);
    assert!(want.len() > 8);
    // `--store` before the subcommand, after it, and before `store`.
    let (e1, e2, e3) = (
        tmp.path().join("e1"),
        tmp.path().join("e2"),
        tmp.path().join("e3"),
    );
    for (args, dir) in [
        (vec!["store", "--store", s(&store), "export", s(&e1)], &e1),
        (vec!["store", "export", s(&e2), "--store", s(&store)], &e2),
        (vec!["--store", s(&store), "store", "export", s(&e3)], &e3),
    ] {
        let (code, out, err) = raw(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.contains("exported") && dir.join("manifest.json").is_file(),
            "{args:?}: {out}"
        );
        assert!(
            !dir.join("index").exists() && !store.join("e1").exists(),
            "the export folder is not opened as a store"
        );
    }
    // Exporting into a folder that is not empty is refused, naming it.
    let (code, _, err) = raw(&["store", "--store", s(&store), "export", s(&e1)]);
    assert!(
        code == 2 && err.contains("not empty") && err.contains(s(&e1)),
        "{err}"
    );

    let fresh = tmp.path().join("fresh");
    let (code, out, err) = raw(&["store", "--store", s(&fresh), "import", s(&e2)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("imported") && fresh.join("index").is_dir(),
        "{out}"
    );
    assert!(
        !e2.join("index").exists(),
        "import must not open the export as a store"
    );
    assert_eq!(shown_digests(&fresh, RUN), want);
    let (code, out, _) = raw(&["store", "import", s(&e3), "--store", s(&fresh)]);
    assert!(code == 0 && out.contains("already present"), "{out}");
    let (verified, v) = ipirm(&fresh, &["store", "verify"], &[]);
    assert!(verified, "{v}");
}

#[test]
fn a_failed_or_running_run_never_displaces_the_finished_one() {
    let (tmp, store, args) = copy_of_finished();
    let want = shown_digests(&store, RUN);
    // A run of the same name that fails (no data) is recorded, unfinished.
    let args: Vec<String> = args
        .into_iter()
        .filter(|a| !a.starts_with("--data-dir"))
        .collect();
    let (success, text) = ipirm(&store, &["run"], &with(&args, &["--data-dir=/nonexistent"]));
    assert!(!success && text.contains("/nonexistent"), "{text}");
    let gc = ok(&store, &["store", "gc"], &[]);
    assert!(gc.contains("removed 0 runs, 0 artifacts"), "{gc}");
    assert_eq!(
        shown_digests(&store, RUN),
        want,
        "`show NAME` still names the finished run"
    );
    let ls = ok(&store, &["store", "ls"], &[]);
    let latest = ls.lines().find(|l| l.contains("latest")).unwrap();
    assert!(
        latest.contains("finished") && !latest.contains("unfinished"),
        "{ls}"
    );
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
    drop(tmp);
}

#[test]
fn pin_takes_a_run_name() {
    let (_tmp, store, _) = copy_of_finished();
    let out = ok(&store, &["store", "pin", RUN], &[]);
    assert!(out.contains(&format!("pinned {RUN}-")), "{out}");
    assert!(ok(&store, &["store", "ls"], &[]).contains("pinned,latest,finished"));
    let out = ok(&store, &["store", "pin", "--off", RUN], &[]);
    assert!(out.contains("unpinned"), "{out}");
    let (success, text) = ipirm(&store, &["store", "pin", "no-such-run"], &[]);
    assert!(!success && text.contains("no-such-run"), "{text}");
}

#[test]
fn a_store_path_naming_a_file_or_no_store_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = raw(&["store", "--store", s(&file), "ls"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(s(&file)) && err.contains("not a folder") && !err.contains("File exists"),
        "{err}"
    );
    // A path with no store (absent, or an empty folder): the commands that read one refuse it
    // and leave nothing behind; an import makes one (and `report` shows the paper's table
    // alone, see report_html).
    let (absent, empty) = (tmp.path().join("absent"), tmp.path().join("empty"));
    std::fs::create_dir(&empty).unwrap();
    for dir in [&absent, &empty] {
        for cmd in [
            &["ls"][..],
            &["verify"],
            &["gc"],
            &["show", "x"],
            &["pin", "x"],
        ] {
            let (code, _, err) = raw(&[&["store", "--store", s(dir)][..], cmd].concat());
            assert!(
                code == 2 && err.contains("no artifact store at"),
                "{cmd:?}: {err}"
            );
            assert!(err.contains(s(dir)), "{err}");
        }
        let (code, _, err) = raw(&[
            "store",
            "--store",
            s(dir),
            "export",
            s(&tmp.path().join("e")),
        ]);
        assert!(code == 2 && err.contains("no artifact store at"), "{err}");
        assert!(!tmp.path().join("e").exists());
        // `ipirm compare` reads runs too.
        let (code, _, err) = raw(&["compare", "a", "b", "--store", s(dir)]);
        assert!(code == 2 && err.contains("no artifact store at"), "{err}");
    }
    assert!(!absent.exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

/// Output into a closed pipe (`| head -0`, `| true`) ends the program quietly, with status 141
/// as SIGPIPE ends other tools: it was 0, so `report --check | head` passed a failing gate
/// under `pipefail`.
#[test]
fn a_closed_stdout_pipe_ends_quietly_with_status_141() {
    let (_tmp, store, _) = copy_of_finished();
    // A pipe whose reading end is closed before the program starts.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["store", "--store", s(&store), "show", RUN])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// Runs `args` as an unprivileged user when this process is root (root writes anywhere), so the
/// store's folder is read-only to the command.
fn as_reader(args: &[&str]) -> (i32, String, String) {
    let root = unsafe_is_root();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_ipirm"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ipirm"))
    };
    let out = cmd.args(args).env("TMPDIR", "/tmp").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unsafe_is_root() -> bool {
    String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0"
}

#[test]
fn a_read_only_store_can_be_listed_verified_shown_and_exported() {
    let (tmp, store, _) = copy_of_finished();
    let before = shown_digests(&store, RUN);
    // Everyone may read and enter; nobody but the owner may write (and, as root, the commands
    // run as `nobody`).
    let st = Command::new("chmod")
        .args(["-R", "a+rX,a-w"])
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out_dir = std::env::temp_dir().join(format!("ipirm-ro-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    Command::new("chmod")
        .arg("777")
        .arg(&out_dir)
        .status()
        .unwrap();
    let export = out_dir.join("export");

    let (code, out, err) = as_reader(&["store", "--store", s(&store), "ls"]);
    assert!(code == 0 && out.contains("1 runs"), "{out}{err}");
    let (code, out, err) = as_reader(&["store", "--store", s(&store), "verify"]);
    assert!(code == 0 && out.contains("0 damaged"), "{out}{err}");
    let (code, out, err) = as_reader(&["store", "--store", s(&store), "show", RUN]);
    assert!(code == 0 && out.contains("finished  true"), "{out}{err}");
    let (code, out, err) = as_reader(&["store", "--store", s(&store), "export", s(&export)]);
    assert!(code == 0 && out.contains("exported"), "{out}{err}");
    // A write is refused with a message saying why.
    let (code, _, err) = as_reader(&["store", "--store", s(&store), "gc"]);
    assert!(code == 2 && err.contains("read-only"), "{err}");

    Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(tmp.path())
        .status()
        .unwrap();
    assert_eq!(
        shown_digests(&store, RUN),
        before,
        "reading left the store as it was"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// sled 0.34 reads a leftover `snap.*.generating` (from a process that died or ran out of disk
/// while writing a snapshot) as the newest snapshot and fails every open with "Read corrupted
/// data". The store removes such files when no process holds the index.
#[test]
fn a_stale_snapshot_file_does_not_lock_users_out() {
    let (_tmp, store, _) = copy_of_finished();
    std::fs::write(
        store.join("index").join("snap.FFFFFFFFFFFFFFFF.generating"),
        b"",
    )
    .unwrap();
    let ls = ok(&store, &["store", "ls"], &[]);
    assert!(ls.contains("1 runs"), "{ls}");
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
}

/// The index's own files changed by bytes: the error names `store repair`, which rebuilds the
/// index from the meta files, keeping every artifact and run.
#[test]
fn a_damaged_index_is_named_and_repaired() {
    let (_tmp, store, args) = copy_of_finished();
    let want = shown_digests(&store, RUN);
    let ls_before = ok(&store, &["store", "ls"], &[]);
    // Damage every file of the index: flip bytes all through them.
    for entry in std::fs::read_dir(store.join("index")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let mut b = std::fs::read(&p).unwrap();
            for i in (0..b.len()).step_by(97) {
                b[i] ^= 0x5a;
            }
            std::fs::write(&p, b).unwrap();
        }
    }
    let (success, text) = ipirm(&store, &["store", "ls"], &[]);
    assert!(
        !success && text.contains("store repair"),
        "the error names the repair:\n{text}"
    );
    let rep = ok(&store, &["store", "repair"], &[]);
    assert!(
        rep.contains("rebuilt the index") && rep.contains("0 entries left out"),
        "{rep}"
    );
    let aside = (std::fs::read_dir(&store).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index.before-repair-"))
        .count();
    assert_eq!(aside, 1, "the old index is kept aside once");
    assert_eq!(ok(&store, &["store", "ls"], &[]), ls_before);
    assert_eq!(shown_digests(&store, RUN), want);
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
    // And it is a working store: the run is a cache hit.
    let again = ok(&store, &["run"], &args);
    assert!(again.contains("training: cached"), "{again}");
}

#[test]
fn repair_from_an_export_when_the_meta_files_are_gone_too() {
    let (tmp, store, _) = copy_of_finished();
    let want = shown_digests(&store, RUN);
    let export = tmp.path().join("export");
    ok(&store, &["store", "export", s(&export)], &[]);
    std::fs::remove_dir_all(store.join("index")).unwrap();
    std::fs::remove_dir_all(store.join("meta")).unwrap();
    let (success, text) = ipirm(&store, &["store", "repair"], &[]);
    assert!(
        !success && text.contains("--from"),
        "without meta files the error points at an export:\n{text}"
    );
    let rep = ok(&store, &["store", "repair", "--from", s(&export)], &[]);
    assert!(rep.contains("imported"), "{rep}");
    assert_eq!(shown_digests(&store, RUN), want);
}

/// `repair --from` an export that cannot be added (a changed blob, a manifest that is not JSON)
/// fails before the store's index is moved aside: the store is as it was.
#[test]
fn repair_from_a_bad_export_leaves_the_index_in_place() {
    let (tmp, store, _) = copy_of_finished();
    let ls_before = ok(&store, &["store", "ls"], &[]);
    let export = tmp.path().join("export");
    ok(&store, &["store", "export", s(&export)], &[]);
    let blob = (std::fs::read_dir(export.join("objects")).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .expect("the export has a blob");
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
    let manifest = export.join("manifest.json");
    let good = std::fs::read(&manifest).unwrap();
    for (damage, names) in [
        ("a changed blob", "sha256"),
        ("a cut manifest", "manifest.json"),
    ] {
        if damage == "a cut manifest" {
            bytes[mid] ^= 0x01;
            std::fs::write(&blob, &bytes).unwrap();
            std::fs::write(&manifest, &good[..good.len() / 2]).unwrap();
        }
        let (success, text) = ipirm(&store, &["store", "repair", "--from", s(&export)], &[]);
        assert!(!success && text.contains(names), "{damage}:\n{text}");
        let moved: Vec<_> = (std::fs::read_dir(&store).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("index."))
            .collect();
        assert!(moved.is_empty(), "{damage}: the index was moved: {moved:?}");
        assert_eq!(ok(&store, &["store", "ls"], &[]), ls_before, "{damage}");
    }
}

/// A real full disk: a small tmpfs holding the store is filled to the last byte, then `pin` and
/// `run` are tried (sled 0.34 then left a 0-byte `snap.*.generating` file that made every later
/// open fail with "Read corrupted data"); once space is freed every command works and the run is
/// a cache hit. A run on an almost full disk fails part-way and, after space is freed, completes
/// to the same digests. Needs root and mount(8); skipped with a note elsewhere.
#[test]
fn a_full_disk_leaves_a_readable_store() {
    if !unsafe_is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let (dir, args) = finished();
    let want = shown_digests(&dir.join("store"), RUN);
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());

    // 1. A finished store on a disk filled to the last byte.
    let store = mnt.join("store");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(dir.join("store"))
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let ls = ok(&store, &["store", "ls"], &[]);
    let id = ls
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let filler = mnt.join("filler");
    fill(&filler);
    // Writes fail (or fit in space sled already holds); none may break the index.
    for off in [false, true, false] {
        let (success, t) = ipirm(
            &store,
            &["store", "pin", &id],
            &with(&[], if off { &["--off"] } else { &[] }),
        );
        assert!(success || t.contains("No space left"), "{t}");
    }
    let (success, t) = ipirm(&store, &["run"], &with(args, &["--set=linear.lr=0.5"]));
    assert!(!success && t.contains("No space left"), "{t}");
    std::fs::remove_file(&filler).unwrap();
    let ls = ok(&store, &["store", "ls"], &[]);
    assert!(ls.contains("latest,finished"), "{ls}");
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
    assert!(ok(&store, &["run"], args).contains("training: cached"));
    same_digests(&store, &want);

    // 2. A run that meets the full disk part-way (on one thread, as the finished run was: its
    // digests are compared).
    let store = mnt.join("store2");
    std::fs::remove_dir_all(mnt.join("store")).unwrap();
    std::fs::write(&filler, vec![7u8; 7 * 1024 * 1024 + 512 * 1024]).unwrap();
    let (success, text) = ipirm_env(&store, &["run"], args, ONE_THREAD);
    assert!(
        !success && text.contains("No space left"),
        "the run cannot fit:\n{text}"
    );
    std::fs::remove_file(&filler).unwrap();
    assert!(ok(&store, &["store", "ls"], &[]).starts_with("store "));
    ok_one_thread(&store, &["run"], args);
    same_digests(&store, &want);
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
}

/// Every (key, digest) of `want` is in `store` with that digest.
fn same_digests(store: &Path, want: &[(String, String)]) {
    for (key, digest) in want {
        let found = shown_digests(store, key);
        assert!(
            found.contains(&(key.clone(), digest.clone())),
            "artifact {key}: {digest} expected, {found:?} found"
        );
    }
}

/// Writes `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// A store whose index is lost (its meta files and blobs intact): `ls` and `verify` say so
/// instead of showing an empty store, `gc` refuses instead of deleting every blob (it deleted all of them
/// before), and after `store repair` everything is there. With the meta files lost too, `ls`
/// says the index is empty while blobs are present.
#[test]
fn a_lost_index_is_restored_on_open_and_blobs_without_records_make_gc_refuse() {
    let (tmp, store, _) = copy_of_finished();
    let want = shown_digests(&store, RUN);
    let blobs = || common::files_under(&store.join("objects")).len();
    let before = blobs();
    assert!(before > 0);
    std::fs::remove_dir_all(store.join("index")).unwrap();
    // Restoring re-hashes every blob: a log gets progress lines (here every one).
    let (listed, ls) = ipirm_env(&store, &["store", "ls"], &[], &[("IPIRM_LOG_EVERY", "0")]);
    assert!(
        listed
            && ls.contains("restoring: ")
            && ls.contains("entries restored to the index from their meta files"),
        "ls says what opening restored:\n{ls}"
    );
    assert_eq!(shown_digests(&store, RUN), want);
    ok(&store, &["store", "verify"], &[]);
    let gc = ok(&store, &["store", "gc"], &[]);
    assert!(!gc.contains("refuses"), "{gc}");
    assert_eq!(shown_digests(&store, RUN), want);
    assert_eq!(blobs(), before, "gc deleted blobs the restored runs reach");

    // Index and meta files both gone: blobs without any record of them.
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(store.join("objects"))
        .arg(&bare)
        .status()
        .unwrap();
    assert!(st.success());
    let ls = ok(&bare, &["store", "ls"], &[]);
    assert!(
        ls.contains("index") && ls.contains("empty") && ls.contains("blob files"),
        "{ls}"
    );
    let (success, text) = ipirm(&bare, &["store", "gc"], &[]);
    assert!(!success && text.contains("gc refuses"), "{text}");
    let (clean, text) = ipirm(&bare, &["store", "verify"], &[]);
    assert!(!clean && text.contains("--from EXPORT_DIR"), "{text}");
}

/// An export whose entries were changed is refused before anything is imported, naming the
/// entry: a record's value (its body no longer has its sha256), a stage name (the key is no
/// longer the stage key of what the entry records), a run's config that is not JSON, a run's name
/// that `--name` refuses; no store is left where there was none. The intact export imports.
#[test]
fn an_edited_export_is_refused_naming_the_entry() {
    let (tmp, store, _) = copy_of_finished();
    let export = tmp.path().join("export");
    ok(&store, &["store", "export", s(&export)], &[]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("manifest.json")).unwrap())
            .unwrap();
    let record = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .position(|a| a["kind"] == "record")
        .unwrap();
    type Edit = fn(&mut serde_json::Value, usize);
    let edits: [(&str, Edit, &str); 4] = [
        (
            "record",
            |m, i| {
                let hex = m["artifacts"][i]["record_hex"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let flipped = if &hex[..1] == "0" { "1" } else { "0" };
                m["artifacts"][i]["record_hex"] = format!("{flipped}{}", &hex[1..]).into();
            },
            "record_sha256",
        ),
        (
            "stage",
            |m, i| m["artifacts"][i]["stage"] = "Xheckpoint".into(),
            "stage key",
        ),
        (
            "run",
            |m, _| m["runs"][0]["config_json"] = "{bad".into(),
            "config_json",
        ),
        // A name `run --name` refuses (it was imported, and split `store ls` over two lines).
        (
            "name",
            |m, _| m["runs"][0]["name"] = "../../x\nfake line".into(),
            "`name` \"../../x\\nfake line\": expected letters, digits",
        ),
    ];
    for (what, edit, needle) in edits {
        let mut m = manifest.clone();
        edit(&mut m, record);
        let edited = tmp.path().join(format!("edited-{what}"));
        std::fs::create_dir_all(&edited).unwrap();
        Command::new("cp")
            .arg("-a")
            .arg(export.join("objects"))
            .arg(&edited)
            .status()
            .unwrap();
        std::fs::write(edited.join("manifest.json"), m.to_string()).unwrap();
        let into = tmp.path().join(format!("into-{what}"));
        let (code, out, err) = raw(&["store", "--store", s(&into), "import", s(&edited)]);
        assert!(
            code == 2 && err.contains(needle) && !out.contains("imported"),
            "{what}: {out}{err}"
        );
        assert!(
            !into.exists(),
            "{what}: a refused import leaves no store behind"
        );
    }
    let (code, out, err) = raw(&[
        "store",
        "--store",
        s(&tmp.path().join("ok")),
        "import",
        s(&export),
    ]);
    assert!(code == 0 && out.contains("imported"), "{out}{err}");
}

/// A meta file changed in what its key is computed from (a parameter) is left out when a lost
/// index is rebuilt from the meta files, and moved aside: the rebuilt store never serves it
/// under its key.
#[test]
fn a_changed_meta_file_is_left_out_of_a_rebuilt_index() {
    let (_tmp, store, args) = copy_of_finished();
    let meta = common::files_under(&store.join("meta").join("artifacts"));
    let mut changed = None;
    for file in &meta {
        let mut bytes = std::fs::read(file).unwrap();
        // A `"seed":1234` in the parameters becomes `"seed":1934`.
        if let Some(i) = bytes.windows(11).position(|w| w == b"\"seed\":1234") {
            bytes[i + 8] = b'9';
            std::fs::write(file, bytes).unwrap();
            changed = Some(file.clone());
            break;
        }
    }
    let changed = changed.expect("a meta file with the seed among its parameters");
    let key = changed.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_dir_all(store.join("index")).unwrap();
    let (success, text) = ipirm(&store, &["store", "verify"], &[]);
    assert!(
        success && text.contains("1 unusable") && text.contains("meta.left-out"),
        "{text}"
    );
    let (found, _) = ipirm(&store, &["store", "show", &key], &[]);
    assert!(!found, "the changed entry is not in the index");
    // The run computes again what it needs of it; the store is whole.
    ok_one_thread(&store, &["run"], &args);
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
}

/// An index entry whose meta file was deleted gets it back when the store is opened: a lost
/// index then comes back whole (it came back without the entry, verify said nothing, and gc
/// deleted the finished checkpoint's blob as an orphan).
#[test]
fn a_deleted_meta_file_is_written_again() {
    let (_tmp, store, _) = copy_of_finished();
    let meta = store.join("meta").join("artifacts");
    let file = walkdir::WalkDir::new(&meta)
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().is_file())
        .expect("a meta file")
        .into_path();
    let count = |text: &str| {
        text.lines()
            .find_map(|l| l.split(" artifacts, ").next()?.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no artifact count in {text}"))
    };
    let before = count(&ok(&store, &["store", "verify"], &[]));
    std::fs::remove_file(&file).unwrap();
    ok(&store, &["store", "ls"], &[]);
    assert!(file.is_file(), "{} was not written again", file.display());
    std::fs::remove_dir_all(store.join("index")).unwrap();
    let text = ok(&store, &["store", "verify"], &[]);
    assert_eq!(count(&text), before, "{text}");
    assert!(text.contains(" 0 orphan blobs"), "{text}");
}
