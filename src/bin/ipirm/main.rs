//! The `ipirm` command line: a thin layer over the library.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use ipirm::config::{Config, PRESETS};
use ipirm::pipeline;
use ipirm::store::Store;

mod checks;
mod store_cmd;
use store_cmd::StoreCommand;

#[derive(Parser)]
#[command(
    name = "ipirm",
    version,
    about = "IP-IRM (NeurIPS 2021) on libtorch: train, evaluate, reproduce"
)]
struct Cli {
    /// The artifact store (a run or `store import` creates it where absent); accepted before or
    /// after the command.
    #[arg(long = "store", value_name = "DIR", default_value = ipirm::store::DEFAULT_ROOT, global = true)]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: kNN of raw pixels and of the initial encoder, training, kNN and linear probe
    /// of the trained encoder, and a results table.
    Run(TrainArgs),
    /// Train a model and save its checkpoint.
    Train(TrainArgs),
    /// Evaluate a saved checkpoint.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// One offline maximize step on given features (float32 `z1`, `z2`, optional `init` and int64
    /// `order` (epochs×N batch orders) in a safetensors file); writes the best `partition` and the
    /// per-epoch `risk`. Without `order`, batches are shuffled as the reference's DataLoader does
    /// after `torch.manual_seed(maximize.seed)`.
    Maximize(MaximizeArgs),
    /// Throughput of each piece (augmentation, minimize step, feature extraction, maximize
    /// epoch) on synthetic images: the figures of the reference's ref_bench.py, same names.
    Bench(BenchArgs),
    /// The artifact store: list, show, verify, collect garbage, pin, export, import, repair.
    Store {
        #[command(subcommand)]
        what: StoreCommand,
    },
    /// Checkpoint files: import the reference's `.pth` into ipirm's safetensors.
    Checkpoint {
        #[command(subcommand)]
        what: CheckpointCommand,
    },
    /// The reproduction beside the paper: every preset with a published number and the latest
    /// run of it in the store, then every other run and the store's comparisons; printed, and
    /// with --out written as one HTML page (report.html), Markdown, JSON, SVG charts and the
    /// partition galleries as PNG.
    Report {
        /// Folder for report.html, report.md, report.json, the charts and gallery/.
        #[arg(long, value_parser = checks::output_folder)]
        out: Option<PathBuf>,
        /// With --out: images per grid of the partition gallery (each environment's most
        /// confident members and as many at random); 0 leaves the gallery out.
        #[arg(long, default_value_t = ipirm::gallery::DEFAULT_SIZE, value_name = "N", requires = "out")]
        gallery_size: usize,
        /// With --out: the seed of the gallery's random samples.
        #[arg(long, default_value_t = 0, value_name = "SEED", requires = "out")]
        gallery_seed: u64,
        /// Check every paper row that has a finished run against the paper's number (±1.0
        /// point) and every `[[expect]]` entry of an optional expectations file; exits 1 naming
        /// each row outside its tolerance.
        // `Some(None)`: --check without a file.
        #[arg(long, value_name = "EXPECTATIONS.toml", num_args = 0..=1)]
        check: Option<Option<PathBuf>>,
        /// With --check: a row without a finished run fails too.
        #[arg(long, requires = "check")]
        require_all: bool,
    },
    /// Arms side by side: a run name (its finished runs, one per seed) or a run id each; means,
    /// standard deviations and 95 % intervals, differences, the settings that differ, and for two
    /// runs the stages they share.
    Compare {
        /// Run names (arms) or run ids.
        #[arg(required = true, value_name = "ARM_OR_RUN")]
        specs: Vec<String>,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Also write compare.md, compare.json and compare.svg into this folder.
        #[arg(long, value_parser = checks::output_folder)]
        out: Option<PathBuf>,
    },
    /// List the named presets.
    Presets,
    /// Print the resolved configuration as TOML (what `--config` reads).
    Config(ConfigArgs),
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Convert a checkpoint (the reference's `torch.save(model.state_dict())` of an
    /// `nn.DataParallel(Model)`, or a `linear.py` checkpoint with its classifier) into ipirm's
    /// safetensors, checked tensor by tensor against the configured model.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// The checkpoint to read (.pth).
        file: PathBuf,
        /// Where to write the safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Weighted kNN (k = knn.k) of the encoder's features.
    Knn(EvalArgs),
    /// Linear probe on the frozen encoder.
    Linear(EvalArgs),
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Start from a named preset (`ipirm presets`); default: the paper's STL-10 run.
    #[arg(long)]
    preset: Option<String>,
    /// Start from a TOML config file instead (e.g. one written by `ipirm config`).
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Override one value, `section.key=value` (repeatable), e.g. `--set train.epochs=10`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Folder with the dataset's official files (same as `--set data.data_dir=DIR`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    device: DeviceArg,
    /// Output folder (default <store>/runs/<name>: --name, else the preset, else `run`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The run's name in the store (default: the preset, or `run`); "the latest run" of a name
    /// is what `store show NAME` and `pin NAME` go by (gc keeps the latest of each seed).
    /// Letters, digits, `-`, `_` and `.`: it names the default output folder.
    #[arg(long, value_parser = checks::run_name)]
    name: Option<String>,
    /// Branch from a stored partition: its key, or RUN@EPOCH (the partition run RUN learned after
    /// EPOCH epochs); the run starts from the checkpoint it was learned from (same as
    /// `--set ipirm.from_partition=…`).
    #[arg(long, value_name = "KEY|RUN@EPOCH")]
    from_partition: Option<String>,
}

/// `run` and `train`: a run, on one process or several.
#[derive(Args, Clone)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Run the config once per seed (train.seed, train.seed + 1, …), each a run of its own under
    /// the same name (an arm for `ipirm compare`); outputs in seed-<S>/ of the output folder.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    seeds: u64,
    #[command(flatten)]
    dist: DistArgs,
}

