//! Opening the sled index briefly, with a bounded wait, and saying who holds it.
//!
//! sled takes an exclusive `flock` on `index/db` for as long as a `Db` is open, so the store
//! opens it per operation and closes it again. A
//! process that finds it locked retries with a growing, jittered pause (1 ms doubling up to 20 ms)
//! until [`StoreOptions::lock_timeout`](super::StoreOptions) has passed, then fails naming the
//! holder from the holder file `index.holder` (pid, since, command line) that every holder writes
//! next to the index while it holds it.
//!
//! Fairness: a process that is kept waiting drops a marker `index.wait/<pid>.<n>`; a holder that
//! releases the index while a marker from someone else exists pauses (up to 50 ms, until the
//! marker goes) before its next open, so a process doing back-to-back operations cannot starve
//! another one. Markers of processes that no longer exist are removed by whoever sees them.
use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub(crate) const INDEX_DIR: &str = "index";
pub(crate) const HOLDER_FILE: &str = "index.holder";
pub(crate) const WAIT_DIR: &str = "index.wait";

/// Longest pause between two attempts to open the index.
const MAX_BACKOFF: Duration = Duration::from_millis(20);
/// Longest a releasing process defers to a waiting one.
const POLITE_PAUSE: Duration = Duration::from_millis(50);

static NONCE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Index folders this thread holds open, to refuse a nested open (which would wait on itself).
    static HELD: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Says that this process holds the index of `root`: the holder file and this thread's record of
/// it, both removed on drop. Drop it before the database closes (declare it first), so that no
/// holder file outlives the lock and none of the next holder's is removed.
pub(crate) struct Held {
    pub(crate) root: PathBuf,
    pub(crate) index_dir: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.root.join(HOLDER_FILE));
        HELD.with(|h| h.borrow_mut().retain(|p| p != &self.index_dir));
    }
}

/// After the index is closed (sled's lock released): defers to a waiting process (see the
/// module's docs on fairness).
pub(crate) fn defer_to_waiters(root: &Path) {
    let start = Instant::now();
    while start.elapsed() < POLITE_PAUSE && others_waiting(root) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens sled's database under `root`, waiting at most `timeout` for another holder to close it.
/// `root` is the store folder `store`, or a private copy of its index (a read-only store):
/// errors name the store, and a damaged copy says so.
pub(crate) fn open(root: &Path, store: &Path, timeout: Duration) -> Result<(sled::Db, Held)> {
    ensure_not_held_here(root)?;
    let index_dir = root.join(INDEX_DIR);
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut marker: Option<PathBuf> = None;
    let result = loop {
        remove_stale_snapshots(&index_dir);
        match sled::Config::new()
            .path(&index_dir)
            .flush_every_ms(None)
            .cache_capacity(64 << 20)
            .open()
        {
            Ok(db) => break Ok(db),
            Err(e) if is_lock_error(&e) => {
                if start.elapsed() >= timeout {
                    break Err(held_error(root, timeout));
                }
                if marker.is_none() {
                    marker = make_marker(root);
                }
                let left = timeout.saturating_sub(start.elapsed());
                std::thread::sleep(jitter(pause).min(left));
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            Err(e) => break Err(damaged_index(store, &e.to_string())),
        }
    };
    if let Some(m) = marker {
        let _ = std::fs::remove_file(m);
    }
    let db = result?;
    write_holder(root);
    HELD.with(|h| h.borrow_mut().push(index_dir.clone()));
    let root = root.to_path_buf();
    Ok((db, Held { root, index_dir }))
}

/// Fails if this thread already holds the index of `root` (a nested open would wait on itself).
pub(crate) fn ensure_not_held_here(root: &Path) -> Result<()> {
    let index_dir = root.join(INDEX_DIR);
    if HELD.with(|h| h.borrow().iter().any(|p| p == &index_dir)) {
        return Err(Error::Store(format!(
            "store at {}: this thread already holds the index open (a store operation called another one while holding it)",
            root.display()
        )));
    }
    Ok(())
}

/// The error for an index sled cannot open, naming the repair.
pub(crate) fn damaged_index(store: &Path, what: &str) -> Error {
    Error::Store(format!(
        "store index {} cannot be opened ({what}); if it is damaged, `ipirm store repair --store {}` rebuilds it from the files under {}",
        store.join(INDEX_DIR).display(),
        store.display(),
        store.join(super::mirror::META_DIR).display()
    ))
}

/// Removes `snap.*.generating` files from the index folder when no process holds the index.
///
/// sled writes a snapshot to `snap.<lsn>.generating` and renames it when complete; a process
/// that dies or runs out of disk space in between leaves the file behind, and sled 0.34 then
/// reads it as the newest snapshot and fails every open with "Read corrupted data". Such a file
/// can only be in progress while another process holds sled's lock on `index/db`, so it is
/// removed only after taking that lock (and releasing it before sled opens the folder).
fn remove_stale_snapshots(index_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(index_dir) else {
        return;
    };
    let stale: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
        })
        .collect();
    if !stale.is_empty() {
        while_unheld(index_dir, || {
            for p in &stale {
                let _ = std::fs::remove_file(p);
            }
        });
    }
}

