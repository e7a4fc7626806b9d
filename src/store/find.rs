//! Finding a run or an artifact by what a person types: a key, a run id or name, a prefix.
use super::{latest_of, Artifact, RunRecord, Store};
use crate::{Error, Result};

/// The fewest characters of a key or run id taken as a prefix.
const MIN_PREFIX: usize = 4;

/// What [`Store::find`] resolved its argument to.
#[derive(Debug, Clone)]
pub enum Found {
    Artifact(Box<Artifact>),
    Run(RunRecord),
}

impl Store {
    /// The run `what` names: a run id, a run name (its latest run: the most recent finished one,
    /// else the most recent), or a unique prefix (at least 4 characters) of a run id.
    pub fn resolve_run(&self, what: &str) -> Result<RunRecord> {
        match self.find_in(what, false)? {
            Found::Run(r) => Ok(r),
            Found::Artifact(_) => unreachable!("only runs were searched"),
        }
    }

    /// An artifact or a run, found by: artifact key, run id, run name (its latest run), or a
    /// unique prefix (at least 4 characters) of an artifact key or run id.
    pub fn find(&self, what: &str) -> Result<Found> {
        self.find_in(what, true)
    }

    fn find_in(&self, what: &str, artifacts: bool) -> Result<Found> {
        let (arts, runs) = self.with_index(|ix| {
            let arts: Vec<Artifact> = if artifacts { ix.list()? } else { Vec::new() };
            Ok((arts, ix.runs()?))
        })?;
        let latest = latest_of(&runs).into_iter().find(|r| r.name == what);
        let all = (arts.into_iter())
            .map(|a| (a.key.clone(), Found::Artifact(Box::new(a))))
            .chain(runs.into_iter().map(|r| (r.id.clone(), Found::Run(r))));
        // An exact key or id first, then a run name, then a unique prefix.
        let mut hits = Vec::new();
        for (id, found) in all {
            if id == what {
                return Ok(found);
            }
            if !what.is_empty() && id.starts_with(what) {
                hits.push((id, found));
            }
        }
        if let Some(r) = latest {
            return Ok(Found::Run(r));
        }
        let root = self.root().display();
        if (1..MIN_PREFIX).contains(&what.len()) && !hits.is_empty() {
            return Err(Error::Store(format!(
                "store at {root}: `{what}` is too short a prefix: give at least {MIN_PREFIX} characters of a key or run id"
            )));
        }
        match hits.len() {
            1 => Ok(hits.pop().expect("one").1),
            0 => {
                let kinds = ["run id or run name", "artifact key, run id or run name"];
                let kind = kinds[artifacts as usize];
                Err(Error::Store(format!(
                    "store at {root}: no {kind} `{what}` (see `ipirm store ls`)"
                )))
            }
            n => {
                let ids: Vec<&str> = hits.iter().take(5).map(|(id, _)| id.as_str()).collect();
                Err(Error::Store(format!("store at {root}: `{what}` is a prefix of {n} keys or run ids ({}…): give more of it", ids.join(", "))))
            }
        }
    }
}