/// Data-parallel training on several processes (c10d, Gloo): see the README's "Several GPUs".
#[derive(Args, Clone)]
struct DistArgs {
    /// Number of ranks. Alone: start that many ranks on this machine (one per GPU, or CPU
    /// processes sharing the cores). With --rank: the size of a multi-machine job. (WORLD_SIZE)
    #[arg(long)]
    world_size: Option<usize>,
    /// This process's rank in a multi-machine job, 0 on the machine that holds the store. (RANK)
    #[arg(long)]
    rank: Option<usize>,
    /// Rank 0's ADDR:PORT, where its rendezvous listens. (MASTER_ADDR, MASTER_PORT)
    #[arg(long, value_name = "ADDR:PORT")]
    master: Option<String>,
    /// Seconds a rank waits for all the others to join before it gives up.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    dist_timeout: u64,
    /// The process group's backend: nccl (GPU to GPU), gloo (CPU; also CUDA through host
    /// copies), or auto (nccl for CUDA devices, gloo on the CPU). Every rank must use the same.
    #[arg(long, default_value = "auto", value_parser = ["auto", "nccl", "gloo"], value_name = "BACKEND")]
    dist_backend: String,
    /// How the ranks sum gradients: in buckets of at most this many MiB, each summed while the
    /// backward pass goes on (DistributedDataParallel's bucket_cap_mb), or 0 for one flat
    /// all-reduce after it. The same sums either way. Every rank must use the same.
    #[arg(long, default_value_t = 25.0, value_name = "MIB")]
    bucket_cap_mb: f64,
}

impl DistArgs {
    fn mode(&self) -> Result<ipirm::distributed::Mode> {
        Ok(ipirm::distributed::Mode::from_args(
            self.rank,
            self.world_size,
            self.master.as_deref(),
            std::time::Duration::from_secs(self.dist_timeout),
        )?)
    }
}

#[derive(Args, Clone)]
struct MaximizeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// safetensors with float32 `z1`, `z2` (N×d, L2-normalised) and optionally `init` (N×env_num logits).
    #[arg(long)]
    features: PathBuf,
    /// Where to write `partition` (N×env_num logits) and `risk` (epochs×4: total, contrastive, penalty, constraint).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Clone)]
