//! Which rank this process is, from the command line or `torchrun`'s environment, and the local
//! launcher that starts every rank of a one-machine job and ends the job when one fails.
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::{Error, Result};

/// One rank of a multi-process job.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// Rank 0's address and the port its TCPStore listens on.
    pub master_addr: String,
    pub master_port: u16,
    /// The rank's index on its machine (its GPU).
    pub local_rank: usize,
    /// How long to wait for every rank to join.
    pub connect_timeout: Duration,
}

/// What a training command does with its distribution flags.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// One process (no flags, or a world of 1).
    Single,
    /// Start `world` local ranks of this same command and wait for them.
    Spawn { world: usize },
    /// Be one rank.
    Rank(Launch),
}

/// The environment variables `torchrun` sets (and [`spawn_local`] sets for its ranks).
const ENV: [&str; 5] = [
    "RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "LOCAL_RANK",
];

/// Set by [`spawn_local`] beside the share of cores it gives each CPU rank: the machine's cores,
/// which rank 0 takes back once it works alone ([`take_back_cores`]).
const ALL_CORES: &str = "IPIRM_ALL_CORES";

/// Rank 0 of a local CPU launch, once the other ranks have exited: the evaluations that follow
/// run on all the machine's cores rather than on the rank's share.
pub fn take_back_cores() {
    if let Some(n) = std::env::var(ALL_CORES)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|&n| n >= 1)
    {
        tch::set_num_threads(n);
    }
}

impl Mode {
    /// From the flags (`--rank`, `--world-size`, `--master ADDR:PORT`, the connect timeout),
    /// each falling back to `torchrun`'s environment variable. A rank given (flag or `RANK`)
    /// makes this process that rank; a world size alone spawns the ranks here.
    pub fn from_args(
        rank: Option<usize>,
        world: Option<usize>,
        master: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Mode> {
        Mode::resolve(rank, world, master, connect_timeout, |k| {
            std::env::var(k).ok()
        })
    }

    /// [`Mode::from_args`] with the environment given (tests).
    pub fn resolve(
        rank: Option<usize>,
        world: Option<usize>,
        master: Option<&str>,
        connect_timeout: Duration,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Mode> {
        let num = |name: &str, flag: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    Error::config(
                        flag,
                        format!("environment variable {name}={v:?} is not a non-negative integer"),
                    )
                }),
            }
        };
        let rank = match rank {
            Some(r) => Some(r),
            None => num("RANK", "--rank")?,
        };
        let world = match world {
            Some(w) => Some(w),
            None => num("WORLD_SIZE", "--world-size")?,
        };
        let world = match world {
            // A world of one is a single process, unless the rank is given: then it is a
            // group of one (its backend set up and used, as `torchrun --nproc-per-node 1` does).
            None | Some(1) if rank.is_none() => 1,
            None => {
                return Err(Error::config(
                    "--world-size",
                    "a rank needs the world size too (--world-size N or WORLD_SIZE)",
                ))
            }
            Some(0) => return Err(Error::config("--world-size", "must be at least 1")),
            Some(w) => w,
        };
        let Some(rank) = rank else {
            // Without a rank, --master would be ignored: by one process, or by the ranks
            // started here (which find each other on this machine).
            if master.is_some() {
                return Err(Error::config(
                    "--master",
                    "is for a job of several ranks across machines, where each process is given \
                     its --rank (or RANK); --world-size N alone starts N ranks on this machine \
                     and needs no --master",
                ));
            }
            return Ok(match world {
                1 => Mode::Single,
                world => Mode::Spawn { world },
            });
        };
        if rank >= world {
            return Err(Error::config(
                "--rank",
                format!("{rank} is not below the world size {world}"),
            ));
        }
        let (addr, port) =
            match master {
                Some(m) => parse_master(m)?,
                None => match (env("MASTER_ADDR"), env("MASTER_PORT")) {
                    (Some(a), Some(p)) => (
                        a,
                        p.trim().parse::<u16>().map_err(|_| {
                            Error::config(
                                "--master",
                                format!("MASTER_PORT={p:?} is not a port number"),
                            )
                        })?,
                    ),
                    _ => return Err(Error::config(
                        "--master",
                        "rank 0's ADDR:PORT is needed (--master, or MASTER_ADDR and MASTER_PORT)",
                    )),
                },
            };
        let local_rank = num("LOCAL_RANK", "LOCAL_RANK")?.unwrap_or(rank);
        Ok(Mode::Rank(Launch {
            rank,
            world,
            master_addr: addr,
            master_port: port,
            local_rank,
            connect_timeout,
        }))
    }
}

