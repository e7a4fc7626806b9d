//! Data-parallel training on several processes (c10d, Gloo on 127.0.0.1), through the binary as
//! a user runs it: two ranks against one process with `model.bn_splits = 2` (the reference's
//! two-GPU DataParallel), a rank killed mid-run, a master that cannot be reached.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

mod common;
use common::run::{ipirm_env, shown_digests, tiny_run, train, with, LogWatch, ONE_THREAD};

fn model(store: &Path, name: &str) -> Vec<(String, Tensor)> {
    let mut v =
        Tensor::read_safetensors(store.join("runs").join(name).join("model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A local port nothing listens on (bound, then released) for a rank 0 to serve on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The largest difference between two models' variables.
fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// The fraction of all the elements of two models' variables that differ by more than `t`.
fn fraction_beyond(a: &[(String, Tensor)], b: &[(String, Tensor)], t: f64) -> f64 {
    let (far, n) = a
        .iter()
        .zip(b)
        .fold((0.0, 0.0), |(far, n), ((_, x), (_, y))| {
            let beyond = (x - y).abs().gt(t).sum(tch::Kind::Float).double_value(&[]);
            (far + beyond, n + x.numel() as f64)
        });
    far / n
}

/// A tiny run on the first 64 images of the real Fashion-MNIST (Debian's package, which
/// scripts/setup.sh installs): batch 16, one epoch of 4 steps after a maximize step.
fn real_fashion(name: &str) -> Vec<String> {
    let dir = "/usr/share/datasets/fashion-mnist";
    assert!(
        Path::new(dir).join("train-images-idx3-ubyte.gz").exists(),
        "{dir} is missing: install Debian's dataset-fashion-mnist (scripts/setup.sh does)"
    );
    [
        "--preset=fmnist-ipirm-quick",
        "--device=cpu",
        "--set=data.train_limit=64",
        "--set=data.bank_limit=64",
        "--set=data.test_limit=32",
        "--set=model.width=4",
        "--set=model.head_hidden=16",
        "--set=model.feature_dim=8",
        "--set=model.bn_splits=2",
        "--set=train.batch_size=16",
        "--set=train.epochs=1",
        "--set=maximize.batch_size=64",
        "--set=maximize.max_epoch=3",
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Two ranks (each forwarding half of every batch, BatchNorm per rank, gradients summed, rank
/// 0's running statistics) train the same model as one process whose BatchNorm splits every
/// batch in two, up to rounding: IP-IRM (a sharded feature extraction, the partition sent to
/// rank 1, four steps), MixUp IP-IRM (several forwards per step) and MixUp IP-IRM with the
/// online MixUp maximize step (its batches' views projected by both ranks); and with
/// `model.sync_bn`, two ranks train as one process whose BatchNorm sees the whole batch (without
/// the ranks' sums, each normalising its own chunk, they ended 0.135 apart, 2026-12-04). The
/// run's keys do not depend on the world size: the final checkpoint has the same key.
///
/// Why only a few steps: on this width-4 model, rounding differences grow fast through Adam
/// (one process on 1 and on 2 threads ended ~5e-4 apart after 8 steps, 2026-11-29); the bounds
/// below hold for any CPU's rounding and fail for ranks that do not sum their gradients.
#[test]
fn two_ranks_train_as_one_process_with_two_batchnorm_splits() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("ipirm", vec![]),
        (
            "mixup",
            // Three steps: at the fourth, a BatchNorm over an environment's chunk of one or two
            // images makes one process on 1 and on 2 threads end 4e-4 apart.
            vec![
                "--set=train.mixup=true",
                "--set=train.temperature=0.2",
                "--set=data.train_limit=48",
            ],
        ),
        (
            // The CIFAR-100 MixUp presets' maximize step: online, view 1 MixUp-ed, each batch's
            // views projected by both ranks (two batches an epoch).
            "online-mixup",
            vec![
                "--set=train.mixup=true",
                "--set=train.temperature=0.2",
                "--set=data.train_limit=48",
                "--set=maximize.offline=false",
                "--set=maximize.mixup=true",
                "--set=maximize.batch_size=24",
            ],
        ),
        (
            // SyncBatchNorm: two ranks normalise with the global batch's statistics, as one
            // process does with the whole batch (bn_splits 1; sync_bn changes nothing there).
            "sync-bn",
            vec!["--set=model.bn_splits=1", "--set=model.sync_bn=true"],
        ),
    ] {
        let args = with(&real_fashion(name), &extra);
        let one_store = tmp.path().join(format!("one-{name}"));
        let two_store = tmp.path().join(format!("two-{name}"));
        let one = train(&one_store, &args);
        let two = train(&two_store, &with(&args, &["--world-size=2"]));
        assert!(two.contains("started 2 ranks"), "{two}");
        let key = |t: &str| {
            t.lines()
                .find_map(|l| l.strip_prefix("final checkpoint: "))
                .map(str::to_string)
        };
        assert_eq!(
            key(&one),
            key(&two),
            "{name}: the same final key\n{one}\n{two}"
        );
        // Rounding differs between the sides (each rank sums its chunk's gradients, Gloo sums
        // the ranks'), and Adam turns it into more: a gradient near zero whose sign rounding
        // flips moves its weight by about lr either way, and the next steps carry that to the
        // rest. The worst element is therefore bounded by what Adam can move a weight in these
        // steps (2 × 4 × lr), on any CPU; measured 1e-6 on one machine, 1.5e-4 and 7.3e-4 on
        // others (2026-12-04). What rounding cannot do is move many weights that far: on the
        // machine with 7.3e-4, 1.1 % of the elements moved beyond lr/10 and 0.04 % beyond
        // 3 lr/10, while ranks that train apart (the gradient sum taken out, same machine and
        // day) end with 94 % beyond lr/10 and the worst at 0.22. So at most 5 % may.
        let (a, b) = (model(&one_store, name), model(&two_store, name));
        let d = max_diff(&a, &b);
        assert!(d < 8e-3, "{name}: two ranks end {d} from one process");
        let lr = 1e-3;
        let far = fraction_beyond(&a, &b, lr / 10.0);
        assert!(
            far < 0.05,
            "{name}: {:.1} % of the weights of two ranks end more than lr/10 from one process",
            100.0 * far
        );
        // The same partition (as environments) was learned from the sharded features.
        let sizes = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("partition after epoch"))
                .map(|l| {
                    l.split("environment sizes")
                        .nth(1)
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        };
        assert_eq!(sizes(&one), sizes(&two), "{name}");
        assert!(!sizes(&one).is_empty());
    }
}

/// Gradient buckets summed while backward runs (c10d's Reducer, `--bucket-cap-mb`, as
/// DistributedDataParallel) give two ranks the same parameters as one flat all-reduce after
/// backward (`--bucket-cap-mb 0`), step for step: IP-IRM with `retain_group` (one backward a
/// step) in buckets of 1 KiB (one or more per parameter, rebuilt after the first step);
/// MixUp IP-IRM with `retain_group` (a backward per partition, not armed, then one armed
/// backward of zero) with SyncBatchNorm (collectives inside backward beside the buckets'); MixUp
/// without `retain_group` (several forwards, one backward) in DDP's default 25 MiB. The sums are
/// the same numbers added in the same order on two ranks, so the bound is tight (measured:
/// equal to the bit, 2026-12-04); ranks whose buckets were never armed end 0.16 apart.
#[test]
fn gradient_buckets_sum_as_the_flat_all_reduce() {
    let tmp = tempfile::tempdir().unwrap();
    let mixup = [
        "--set=train.mixup=true",
        "--set=train.temperature=0.2",
        "--set=data.train_limit=48",
    ];
    for (name, cap, extra) in [
        ("ipirm", "0.001", vec![]),
        (
            "mixup-retain-sync-bn",
            "0.001",
            [
                &mixup[..],
                &["--set=model.bn_splits=1", "--set=model.sync_bn=true"],
            ]
            .concat(),
        ),
        (
            "mixup-one-backward",
            "25",
            [&mixup[..], &["--set=ipirm.retain_group=false"]].concat(),
        ),
    ] {
        let args = with(
            &with(&real_fashion(name), &extra),
            &["--set=train.epochs=2", "--world-size=2"],
        );
        let flat_store = tmp.path().join(format!("flat-{name}"));
        let buckets_store = tmp.path().join(format!("buckets-{name}"));
        // With a stray IPIRM_ALL_CORES (the launcher's own variable) in the environment, which
        // rank 0 took as its thread count once alone: -3 panicked after training.
        let env = [("OMP_NUM_THREADS", "1"), ("IPIRM_ALL_CORES", "-3")];
        let (success, flat) = ipirm_env(
            &flat_store,
            &["train"],
            &with(&args, &["--bucket-cap-mb=0"]),
            &env,
        );
        assert!(success, "{name}: {flat}");
        let buckets = train(
            &buckets_store,
            &with(&args, &[&format!("--bucket-cap-mb={cap}")]),
        );
        let key = |t: &str| {
            t.lines()
                .find_map(|l| l.strip_prefix("final checkpoint: "))
                .map(str::to_string)
        };
        assert!(key(&flat).is_some());
        assert_eq!(key(&flat), key(&buckets), "{name}: the same final key");
        let d = max_diff(&model(&flat_store, name), &model(&buckets_store, name));
        assert!(
            d <= 1e-6,
            "{name}: buckets end {d} from the flat all-reduce"
        );
    }
}

/// A rank given with a world of one makes a group of one (its backend set up and every
/// collective run, as `scripts/gpu-check.sh` uses it to try NCCL on one GPU): it trains the
/// model one process trains, to the bit, since a sum or broadcast over one rank changes nothing.
#[test]
fn a_group_of_one_trains_as_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let args = with(&real_fashion("one"), &["--set=model.bn_splits=1"]);
    let port = free_port();
    let master = format!("--master=127.0.0.1:{port}");
    let alone = tmp.path().join("alone");
    let group = tmp.path().join("group");
    train(&alone, &args);
    let text = train(
        &group,
        &with(
            &args,
            &["--rank=0", "--world-size=1", &master, "--dist-backend=gloo"],
        ),
    );
    assert!(
        text.contains("rank 0 of 1: the other ranks joined"),
        "{text}"
    );
    let d = max_diff(&model(&alone, "one"), &model(&group, "one"));
    assert_eq!(d, 0.0, "a group of one ends {d} from one process");
}

/// The pid of the child of `parent` whose environment says `RANK=rank`.
fn rank_pid(parent: u32, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let want = format!("RANK={rank}");
        if env.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// `ipirm train` with `args` on `store`, started in the background on one thread a rank, its
/// stderr piped (for a [`LogWatch`]).
fn start_train(store: &Path, args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .arg("train")
        .arg(format!("--store={}", store.display()))
        .args(args)
        .envs(ONE_THREAD.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// kill -9 of rank 1 mid-run ends the job with a message naming it; running the same command
/// again resumes from the last stored checkpoint and ends on the digests of an uninterrupted
/// two-rank run.
#[test]
fn a_killed_rank_ends_the_job_and_a_rerun_resumes_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let args = with(
        &tiny_run(tmp.path()),
        &[
            "--set=model.bn_splits=2",
            "--set=train.epochs=8",
            "--world-size=2",
        ],
    );
    let clean = tmp.path().join("clean");
    train(&clean, &args);
    let want = shown_digests(&clean, "fmnist-ipirm-quick");

    let killed = tmp.path().join("killed");
    let mut parent = start_train(&killed, &args);
    // Rank 1, killed once rank 0 has reported its second epoch (a timer alone raced a fast
    // machine, where all 8 epochs took under 2 s).
    let log = LogWatch::new(&mut parent);
    assert!(log.wait_for("epoch 2/8"), "the job ended before epoch 2");
    let pid = rank_pid(parent.id(), 1).expect("rank 1 is running");
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = parent.wait().unwrap();
    let text = log.finish();
    assert!(
        !status.success(),
        "the job must fail when a rank dies:\n{text}"
    );
    assert!(
        text.contains("rank 1 of 2 was killed by signal 9 (SIGKILL)")
            && text.contains("Run the same command again"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !text.contains("epoch 8/8"),
        "the kill should land before the last epoch:\n{text}"
    );

    let again = train(&killed, &args);
    assert!(
        again.contains("resuming from the stored checkpoint after epoch"),
        "{again}"
    );
    for (key, digest) in &want {
        let found = shown_digests(&killed, key);
        assert!(
            found.contains(&(key.clone(), digest.clone())),
            "artifact {key}: {digest} in the uninterrupted run, {found:?} after the kill"
        );
    }
}

/// A rank that stops on an error of its own (a setting only rank 0 checks) ends the job with
/// its error, not with advice to rerun, which failed the same way.
#[test]
fn a_rank_error_is_not_advised_to_be_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let args = with(
        &tiny_run(tmp.path()),
        &["--from-partition=nosuch@1", "--world-size=2"],
    );
    let (ok, text) = ipirm_env(&tmp.path().join("store"), &["train"], &args, ONE_THREAD);
    assert!(!ok, "{text}");
    assert!(
        text.contains("no run id or run name `nosuch`")
            && text.contains("rank 0 of 2 exited with status 2")
            && text.contains("Its error is above")
            && !text.contains("Run the same command again"),
        "{text}"
    );
}

/// Whether process `pid` is gone (or a zombie no one has reaped yet).
fn ended(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) S …`: the state follows the last `)`.
    stat.rsplit_once(')')
        .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// kill -9 of the launcher (`--world-size 2`) ends its ranks too: they went on training the run
/// to its end, beside the ranks of a rerun resuming it.
#[test]
fn the_ranks_end_with_their_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let args = with(
        &tiny_run(tmp.path()),
        &["--set=train.epochs=500", "--world-size=2"],
    );
    let mut parent = start_train(&tmp.path().join("store"), &args);
    let log = LogWatch::new(&mut parent);
    assert!(log.wait_for("epoch 2/500"), "the job ended before epoch 2");
    let ranks: Vec<u32> = (0..2)
        .map(|r| rank_pid(parent.id(), r).expect("the ranks are running"))
        .collect();
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ranks.iter().all(|&p| ended(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = ranks.iter().copied().filter(|&p| !ended(p)).collect();
    for p in &left {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
    let text = log.finish();
    assert!(
        left.is_empty(),
        "ranks {left:?} outlived their launcher:\n{text}"
    );
}

/// A rank whose master cannot be reached gives up within its timeout, naming the address.
#[test]
fn an_unreachable_master_fails_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = free_port();
    let args = with(
        &tiny_run(tmp.path()),
        &[
            "--rank=1",
            "--world-size=2",
            &format!("--master=127.0.0.1:{port}"),
            "--dist-timeout=3",
        ],
    );
    let begun = Instant::now();
    let (ok, text) = ipirm_env(&tmp.path().join("store"), &["train"], &args, ONE_THREAD);
    let took = begun.elapsed();
    assert!(!ok, "{text}");
    assert!(
        text.contains("rank 1 of 2 could not join the group")
            && text.contains(&format!("127.0.0.1:{port}"))
            && text.contains("within 3 s"),
        "{text}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{text}");
    // libtorch's C++ frames are left out of its errors and of c10d's retry warnings (they
    // printed twenty lines of addresses per connect attempt).
    assert!(!text.contains("frame #"), "{text}");
    // Nothing was written: only rank 0 touches the store.
    assert!(!tmp.path().join("store").join("objects").exists());
}

/// Bad distribution flags are refused before anything starts, naming the flag.
#[test]
fn bad_distribution_flags_name_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, needle) in [
        (
            vec!["--rank=2", "--world-size=2", "--master=127.0.0.1:1"],
            "--rank",
        ),
        (vec!["--rank=1", "--world-size=2"], "--master"),
        (
            vec!["--rank=1", "--world-size=2", "--master=nohost"],
            "ADDR:PORT",
        ),
        (vec!["--world-size=0"], "--world-size"),
        // 0 failed every connect at once, after pages of libtorch's C++ frames.
        (vec!["--world-size=2", "--dist-timeout=0"], "--dist-timeout"),
        // Alone it would be ignored, the job run on one process.
        (
            vec!["--master=127.0.0.1:29500"],
            "--master`: is for a job of several ranks",
        ),
        (
            vec!["--world-size=2", "--dist-backend=mpi"],
            "--dist-backend",
        ),
        (
            vec!["--world-size=2", "--bucket-cap-mb=-1"],
            "--bucket-cap-mb",
        ),
        // Buckets need every rank's gradients; chunks of 2 leave a third rank none.
        (
            vec!["--world-size=3", "--set=train.batch_size=4"],
            "train.batch_size`: 4 split over 3 ranks in chunks of 2",
        ),
        // NCCL moves tensors between GPUs: refused on the CPU before any rank starts.
        (
            vec!["--world-size=2", "--dist-backend=nccl"],
            "--dist-backend`: nccl runs collectives between GPUs",
        ),
        // SyncBatchNorm normalises the whole batch: a split of it is a contradiction.
        (
            vec![
                "--world-size=2",
                "--set=model.bn_splits=2",
                "--set=model.sync_bn=true",
            ],
            "model.sync_bn`: normalises with the whole batch's statistics, and model.bn_splits = 2",
        ),
    ] {
        let args = with(&tiny_run(tmp.path()), &flags);
        let (ok, text) = ipirm_env(&tmp.path().join("store"), &["train"], &args, &[]);
        assert!(!ok && text.contains(needle), "{flags:?}:\n{text}");
    }
}

/// Two ranks started by hand whose settings differ: both stop with a message naming the first
/// setting that differs and the rank that has it, and nothing is stored. (Rank 1 with another
/// learning rate trained silently beside rank 0, which stored the mixed result under its own
/// keys; another `data.train_limit` aborted rank 1 in a Gloo collective.)
#[test]
fn ranks_with_other_settings_stop_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_run(tmp.path());
    for (other, key) in [
        ("--set=train.lr=0.5", "train.lr"),
        ("--set=data.train_limit=32", "data.train_limit"),
        ("--bucket-cap-mb=0", "gradient sums (--bucket-cap-mb)"),
    ] {
        let port = free_port();
        let store = tmp.path().join(format!("store-{key}"));
        let rank = |r: usize, extra: &[&str]| {
            let master = format!("--master=127.0.0.1:{port}");
            let rank = format!("--rank={r}");
            let flags = [&rank, "--world-size=2", &master, "--dist-timeout=60"];
            Command::new(env!("CARGO_BIN_EXE_ipirm"))
                .arg("train")
                .arg(format!("--store={}", store.display()))
                .args(with(&with(&base, &flags), extra))
                .envs(ONE_THREAD.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let r0 = rank(0, &[]);
        let r1 = rank(1, &[other]);
        for (r, child) in [(0, r0), (1, r1)] {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "rank {r} succeeded:\n{text}");
            assert!(
                text.contains("rank 1 runs with other settings than rank 0")
                    && text.contains(&format!("{key} is")),
                "rank {r}:\n{text}"
            );
            assert!(
                !text.contains("panicked") && !text.contains("epoch 1/"),
                "{text}"
            );
        }
        // Rank 0 checks before it records a run: nothing stored.
        let objects = store.join("objects");
        assert!(
            !objects.exists() || std::fs::read_dir(&objects).unwrap().next().is_none(),
            "{key}: rank 0 stored something"
        );
    }
}

/// A rank that asks for a backend it cannot run (NCCL on the CPU) stops at once naming the
/// flag; the rank it leaves waiting ends within `--dist-timeout` with the join error. Both
/// built backends are in this binary: the NCCL process group compiles and links everywhere
/// (the symbols are checked), whether or not a GPU is there.
#[test]
fn a_rank_with_a_backend_it_cannot_run_ends_every_rank_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let rank = |r: usize, backend: &str| {
        let flags = [
            format!("--rank={r}"),
            "--world-size=2".into(),
            format!("--master=127.0.0.1:{port}"),
            "--dist-timeout=5".into(),
            format!("--dist-backend={backend}"),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .arg("train")
            .arg(format!("--store={}", tmp.path().join("store").display()))
            .args(with(&tiny_run(tmp.path()), &flags))
            .envs(ONE_THREAD.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let begun = Instant::now();
    let (r0, r1) = (rank(0, "gloo"), rank(1, "nccl"));
    for (r, child, needle) in [
        (0, r0, "rank 0 of 2 could not join the group"),
        (1, r1, "nccl runs collectives between GPUs"),
    ] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "rank {r}:\n{text}");
        assert!(text.contains(needle), "rank {r}:\n{text}");
    }
    assert!(begun.elapsed() < Duration::from_secs(60));
    let out = Command::new("nm")
        .args(["-C", env!("CARGO_BIN_EXE_ipirm")])
        .output()
        .unwrap();
    let symbols = String::from_utf8_lossy(&out.stdout);
    assert!(
        symbols.contains("c10d::ProcessGroupNCCL::ProcessGroupNCCL"),
        "the NCCL process group is not linked in (scripts/setup.sh installs its headers)"
    );
}