/// Runs `f` holding sled's own lock on `index_dir/db` (released after): `Some(true)` when it
/// ran, `Some(false)` when another process holds the lock, `None` when there is no such file.
pub(crate) fn while_unheld(index_dir: &Path, f: impl FnOnce()) -> Option<bool> {
    use fs2::FileExt;
    let db = (std::fs::OpenOptions::new().read(true).write(true))
        .open(index_dir.join("db"))
        .ok()?;
    if db.try_lock_exclusive().is_err() {
        return Some(false);
    }
    f();
    let _ = FileExt::unlock(&db);
    Some(true)
}

/// Copies `root/index` into a new private folder and returns that folder (which then holds
/// `index/`): how a read-only store is read. An absent index gives an empty folder.
pub(crate) fn copy_index(root: &Path) -> Result<PathBuf> {
    let dest = std::env::temp_dir().join(format!(
        "ipirm-read-only-{}-{}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    ));
    let src = root.join(INDEX_DIR);
    std::fs::create_dir_all(dest.join(INDEX_DIR)).map_err(|e| Error::io(&dest, e))?;
    for e in walkdir::WalkDir::new(&src).min_depth(1) {
        let e = match e {
            Ok(e) => e,
            Err(_) if !src.exists() => break,
            Err(e) => return Err(Error::io(&src, e.into())),
        };
        let to = (dest.join(INDEX_DIR)).join(e.path().strip_prefix(&src).expect("under src"));
        // Written anew, not copied with fs::copy: that keeps the source's read-only mode, and
        // sled opens its files for writing.
        let copied = match e.file_type().is_dir() {
            true => std::fs::create_dir_all(&to),
            false => File::open(e.path())
                .and_then(|mut from| std::io::copy(&mut from, &mut File::create(&to)?))
                .map(drop),
        };
        copied.map_err(|err| Error::io(e.path(), err))?;
    }
    Ok(dest)
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn jitter(d: Duration) -> Duration {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + (n % 1000) as f64 / 1000.0)
}

fn held_error(root: &Path, timeout: Duration) -> Error {
    let holder_path = root.join(HOLDER_FILE);
    let who = match std::fs::read_to_string(&holder_path)
        .ok()
        .and_then(|s| parse_holder(&s))
    {
        Some(h) => {
            let ago = super::now_secs().saturating_sub(h.since);
            format!(
                "is held by pid {} (`{}`, holding it since {}, {ago} s ago)",
                h.pid,
                h.command,
                super::fmt_time(h.since)
            )
        }
        None => format!(
            "is held by another process (it has not written its holder file {} yet)",
            holder_path.display()
        ),
    };
    Error::Store(format!(
        "store index {} {who}; gave up after waiting {:.1} s. Wait for that process to finish, or stop it if it is stuck, then retry.",
        root.join(INDEX_DIR).display(),
        timeout.as_secs_f64()
    ))
}

/// Who holds the index, from the holder file.
struct Holder {
    pid: u32,
    since: u64,
    command: String,
}

fn parse_holder(s: &str) -> Option<Holder> {
    let field = |name: &str| s.lines().find_map(|l| l.strip_prefix(name));
    Some(Holder {
        pid: field("pid=")?.trim().parse().ok()?,
        since: field("since=")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        command: field("command=").unwrap_or_default().to_string(),
    })
}

fn write_holder(root: &Path) {
    let command: Vec<String> = std::env::args().collect();
    let text = format!(
        "pid={}\nsince={}\ncommand={}\n",
        std::process::id(),
        super::now_secs(),
        command.join(" ").replace('\n', " ")
    );
    let _ = std::fs::write(root.join(HOLDER_FILE), text);
}

fn make_marker(root: &Path) -> Option<PathBuf> {
    let dir = root.join(WAIT_DIR);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!(
        "{}.{}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, b"").ok()?;
    Some(path)
}

fn others_waiting(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root.join(WAIT_DIR)) else {
        return false;
    };
    let check_pids = Path::new("/proc/self").exists();
    let mut any = false;
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('.').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = match pid {
            Some(p) if check_pids => Path::new(&format!("/proc/{p}")).exists(),
            // Elsewhere: trust markers younger than a minute.
            _ => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(60)),
        };
        if alive {
            any = true;
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    any
}
