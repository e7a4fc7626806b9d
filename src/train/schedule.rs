//! The IP-IRM schedule, in one place for the planner (which stage keys a run has) and the
//! training loop (what each epoch trains on): when maximize steps run, and which of the
//! partitions found so far each minimize epoch keeps.
use crate::config::{Config, Method};

/// When maximize steps run and which partitions are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// SimCLR runs no maximize step.
    pub ipirm: bool,
    /// The epoch the run starts from: 0, or the epoch of the partition a branched run starts with.
    pub start: usize,
    pub epochs: usize,
    pub maximize_iter: usize,
    /// Keep every partition (`ipirm.retain_group`), else the latest only.
    pub retain_group: bool,
}

impl Schedule {
    /// The schedule of `cfg` for a run starting after `start` epochs.
    pub fn new(cfg: &Config, start: usize) -> Schedule {
        Schedule {
            ipirm: cfg.train.method == Method::Ipirm,
            start,
            epochs: cfg.train.epochs,
            maximize_iter: cfg.ipirm.maximize_iter.max(1),
            retain_group: cfg.ipirm.retain_group,
        }
    }

    /// Whether a maximize step runs after `epoch` training epochs: at the start (before the first
    /// epoch the run trains), then after every multiple of `maximize_iter`, but not after the
    /// last epoch (no minimize step would use it; the reference runs it anyway).
    pub fn maximizes_after(&self, epoch: usize) -> bool {
        self.ipirm
            && epoch >= self.start
            && epoch < self.epochs
            && (epoch == self.start || epoch.is_multiple_of(self.maximize_iter))
    }

    /// The epochs after which maximize steps run, in order (step `k` is the `k`-th).
    pub fn maximize_epochs(&self) -> impl Iterator<Item = usize> + '_ {
        (self.start..self.epochs).filter(move |&e| self.maximizes_after(e))
    }

    /// The partitions a minimize epoch trains on, out of all found so far (in order): every one
    /// with `retain_group`, else the latest.
    pub fn kept<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        if self.retain_group {
            all
        } else {
            &all[all.len().saturating_sub(1)..]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_at_the_start_and_every_maximize_iter_but_not_after_the_last_epoch() {
        let cfg = Config::default()
            .with_overrides(&["train.epochs=400", "ipirm.maximize_iter=50"])
            .unwrap();
        let s = Schedule::new(&cfg, 0);
        assert_eq!(
            s.maximize_epochs().collect::<Vec<_>>(),
            vec![0, 50, 100, 150, 200, 250, 300, 350]
        );
        let branched = Schedule::new(&cfg, 70);
        assert_eq!(
            branched.maximize_epochs().collect::<Vec<_>>(),
            vec![70, 100, 150, 200, 250, 300, 350]
        );
        let simclr = Config::default()
            .with_overrides(&["train.method=simclr"])
            .unwrap();
        assert_eq!(Schedule::new(&simclr, 0).maximize_epochs().count(), 0);
        let latest = Schedule {
            retain_group: false,
            ..s.clone()
        };
        assert_eq!(latest.kept(&[1, 2, 3]), &[3]);
        assert_eq!(s.kept(&[1, 2, 3]), &[1, 2, 3]);
        assert!(s.kept::<u8>(&[]).is_empty() && latest.kept::<u8>(&[]).is_empty());
    }
}
