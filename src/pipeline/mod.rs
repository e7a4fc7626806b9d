//! The stages of a run wired together through the artifact store.
//!
//! - [`stages`]: the kinds of stage, the parameters each one reads, their keys, the [`Plan`] of a
//!   run (every training stage's key, known before any work).
//! - [`artifacts`]: what is stored, one type and one codec each, and [`Ctx`], the store as one
//!   run uses it.
//! - [`training`]: training along a plan with resume (a killed run continues from its last
//!   intact checkpoint; a longer run continues a shorter one).
//! - [`report`]: the results table and the maximize steps' summaries.
//! - [`jobs`]: what the command line runs, one function per command; `ipirm run` (the README's
//!   main job) is [`main_job`]: raw-pixel kNN and the kNN of the encoder at initialisation as
//!   the two reference points, then training, the trained encoder's kNN and the linear probe.
pub mod artifacts;
pub mod jobs;
pub mod report;
pub mod stages;
pub mod training;

pub use artifacts::{Checkpoint, Ctx, DatasetRecord, Features, MonitorPoint, TensorArtifact};
pub use jobs::{
    check_output_file, default_out_dir, eval_knn, eval_linear, import_checkpoint, load_model,
    main_job, maximize_file, resolve_branch, train_job, write_json, Imported, LoadedModel,
    TrainOutcome,
};
pub use report::{PartitionSummary, Report};
pub use stages::{Branch, Plan, StageKind};
pub use training::{train, Trained};
