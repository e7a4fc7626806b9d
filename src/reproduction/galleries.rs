//! The report's partition galleries: each run's data read once, checked against its stored
//! fingerprint, and a [`gallery::StepGallery`] per maximize step.
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Serialize;

use super::Reproduction;
use crate::data::loader::RunData;
use crate::gallery::{self, GalleryOptions, StepGallery};
use crate::pipeline::StageKind;
use crate::replay::RunView;
use crate::store::Store;
use crate::Result;

impl Reproduction {
    /// The partition galleries of the runs shown that have maximize steps ([`Galleries`]),
    /// their images read from each run's data; a run whose data is not at hand (or not the
    /// images it read) gets the reason instead. `options.size` 0: none.
    pub fn galleries(&self, store: &Store, options: &GalleryOptions) -> Galleries {
        let mut runs = BTreeMap::new();
        if options.size > 0 {
            // Runs on the same data share one read of it.
            let mut read: BTreeMap<(String, String), std::result::Result<Rc<RunData>, String>> =
                BTreeMap::new();
            for r in self.runs().filter(|r| !r.partitions.is_empty()) {
                let g = run_gallery(store, &r.run, options, &mut read)
                    .unwrap_or_else(|e| RunGallery::Unavailable(e.to_string()));
                runs.insert(r.run.clone(), g);
            }
        }
        Galleries {
            options: *options,
            runs,
        }
    }
}

/// The partition galleries of the runs a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Galleries {
    pub options: GalleryOptions,
    /// By run id: the runs shown that have maximize steps.
    pub runs: BTreeMap<String, RunGallery>,
}

/// One run's galleries, or why it has none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunGallery {
    /// One per maximize step, in order.
    Steps(Vec<StepGallery>),
    /// Its data is not at hand, or holds other images than the run read.
    Unavailable(String),
}

/// The galleries of run `id`, its data read once per (dataset stage, folder) into `read`.
fn run_gallery(
    store: &Store,
    id: &str,
    options: &GalleryOptions,
    read: &mut BTreeMap<(String, String), std::result::Result<Rc<RunData>, String>>,
) -> Result<RunGallery> {
    let view = RunView::open(store, id)?;
    let dataset = view
        .stage(StageKind::Dataset)
        .first()
        .map_or_else(String::new, |a| a.key.clone());
    let folder = format!("{:?}", view.cfg.data.data_dir);
    let data = read.entry((dataset, folder)).or_insert_with(|| {
        eprintln!(
            "partition gallery: reading the {} images run {id} read, and checking them",
            view.cfg.data.dataset
        );
        view.data(store).map(Rc::new).map_err(|e| e.to_string())
    });
    let data = match data {
        Ok(d) => d.clone(),
        Err(why) => return Ok(RunGallery::Unavailable(why.clone())),
    };
    let steps = view
        .partitions(store)?
        .iter()
        .map(|p| gallery::step_gallery(&p.partition, p.after_epoch, &data.train, options))
        .collect::<Result<Vec<_>>>()?;
    Ok(RunGallery::Steps(steps))
}