struct BenchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    device: DeviceArg,
    /// The reference benchmark's `--small` sizes (a short CPU run): batch 32, 1,200 images,
    /// 4 timed steps, extraction of 2 × 256 images, maximize on 4,000 pairs.
    #[arg(long)]
    small: bool,
    /// Side of the synthetic stored images (96 = STL-10, 32 = CIFAR, 28 = Fashion-MNIST; 8 to
    /// 512).
    #[arg(long, default_value_t = 96, value_parser = clap::value_parser!(i64).range(8..=512))]
    side: i64,
    /// Channels of the synthetic stored images: 1 (grey) or 3 (RGB).
    #[arg(long, default_value_t = 3, value_parser = checks::image_channels)]
    channels: i64,
    /// Timed steps of each minimize figure (default 4 with --small, else 40).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    iters: Option<u64>,
    /// Feature pairs of the maximize figure (default 4,000 with --small, else 105,000; 0 skips it).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    maximize_n: Option<i64>,
    /// Also split the minimize step into forward, loss, backward and Adam (PART lines).
    #[arg(long)]
    parts: bool,
    /// Only the augmentation figures: the whole train transform (two views), then the sampling
    /// and resized crop alone (resized as data.antialias says).
    #[arg(long, conflicts_with = "parts")]
    augment_only: bool,
    /// Also write the figures as JSON here (ref_bench.json's shape).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct EvalArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    device: DeviceArg,
    /// A checkpoint: a run's model.safetensors, a training state in the store, an imported one,
    /// or the reference's `.pth` (read directly). Without --preset or --config, the config is the
    /// `config.toml` beside it when there is one (what the run that wrote it used).
    #[arg(long)]
    checkpoint: PathBuf,
}

impl EvalArgs {
    /// The config (`--preset` or `--config`, else the run's `config.toml` beside the checkpoint,
    /// else the default) and the device.
    fn resolve(&self) -> Result<(Config, tch::Device)> {
        let mut config = self.config.clone();
        let beside = self.checkpoint.with_file_name("config.toml");
        if config.preset.is_none() && config.config.is_none() && beside.exists() {
            eprintln!(
                "config: {} (beside the checkpoint; --preset or --config to use another)",
                beside.display()
            );
            config.config = Some(beside);
        }
        Ok((config.resolve()?, self.device.parse()?))
    }
}

/// `--device`, for every command that computes.
#[derive(Args, Clone)]
struct DeviceArg {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

impl DeviceArg {
    fn parse(&self) -> Result<tch::Device> {
        Ok(ipirm::device::parse_device(&self.device)?)
    }
}

impl ConfigArgs {
    fn resolve(&self) -> Result<Config> {
        let mut cfg = match (&self.preset, &self.config) {
            (Some(p), _) => Config::preset(p)?,
            (None, Some(path)) => Config::from_toml_file(path)?,
            (None, None) => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            cfg.data.data_dir = Some(d.clone());
        }
        let mut cfg = cfg.with_overrides(&self.overrides)?;
        // Recorded absolute: the run's config.toml is read again from other folders (eval).
        if let Some(d) = &mut cfg.data.data_dir {
            *d = std::path::absolute(&*d).map_err(|e| ipirm::Error::io(&*d, e))?;
        }
        Ok(cfg)
    }
}

impl RunArgs {
    /// The run's name in the store: `--name`, else the preset, else "run".
    fn name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.config.preset.as_deref())
            .unwrap_or("run")
    }
    fn resolve(&self) -> Result<(Config, tch::Device)> {
        let mut cfg = self.config.resolve()?;
        if let Some(spec) = &self.from_partition {
            cfg.ipirm.from_partition = Some(spec.clone());
        }
        let device = self.device.parse()?;
        Ok((cfg, device))
    }
    /// `--out`, by default `<store>/runs/<name>`.
    fn out_dir(&self, store: &std::path::Path) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| store.join("runs").join(self.name()))
    }
}

/// Writes to stdout; a closed pipe (`ipirm store ls | head -1`) ends the program quietly with
/// status 141, as SIGPIPE ends other command-line tools, instead of panicking. (It was 0, which
/// passed `report --check | head` on a failing gate under `pipefail`.)
pub(crate) fn emit(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match write!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        r => Ok(r?),
    }
}