/// `ADDR:PORT` (an IPv6 address in brackets: `[::1]:29500`).
fn parse_master(m: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::config(
            "--master",
            format!("`{m}` is not ADDR:PORT (e.g. 10.0.0.1:29500)"),
        )
    };
    let (addr, port) = m.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((addr.to_string(), port))
}

/// Makes the process `cmd` starts end (SIGTERM) when this one does, however it ends: the ranks
/// of a killed launcher went on training the run, beside the ranks of the rerun that resumes it.
/// Linux's parent-death signal; it is sent when the thread that spawned exits, and
/// [`spawn_local`] spawns from the thread that waits for the ranks.
#[cfg(target_os = "linux")]
fn end_with_this_process(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (prctl,
    // getppid, _exit) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher ended before the prctl: there is nobody to signal its end.
            if libc::getppid() != launcher {
                libc::_exit(143);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn end_with_this_process(_cmd: &mut Command) {}

/// Starts `world` ranks of this same command on this machine (the program's own arguments,
/// with `RANK`, `WORLD_SIZE`, `MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT` and `LOCAL_RANK`
/// set, and on the CPU each rank's share of the cores as `OMP_NUM_THREADS`), then waits. When a
/// rank fails or is killed, the others are ended and the error names it; a rerun of the same
/// command resumes from the last stored checkpoint.
pub fn spawn_local(world: usize, cpu: bool) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| Error::Dist(format!("this program's path: {e}")))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = free_port()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut children: Vec<(usize, Child)> = Vec::new();
    let end_all = |children: &mut Vec<(usize, Child)>| {
        for (_, c) in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for rank in 0..world {
        let mut cmd = Command::new(&exe);
        cmd.args(&args);
        for k in ENV {
            cmd.env_remove(k);
        }
        cmd.env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("LOCAL_RANK", rank.to_string());
        if cpu && std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", (threads / world).max(1).to_string())
                .env(ALL_CORES, threads.to_string());
        } else {
            cmd.env_remove(ALL_CORES);
        }
        if rank > 0 {
            cmd.stdout(std::process::Stdio::null());
        }
        end_with_this_process(&mut cmd);
        match cmd.spawn() {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                end_all(&mut children);
                return Err(Error::Dist(format!("starting rank {rank}: {e}")));
            }
        }
    }
    eprintln!("started {world} ranks on this machine (master 127.0.0.1:{port})");
    let mut status: Vec<Option<ExitStatus>> = vec![None; world];
    loop {
        for (rank, c) in children.iter_mut() {
            if status[*rank].is_none() {
                status[*rank] = c
                    .try_wait()
                    .map_err(|e| Error::Dist(format!("rank {rank}: {e}")))?;
            }
        }
        if status.iter().any(|s| s.is_some_and(|s| !s.success())) {
            // The others usually fail right after (their peer is gone): give them a moment, so
            // that the report leads with the cause, a rank that was killed.
            std::thread::sleep(Duration::from_millis(500));
            for (rank, c) in children.iter_mut() {
                if status[*rank].is_none() {
                    status[*rank] = c.try_wait().ok().flatten();
                }
            }
            end_all(&mut children);
            let mut failed: Vec<(usize, ExitStatus)> = status
                .iter()
                .enumerate()
                .filter_map(|(r, s)| s.filter(|s| !s.success()).map(|s| (r, s)))
                .collect();
            use std::os::unix::process::ExitStatusExt;
            failed.sort_by_key(|(r, s)| (s.signal().is_none(), *r));
            let what: Vec<String> = failed
                .iter()
                .map(|(r, s)| format!("rank {r} of {world} {}", describe(*s)))
                .collect();
            // A rank that ended with an error of its own (status 2, printed above: a setting, a
            // file, a diverged run) fails again on a rerun; a killed one resumes.
            let advice = match failed.first().and_then(|(_, s)| s.code()) {
                Some(2) => {
                    "Its error is above: a rerun fails the same way until what it names is fixed"
                }
                _ => "Run the same command again to resume from the last stored checkpoint",
            };
            return Err(Error::Dist(format!(
                "{}; the other ranks were stopped. {advice}",
                what.join(", then ")
            )));
        }
        if status.iter().all(|s| s.is_some()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// "exited with status 2", "was killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(9)) => "was killed by signal 9 (SIGKILL)".to_string(),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Dist(format!("finding a free port for the ranks: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Dist(format!("finding a free port for the ranks: {e}")))?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(
        rank: Option<usize>,
        world: Option<usize>,
        master: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Mode> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Mode::resolve(rank, world, master, Duration::from_secs(5), move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn fields(l: &Launch) -> (usize, usize, &str, u16, usize) {
        (l.rank, l.world, &l.master_addr, l.master_port, l.local_rank)
    }

    #[test]
    fn flags_and_torchrun_environment() {
        assert_eq!(mode(None, None, None, &[]).unwrap(), Mode::Single);
        assert_eq!(mode(None, Some(1), None, &[]).unwrap(), Mode::Single);
        // A rank given makes a group of one, which needs rank 0's address like any group.
        let one = mode(Some(0), Some(1), Some("127.0.0.1:29500"), &[]).unwrap();
        assert!(
            matches!(one, Mode::Rank(ref l) if l.world == 1 && l.rank == 0),
            "{one:?}"
        );
        let env_one = [
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ];
        assert!(matches!(
            mode(None, None, None, &env_one).unwrap(),
            Mode::Rank(_)
        ));
        assert!(mode(Some(0), Some(1), None, &[]).is_err());
        assert_eq!(
            mode(None, Some(4), None, &[]).unwrap(),
            Mode::Spawn { world: 4 }
        );
        let Mode::Rank(l) = mode(Some(1), Some(2), Some("10.0.0.1:29500"), &[]).unwrap() else {
            panic!()
        };
        assert_eq!(fields(&l), (1, 2, "10.0.0.1", 29500, 1));
        let env = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
            ("LOCAL_RANK", "1"),
        ];
        let Mode::Rank(l) = mode(None, None, None, &env).unwrap() else {
            panic!()
        };
        assert_eq!(fields(&l), (3, 8, "node0", 1234, 1));
        // A flag wins over the environment.
        let Mode::Rank(l) = mode(Some(2), None, None, &env).unwrap() else {
            panic!()
        };
        assert_eq!(l.rank, 2);
        let Mode::Rank(l) = mode(Some(0), Some(2), Some("[::1]:29500"), &[]).unwrap() else {
            panic!()
        };
        assert_eq!(l.master_addr, "::1");
    }

    #[test]
    fn bad_launch_flags_name_the_flag() {
        let err = |r: Result<Mode>| r.unwrap_err().to_string();
        assert!(err(mode(Some(2), Some(2), Some("a:1"), &[])).contains("--rank"));
        assert!(err(mode(Some(1), None, Some("a:1"), &[])).contains("--world-size"));
        assert!(err(mode(Some(1), Some(2), None, &[])).contains("--master"));
        assert!(err(mode(Some(1), Some(2), Some("nohost"), &[])).contains("ADDR:PORT"));
        assert!(err(mode(Some(1), Some(2), Some("h:99999"), &[])).contains("ADDR:PORT"));
        assert!(err(mode(None, Some(2), Some("h:1"), &[])).contains("--master"));
        // Alone, --master would otherwise be ignored and the job run on one process.
        assert!(err(mode(None, None, Some("h:1"), &[])).contains("--master"));
        assert!(err(mode(None, Some(1), Some("h:1"), &[])).contains("--world-size N"));
        assert!(err(mode(
            None,
            None,
            None,
            &[("RANK", "x"), ("WORLD_SIZE", "2")]
        ))
        .contains("RANK"));
    }
}
