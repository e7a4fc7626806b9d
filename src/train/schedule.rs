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
    /// With `retain_group`, keep at most this many, the latest (`ipirm.retain_group_set`; 0 = all).
    pub retain_group_set: usize,
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
            retain_group_set: cfg.ipirm.retain_group_set,
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
    /// with `retain_group`, at most the latest `retain_group_set` when that is not 0, else the
    /// latest.
    ///
    /// `main_mixup.py` (lines 465–475) keeps a list that starts with the first partition and, after
    /// each maximize step with `--retain_group`, appends the new one and, once the list already
    /// held `retain_group_set` entries, drops its first (`updated_split_all[1:]`): first in, first
    /// out, so the list is always the latest `min(steps, retain_group_set)` partitions.
    pub fn kept<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        let keep = match (self.retain_group, self.retain_group_set) {
            (false, _) => 1,
            (true, 0) => all.len(),
            (true, n) => n,
        };
        &all[all.len().saturating_sub(keep)..]
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

    /// The FIFO rule of `main_mixup.py` lines 465–475, replayed step by step as the reference
    /// runs it, against `kept` on every prefix of the partitions found.
    #[test]
    fn retain_group_set_keeps_the_latest_n_first_in_first_out() {
        let cfg = Config::default()
            .with_overrides(&["ipirm.retain_group_set=2"])
            .unwrap();
        let s = Schedule::new(&cfg, 0);
        assert_eq!(s.retain_group_set, 2);
        for set in [1usize, 2, 3] {
            let s = Schedule {
                retain_group_set: set,
                ..s.clone()
            };
            let all: Vec<usize> = (0..6).collect();
            // updated_split_all = [first]; then per maximize step the reference's branch.
            let mut reference = vec![all[0]];
            assert_eq!(s.kept(&all[..1]), reference.as_slice());
            for step in 1..all.len() {
                assert!(reference.len() <= set);
                reference.push(all[step]);
                if reference.len() == set + 1 {
                    reference.remove(0);
                }
                assert_eq!(
                    s.kept(&all[..=step]),
                    reference.as_slice(),
                    "set {set}, step {step}"
                );
            }
        }
        // 0 keeps everything; without retain_group the set size is not read.
        let all = Schedule {
            retain_group_set: 0,
            ..s.clone()
        };
        assert_eq!(all.kept(&[1, 2, 3]), &[1, 2, 3]);
        let latest = Schedule {
            retain_group: false,
            ..s
        };
        assert_eq!(latest.kept(&[1, 2, 3]), &[3]);
    }
}