/// [`emit`] with a newline.
pub(crate) fn emitln(text: impl std::fmt::Display) -> Result<()> {
    emit(format_args!("{text}\n"))
}

fn main() -> ExitCode {
    // Before any tensor exists: freed CPU tensor memory is reused, not unmapped (see there).
    ipirm::device::keep_freed_memory();
    ipirm::shim::quiet_cpp_backtraces();
    let cli = Cli::parse();
    // Fault injection for the store's tests (`FAILPOINTS`, see ipirm::store::fault); inert unless set.
    let _faults = fail::FailScenario::setup();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    ipirm::progress::log_every()?;
    let store_dir = cli.store;
    match cli.command {
        Command::Presets => {
            let w = PRESETS.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in PRESETS {
                let paper = p.paper.map(|q| {
                    format!(
                        " [paper: {} linear top-1 {:.2}, {}]",
                        q.label, q.linear_top1, q.source
                    )
                });
                emitln(format_args!(
                    "{:<w$}  {}{}",
                    p.name,
                    p.summary,
                    paper.unwrap_or_default()
                ))?;
            }
            Ok(())
        }
        Command::Config(args) => emit(args.resolve()?.to_toml()),
        Command::Report {
            out,
            gallery_size,
            gallery_seed,
            check,
            require_all,
        } => {
            // No store yet (before the first run, or a mistyped --store): the paper's table
            // alone, read from an empty store made aside, and nothing created at --store.
            let empty = store_cmd::holds_no_store(&store_dir).then(|| {
                eprintln!(
                    "note: no artifact store at {} (a run makes one): the paper's table has no runs beside it",
                    store_dir.display()
                );
                store_cmd::EmptyStore::new()
            });
            let store = match &empty {
                Some(e) => Store::open(e.path())?,
                None => Store::open(&store_dir)?,
            };
            if let Some(dir) = &out {
                checks::outside_store(&store_dir, "--out", dir)?;
            }
            // The expectations file is read before anything is printed: a bad one is exit 2.
            let gate = match &check {
                None => None,
                Some(file) => Some(ipirm::gate::check(&store, file.as_deref(), require_all)?),
            };
            let mut r = ipirm::reproduction::reproduction(&store)?;
            if empty.is_some() {
                // The folder asked for, not the empty store read in its place.
                r.store = format!("{} (no store there yet)", store_dir.display());
            }
            emit(r.markdown())?;
            if let Some(dir) = out {
                let options = ipirm::gallery::GalleryOptions {
                    size: gallery_size,
                    seed: gallery_seed,
                };
                let galleries = r.galleries(&store, &options);
                for (run, g) in &galleries.runs {
                    if let ipirm::reproduction::RunGallery::Unavailable(why) = g {
                        eprintln!("note: no partition gallery for run {run}: {why}");
                    }
                }
                let files = r.write(&dir, &galleries)?;
                emitln(format_args!(
                    "\nwrote {} files to {}",
                    files.len(),
                    dir.display()
                ))?;
            }
            if let Some(g) = gate {
                emit(g.text())?;
                if !g.failures().is_empty() {
                    drop((store, empty));
                    std::process::exit(1);
                }
            }
            Ok(())
        }
        Command::Compare { specs, json, out } => {
            if let Some(dir) = &out {
                checks::outside_store(&store_dir, "--out", dir)?;
            }
            let c =
                ipirm::reproduction::compare::compare(&store_cmd::existing(&store_dir)?, &specs)?;
            if let Some(dir) = &out {
                c.write(dir)?;
            }
            if json {
                emitln(serde_json::to_string_pretty(&c)?)
            } else {
                emit(c.markdown())
            }
        }
        Command::Checkpoint {
            what: CheckpointCommand::Import { config, file, out },
        } => {
            // Read on the CPU: the model the file must fit, as on any machine.
            checks::outside_store(&store_dir, "--out", &out)?;
            let cfg = ipirm::fit::fit(&config.resolve()?, tch::Device::Cpu, 1)?.cfg;
            let r = pipeline::import_checkpoint(&cfg, &file, &out)?;
            let fc = if r.classifier {
                " (with the classifier fc.*)"
            } else {
                ""
            };
            emitln(format_args!(
                "imported {} tensors{fc} into {}",
                r.tensors,
                out.display()
            ))
        }
        Command::Maximize(args) => {
            checks::outside_store(&store_dir, "--out", &args.out)?;
            let r = pipeline::maximize_file(&args.features, &args.out, &args.config.resolve()?)?;
            emitln(format_args!(
                "{}, best at epoch {} (risk {:.4}); environment sizes {:?}; written to {}",
                ipirm::progress::count(r.risks.len() as u64, "epoch"),
                r.best_epoch,
                r.risks[r.best_epoch].total,
                r.env_sizes,
                args.out.display()
            ))
        }
        Command::Bench(a) => {
            let cfg = a.config.resolve()?;
            let device = a.device.parse()?;
            if let Some(p) = &a.json {
                checks::outside_store(&store_dir, "--json", p)?;
                pipeline::check_output_file(p, "--json")?;
            }
            let options = ipirm::bench::BenchOptions {
                small: a.small,
                side: a.side,
                channels: a.channels,
                steps: a.iters.map(|n| n as usize),
                maximize_n: a.maximize_n,
                parts: a.parts,
                augment_only: a.augment_only,
            };
            let report =
                ipirm::bench::run(&ipirm::fit::fit(&cfg, device, 1)?.cfg, device, &options)?;
            if let Some(p) = a.json {
                pipeline::write_json(&p, &report)?;
            }
            Ok(())
        }
        Command::Store { what } => store_cmd::run(&store_dir, what),
        Command::Run(args) => train_command(&store_dir, &args, true),
        Command::Train(args) => train_command(&store_dir, &args, false),
        Command::Eval {
            what: EvalCommand::Knn(args),
        } => {
            let (cfg, device) = args.resolve()?;
            let cfg = ipirm::fit::fit(&cfg, device, 1)?.cfg;
            eprintln!("device: {}", ipirm::device::describe(device));
            let (acc, k) = pipeline::eval_knn(&cfg, device, &args.checkpoint)?;
            emitln(format_args!(
                "kNN (k={k}): top-1 {:.2} top-5 {:.2}",
                acc.top1, acc.top5
            ))
        }
        Command::Eval {
            what: EvalCommand::Linear(args),
        } => {
            let (cfg, device) = args.resolve()?;
            let cfg = ipirm::fit::fit(&cfg, device, 1)?.cfg;
            eprintln!("device: {}", ipirm::device::describe(device));
            let r = pipeline::eval_linear(&cfg, device, &args.checkpoint)?;
            emitln(format_args!(
                "linear probe ({}): top-1 {:.2} top-5 {:.2}",
                ipirm::progress::count(cfg.linear.epochs as u64, "epoch"),
                r.test.top1,
                r.test.top5
            ))
        }
    }
}

