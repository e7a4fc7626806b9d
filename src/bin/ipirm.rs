//! The `ipirm` command line: a thin layer over the library.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ipirm::config::{Config, PRESETS};
use ipirm::data::loader::RunData;
use ipirm::eval::{knn, linear};
use ipirm::pipeline;
use ipirm::pipeline::stages::Ctx;
use ipirm::store::Store;

#[derive(Parser)]
#[command(name = "ipirm", version, about = "IP-IRM (NeurIPS 2021) on libtorch: train, evaluate, reproduce")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: kNN of raw pixels and of the initial encoder, training, kNN and linear probe
    /// of the trained encoder, and a results table.
    Run(RunArgs),
    /// Train a model and save its checkpoint.
    Train(RunArgs),
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
    /// epoch) on synthetic images; prints figures.
    Bench(BenchArgs),
    /// The artifact store: list, show, verify, collect garbage, export, import.
    Store {
        #[command(flatten)]
        store: StoreArg,
        #[command(subcommand)]
        what: StoreCommand,
    },
    /// List the named presets.
    Presets,
    /// Print the resolved configuration as TOML (what `--config` reads).
    Config(ConfigArgs),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Runs and stages, one line each.
    Ls,
    /// An artifact or a run (key, run id, run name or a unique prefix) with its inputs, config,
    /// digests and provenance.
    Show {
        what: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob; report each damaged or missing one by key, and orphans.
    Verify,
    /// Remove what no pinned run and no latest run of a name reaches.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
    /// Pin a run (or unpin it with --off) so gc keeps everything it reaches.
    Pin {
        run: String,
        #[arg(long)]
        off: bool,
    },
    /// Write a plain JSON manifest and the blob files to DIR (readable without sled).
    Export { dir: PathBuf },
    /// Read what `export` wrote, verifying every digest.
    Import { dir: PathBuf },
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
struct StoreArg {
    /// The artifact store (created if absent).
    #[arg(long = "store", value_name = "DIR", default_value = "artifacts", global = true)]
    dir: PathBuf,
}

impl StoreArg {
    fn open(&self) -> Result<Store> {
        Ok(Store::open(&self.dir)?)
    }
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    store: StoreArg,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output folder (default artifacts/runs/<preset or "run">).
    #[arg(long)]
    out: Option<PathBuf>,
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
    #[arg(long, default_value = "auto")]
    device: String,
    /// Side of the synthetic stored images (96 = STL-10, 32 = CIFAR, 28 = Fashion-MNIST).
    #[arg(long, default_value_t = 96)]
    side: i64,
    /// Channels of the synthetic stored images.
    #[arg(long, default_value_t = 3)]
    channels: i64,
    /// Timed repetitions of each step.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Samples of the maximize-epoch figure (0 = skip it).
    #[arg(long, default_value_t = 105_000)]
    maximize_n: i64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A checkpoint written by `ipirm train` or `ipirm run` (model.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
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
        Ok(cfg.with_overrides(&self.overrides)?)
    }
}

impl RunArgs {
    /// The run's name in the store: the preset, or "run".
    fn name(&self) -> &str {
        self.config.preset.as_deref().unwrap_or("run")
    }
    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| pipeline::default_out_dir(&self.store.dir, self.name()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Presets => {
            let w = PRESETS.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in PRESETS {
                println!("{:<w$}  {}", p.name, p.summary);
            }
            Ok(())
        }
        Command::Maximize(args) => {
            let cfg = args.config.resolve()?;
            let r = pipeline::maximize_features(&args.features, &args.out, &cfg)?;
            println!(
                "{} epochs, best at epoch {} (risk {:.4}); environment sizes {:?}; written to {}",
                r.risks.len(),
                r.best_epoch,
                r.risks[r.best_epoch].total,
                r.env_sizes,
                args.out.display()
            );
            Ok(())
        }
        Command::Bench(a) => {
            let cfg = a.config.resolve()?;
            let device = ipirm::device::parse_device(&a.device)?;
            eprintln!("device: {}; model {:?} width {}; batch {}", ipirm::device::describe(device), cfg.model.arch, cfg.model.width, cfg.train.batch_size);
            let figures = ipirm::bench::run(&cfg, device, a.side, a.channels, a.iters, a.maximize_n)?;
            if let Some(p) = a.json {
                ipirm::pipeline::write_json(&p, &figures)?;
            }
            Ok(())
        }
        Command::Store { store, what } => {
            let store = store.open()?;
            match what {
                StoreCommand::Ls => print!("{}", store.ls()?),
                StoreCommand::Show { what, json } => println!("{}", store.show(&what, json)?),
                StoreCommand::Verify => {
                    let report = store.verify()?;
                    print!("{report}");
                    if !report.is_clean() {
                        anyhow::bail!("the store at {} has damaged or missing artifacts (listed above)", store.root().display());
                    }
                }
                StoreCommand::Gc { dry_run } => print!("{}", store.gc(dry_run)?),
                StoreCommand::Pin { run, off } => {
                    store.pin(&run, !off)?;
                    println!("{} {run}", if off { "unpinned" } else { "pinned" });
                }
                StoreCommand::Export { dir } => print!("{}", store.export(&dir)?),
                StoreCommand::Import { dir } => print!("{}", store.import(&dir)?),
            }
            Ok(())
        }
        Command::Config(args) => {
            print!("{}", args.resolve()?.to_toml());
            Ok(())
        }
        Command::Run(args) => {
            let cfg = args.config.resolve()?;
            let device = ipirm::device::parse_device(&args.device)?;
            eprintln!("device: {}", ipirm::device::describe(device));
            let store = args.store.open()?;
            let report = pipeline::main_job(&cfg, device, &store, args.name(), &args.out_dir())?;
            println!("{}", report.table());
            Ok(())
        }
        Command::Train(args) => {
            let cfg = args.config.resolve()?;
            let device = ipirm::device::parse_device(&args.device)?;
            eprintln!("device: {}", ipirm::device::describe(device));
            let data = RunData::load(&cfg.data, device)?;
            let store = args.store.open()?;
            let run = store.start_run(args.name(), &cfg)?;
            let ctx = Ctx { store: &store, run: run.id.clone(), device, cfg: &cfg };
            eprintln!("run {} in store {}", run.id, store.root().display());
            let dataset_key = pipeline::dataset_stage(&ctx, &data)?;
            let on_epoch = |_: &ipirm::train::Trainer, s: &ipirm::train::EpochStats| {
                eprintln!("epoch {}/{}: loss {:.4}, {:.0} img/s, {:.1} s", s.epoch, cfg.train.epochs, s.loss, s.images_per_sec, s.seconds);
                Ok(())
            };
            let on_partition = |p: &ipirm::train::ipirm::PartitionRecord| {
                eprintln!("{}", pipeline::PartitionSummary::new(p, &data.train.labels, data.train.num_classes).describe());
                Ok(())
            };
            let trained = pipeline::train(&ctx, &data, &pipeline::stages::Plan::new(&cfg, &dataset_key)?, on_epoch, on_partition)?;
            store.finish_run(&run.id)?;
            let trainer = trained.trainer;
            println!("final checkpoint: {}", trained.checkpoint);
            let out = args.out_dir();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let ckpt = out.join("model.safetensors");
            trainer.vs.save(&ckpt)?;
            std::fs::write(out.join("config.toml"), cfg.to_toml())?;
            println!("checkpoint: {}", ckpt.display());
            Ok(())
        }
        Command::Eval { what } => {
            let (args, is_knn) = match what {
                EvalCommand::Knn(a) => (a, true),
                EvalCommand::Linear(a) => (a, false),
            };
            let cfg = args.run.config.resolve()?;
            let device = ipirm::device::parse_device(&args.run.device)?;
            let mut vs = tch::nn::VarStore::new(device);
            let model = ipirm::model::Model::new(&vs.root(), &cfg.model);
            vs.load(&args.checkpoint).map_err(|e| {
                anyhow::anyhow!(
                    "{}: expected a checkpoint of the configured model ({:?}, width {}), could not load it: {e}",
                    args.checkpoint.display(),
                    cfg.model.arch,
                    cfg.model.width
                )
            })?;
            let data = RunData::load(&cfg.data, device)?;
            if is_knn {
                let acc = knn::evaluate(&model, &data.bank, &data.test, cfg.knn.k, cfg.knn_temperature(), cfg.knn.batch_size)?;
                println!("kNN (k={}): top-1 {:.2} top-5 {:.2}", cfg.knn.k, acc.top1, acc.top5);
            } else {
                let r = linear::linear_probe(&vs, &cfg.model, &cfg.linear, &data.bank, &data.test)?;
                println!("linear probe ({} epochs): top-1 {:.2} top-5 {:.2}", cfg.linear.epochs, r.test.top1, r.test.top5);
            }
            Ok(())
        }
    }
}
