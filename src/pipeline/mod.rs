//! The stages of a run wired together through the artifact store.
//!
//! - [`stages`]: the kinds of stage, the parameters each one reads, their keys, the [`Plan`] of a
//!   run (every training stage's key, known before any work).
//! - [`artifacts`]: [`Ctx`], the store as one run uses it, and the records only the pipeline
//!   stores (the tensor artifacts are encoded beside their types, in `train/`).
//! - [`training`]: training along a plan with resume (a killed run continues from its last
//!   intact checkpoint; a longer run continues a shorter one).
//! - [`report`]: the results table and the maximize steps' summaries.
//! - [`run`]: the jobs that train through the store, `ipirm run` (the README's main job,
//!   [`main_job`]: raw-pixel kNN and the kNN of the encoder at initialisation as the two
//!   reference points, then training, the trained encoder's kNN and the linear probe) and
//!   `ipirm train`; [`branch`]: `--from-partition` resolved and checked.
//! - [`model_file`]: the model files a run writes and the commands that read one (`eval`,
//!   `checkpoint import`); [`maximize_file`](mod@maximize_file): `ipirm maximize` on a features
//!   file; [`output`]: the files jobs write.
pub mod artifacts;
pub mod branch;
pub mod maximize_file;
pub mod model_file;
pub mod output;
pub mod report;
pub mod run;
pub mod stages;
pub mod training;

pub use artifacts::{Ctx, DatasetRecord, MonitorPoint};
pub use branch::resolve_branch;
pub use maximize_file::maximize_file;
pub use model_file::{eval_knn, eval_linear, import_checkpoint, load_model, Imported, LoadedModel};
pub use output::{check_output_dir, check_output_file, write_json};
pub use report::{PartitionSummary, Report};
pub use run::{main_job, train_job, TrainOutcome};
pub use stages::{Branch, Plan, StageKind};
pub use training::{train, Trained};