/// The seeds of `--seeds n`: `train.seed` and the n − 1 after it.
fn seeds_of(cfg: &Config, n: u64) -> Result<Vec<u64>> {
    let first = cfg.train.seed;
    (0..n)
        .map(|i| {
            first.checked_add(i).ok_or_else(|| {
                ipirm::Error::config(
                    "--seeds",
                    format!("train.seed {first} + {i} overflows: choose a smaller train.seed"),
                )
                .into()
            })
        })
        .collect()
}

/// `ipirm run` (`main`) or `ipirm train`: on one process, as one rank of several, or starting
/// the ranks of a one-machine job.
fn train_command(store_dir: &std::path::Path, args: &TrainArgs, main: bool) -> Result<()> {
    use ipirm::distributed::{self as dist, Group, Mode};
    use ipirm::fit::fit;
    let (cfg, mut device) = args.run.resolve()?;
    // This process's rank in a data-parallel job: joined here, owned here, handed to the job.
    let mut group = None;
    let fitted = match args.dist.mode()? {
        Mode::Spawn { world } => {
            // Fitted here once, so that a bad config or backend fails before any rank starts.
            fit(&cfg, device, world)?;
            let backend = dist::Backend::choose(&args.dist.dist_backend, device)?;
            dist::GradSync::from_cap_mb(args.dist.bucket_cap_mb)?
                .check_rows(cfg.train.batch_size, world)?;
            if let tch::Device::Cuda(_) = device {
                let gpus = ipirm::device::cuda().devices;
                // Ranks may share GPUs over Gloo (as [`dist::rank_device`] assigns them);
                // NCCL refuses two ranks on one GPU.
                if world > gpus && (gpus == 0 || backend == dist::Backend::Nccl) {
                    anyhow::bail!(ipirm::Error::config(
                        "--world-size",
                        format!(
                            "{world} ranks on this machine want a GPU each with {}; libtorch \
                             sees {gpus} (--dist-backend gloo lets ranks share a GPU)",
                            backend.name()
                        ),
                    ));
                }
                if world > gpus {
                    eprintln!(
                        "{world} ranks share {gpus} GPU(s) (gloo): a check of data parallelism, \
                         not a speed-up"
                    );
                }
            }
            return Ok(dist::spawn_local(world, device == tch::Device::Cpu)?);
        }
        Mode::Rank(launch) => {
            let backend = dist::Backend::choose(&args.dist.dist_backend, device)?;
            device = dist::rank_device(
                device,
                launch.local_rank,
                ipirm::device::cuda().devices,
                backend,
            )?;
            let fitted = fit(&cfg, device, launch.world)?;
            let grad_sync = dist::GradSync::from_cap_mb(args.dist.bucket_cap_mb)?;
            let g = Group::connect(&launch, backend, device)?.with_grad_sync(grad_sync);
            let g = std::sync::Arc::new(g);
            if launch.rank != 0 {
                // Rank 0 runs the seeds one after the other; this rank serves each.
                for seed in seeds_of(&fitted.cfg, args.seeds)? {
                    let mut cfg = fitted.cfg.clone();
                    cfg.train.seed = seed;
                    ipirm::train::serve(&cfg, device, g.clone())?;
                }
                return Ok(());
            }
            eprintln!(
                "rank 0 of {}: the other ranks joined (master {}:{}, {})",
                launch.world,
                launch.master_addr,
                launch.master_port,
                backend.name()
            );
            group = Some(g);
            fitted
        }
        Mode::Single => fit(&cfg, device, 1)?,
    };
    for note in &fitted.notes {
        eprintln!("{note}");
    }
    eprintln!("device: {}", ipirm::device::describe(device));
    let seeds = seeds_of(&fitted.cfg, args.seeds)?;
    // The data, and an --out apart from the store, before the store: a run that cannot read its
    // data or make its output folder creates no store at --store. (The data depends on no seed:
    // it is read once.)
    let out = args.run.out_dir(store_dir);
    checks::outside_store(store_dir, "--out", &out)?;
    let data = fitted.cfg.load_training_data(fitted.device)?;
    if let Some(dir) = &args.run.out {
        std::fs::create_dir_all(dir).map_err(|e| ipirm::Error::io(dir, e))?;
    }
    let store = Store::open(store_dir)?;
    for (i, &seed) in seeds.iter().enumerate() {
        let mut fitted = fitted.clone();
        let mut out = out.clone();
        if seeds.len() > 1 {
            fitted.cfg.train.seed = seed;
            out = out.join(format!("seed-{seed}"));
            eprintln!(
                "== seed {seed} ({} of {}) of `{}`",
                i + 1,
                seeds.len(),
                args.run.name()
            );
        }
        if main {
            let report =
                pipeline::main_job(&fitted, &store, args.run.name(), &out, &data, group.clone())?;
            emitln(report.table())?;
        } else {
            let t =
                pipeline::train_job(&fitted, &store, args.run.name(), &out, &data, group.clone())?;
            emitln(format_args!(
                "final checkpoint: {}\ncheckpoint: {}",
                t.checkpoint,
                t.model_file.display()
            ))?;
        }
    }
    Ok(())
}
