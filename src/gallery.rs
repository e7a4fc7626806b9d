//! The partition gallery: what the environments of a maximize step hold, in pictures.
//!
//! For each environment of a stored partition (hard assignment: the argmax of its logits), the
//! members it is most confident of (the highest assignment probability, the softmax of the
//! logits) and a random sample of its members of the same size, each as one PNG grid of the
//! training images with the classes among them; beside them the environment's whole class mix.
//! The report shows it per maximize step, and notebook 02 for the step it replays.
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::data::{classes, Dataset};
use crate::train::ipirm::class_composition;
use crate::{html, plot, rng, Error, Result};

/// Images per grid unless told otherwise (`ipirm report --gallery-size`).
pub const DEFAULT_SIZE: usize = 16;
/// Images per row of a grid.
pub const COLUMNS: usize = 8;
/// Classes named in a class mix; the rest are summed (CIFAR-100 has 100).
const MIX_NAMED: usize = 10;

/// How many images a grid shows and the seed of the random samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GalleryOptions {
    pub size: usize,
    pub seed: u64,
}

impl Default for GalleryOptions {
    fn default() -> Self {
        GalleryOptions {
            size: DEFAULT_SIZE,
            seed: 0,
        }
    }
}

/// Some training images as one picture.
#[derive(Debug, Clone, Serialize)]
pub struct Grid {
    /// Their indices in the run's training set, in grid order (row by row).
    pub indices: Vec<i64>,
    /// Their classes: counts by label, then a last column counting unlabelled images.
    pub classes: Vec<i64>,
    /// The images as a PNG ([`plot::image_grid_png`]: [`COLUMNS`] a row, each pixel drawn
    /// `scale`×`scale`, 2-pixel gaps); empty when there are no images.
    #[serde(skip)]
    pub png: Vec<u8>,
}

/// One environment of a maximize step.
#[derive(Debug, Clone, Serialize)]
pub struct EnvGallery {
    pub env: usize,
    /// Training images assigned to it.
    pub members: i64,
    /// Their classes: counts by label, then unlabelled.
    pub classes: Vec<i64>,
    /// The members with the highest probability of this environment, highest first (ties in
    /// index order).
    pub confident: Grid,
    /// Those probabilities, in the same order.
    pub confidence: Vec<f64>,
    /// Members drawn at random (without replacement, from the gallery seed, the step and the
    /// environment), as many as `confident` holds.
    pub sample: Grid,
}

/// The gallery of one maximize step.
#[derive(Debug, Clone, Serialize)]
pub struct StepGallery {
    /// The step ran after this many training epochs.
    pub after_epoch: usize,
    /// Images per row of each grid, and how many screen pixels an image pixel takes.
    pub columns: usize,
    pub scale: usize,
    pub envs: Vec<EnvGallery>,
}

/// The gallery of the partition `partition` (N×E logits) of the maximize step after epoch
/// `after_epoch`, learned on `train` (the run's training set, the images its rows index).
pub fn step_gallery(
    partition: &Tensor,
    after_epoch: usize,
    train: &Dataset,
    options: &GalleryOptions,
) -> Result<StepGallery> {
    let logits = partition.to_device(Device::Cpu).to_kind(Kind::Float);
    let [n, env_num] = logits.size()[..] else {
        return Err(Error::Shape(format!(
            "gallery: a partition of shape {:?}, not N×E",
            logits.size()
        )));
    };
    if n != train.len() {
        return Err(Error::Shape(format!(
            "gallery: the partition after epoch {after_epoch} assigns {n} images, the training set {} holds {}",
            train.name,
            train.len()
        )));
    }
    let images = train.images.to_device(Device::Cpu);
    let labels = Vec::<i64>::try_from(train.labels.to_device(Device::Cpu))?;
    let num_classes = train.num_classes as usize;
    let side = images.size().get(2).copied().unwrap_or(1).max(1) as usize;
    let scale = (64 / side).max(1);
    let probs = logits.softmax(1, Kind::Float);
    let assign = probs.argmax(1, false);
    let composition = class_composition(&logits, &train.labels, train.num_classes);
    let grid = |indices: Vec<i64>| -> Result<Grid> {
        let mut counts = vec![0i64; num_classes + 1];
        for &i in &indices {
            let l = labels[i as usize];
            counts[if l < 0 { num_classes } else { l as usize }] += 1;
        }
        let png = if indices.is_empty() {
            Vec::new()
        } else {
            let chosen = images.index_select(0, &Tensor::from_slice(&indices));
            plot::image_grid_png(&chosen, COLUMNS, scale)?
        };
        Ok(Grid {
            indices,
            classes: counts,
            png,
        })
    };
    let mut envs = Vec::new();
    for e in 0..env_num {
        let members = Vec::<i64>::try_from(assign.eq(e).nonzero().view([-1]))?;
        let p_env = Vec::<f64>::try_from(
            probs
                .select(1, e)
                .index_select(0, &Tensor::from_slice(&members))
                .to_kind(Kind::Double),
        )?;
        // Highest probability first; a stable sort keeps ties in index order.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| p_env[b].total_cmp(&p_env[a]));
        order.truncate(options.size);
        let stream = format!("gallery after epoch {after_epoch}");
        let sample = draw(
            &members,
            order.len(),
            rng::derive(options.seed, &stream, e as u64),
        );
        envs.push(EnvGallery {
            env: e as usize,
            members: members.len() as i64,
            classes: composition.get(e as usize).cloned().unwrap_or_default(),
            confident: grid(order.iter().map(|&i| members[i]).collect())?,
            confidence: order.iter().map(|&i| p_env[i]).collect(),
            sample: grid(sample)?,
        });
    }
    Ok(StepGallery {
        after_epoch,
        columns: COLUMNS,
        scale,
        envs,
    })
}

/// `k` of `items` drawn without replacement (a partial Fisher–Yates shuffle driven by
/// SplitMix64 from `seed`), in the order drawn.
fn draw(items: &[i64], k: usize, seed: i64) -> Vec<i64> {
    let mut pool = items.to_vec();
    let mut state = seed as u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let k = k.min(pool.len());
    for i in 0..k {
        let j = i + (next() % (pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

impl StepGallery {
    /// The gallery as an HTML table, one row per environment: its size and class mix, the grid
    /// of its most confident members and the grid of its random sample, each with the classes
    /// among them beneath (images inline as `data:` URIs, each `<img>` carrying its
    /// training-set indices in `data-indices`, its `data-columns` and `data-scale`); classes
    /// named by `names`.
    pub fn html(&self, names: &[&str]) -> String {
        let total: i64 = self.envs.iter().map(|e| e.members).sum();
        let mix = |counts: &[i64]| {
            format!(
                "<div class=\"mix\">{}</div>",
                html::escape(&classes::composition_mix(counts, names, MIX_NAMED))
            )
        };
        let mut s = String::from(
            "<table class=\"gallery\">\n<thead><tr><th>environment</th><th>most confident members</th><th>members at random</th></tr></thead>\n<tbody>\n",
        );
        for e in &self.envs {
            let share = 100.0 * e.members as f64 / total.max(1) as f64;
            s += &format!(
                "<tr><td class=\"env\"><b>env {}</b><br>{} images ({share:.1} %){}</td>",
                e.env,
                e.members,
                mix(&e.classes)
            );
            let p_range = match (e.confidence.first(), e.confidence.last()) {
                (Some(hi), Some(lo)) => format!(", p {lo:.3} to {hi:.3}"),
                _ => String::new(),
            };
            for (grid, what, note) in [
                (&e.confident, "most confident", p_range),
                (&e.sample, "random", String::new()),
            ] {
                s += &format!(
                    "<td>{}<br><small>{} images{note}:</small>{}</td>",
                    self.img(grid, e.env, what),
                    grid.indices.len(),
                    mix(&grid.classes)
                );
            }
            s += "</tr>\n";
        }
        s += "</tbody>\n</table>\n";
        s
    }

    /// One grid as an `<img>`, or a note when it is empty.
    fn img(&self, grid: &Grid, env: usize, what: &str) -> String {
        if grid.png.is_empty() {
            return "<em>no images</em>".into();
        }
        let indices: Vec<String> = grid.indices.iter().map(i64::to_string).collect();
        format!(
            "<img class=\"grid\" src=\"{}\" alt=\"env {env}: {} {what} members\" data-indices=\"{}\" data-columns=\"{}\" data-scale=\"{}\">",
            html::png_data_uri(&grid.png),
            grid.indices.len(),
            indices.join(","),
            self.columns,
            self.scale
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_is_a_seeded_sample_without_repeats() {
        let items: Vec<i64> = (100..150).collect();
        let a = draw(&items, 16, 7);
        assert_eq!(a, draw(&items, 16, 7));
        assert_ne!(a, draw(&items, 16, 8));
        let mut unique = a.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 16);
        assert!(a.iter().all(|i| items.contains(i)));
        assert_eq!(draw(&items[..3], 16, 7).len(), 3);
        assert!(draw(&[], 16, 7).is_empty());
    }

    #[test]
    fn the_most_confident_members_come_first() {
        // 6 images, 2 environments: images 1, 3, 4 lean to env 1, image 4 the most.
        let logits = Tensor::from_slice(&[
            2.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 0.0, 3.0, 0.5, 0.0,
        ])
        .view([6, 2]);
        let train = Dataset {
            name: "test".into(),
            images: Tensor::arange(6 * 4 * 4, (Kind::Uint8, Device::Cpu)).view([6, 1, 4, 4]),
            labels: Tensor::from_slice(&[0i64, 1, 1, -1, 0, 2]),
            num_classes: 3,
        };
        let options = GalleryOptions { size: 2, seed: 1 };
        let g = step_gallery(&logits, 3, &train, &options).unwrap();
        assert_eq!((g.after_epoch, g.scale, g.envs.len()), (3, 16, 2));
        assert_eq!(g.envs[0].confident.indices, vec![0, 2]);
        assert_eq!(g.envs[1].confident.indices, vec![4, 3]);
        assert!(g.envs[1].confidence[0] > g.envs[1].confidence[1]);
        assert_eq!(g.envs[1].members, 3);
        assert_eq!(g.envs[1].classes, vec![1, 1, 0, 1]);
        assert_eq!(g.envs[1].confident.classes, vec![1, 0, 0, 1]);
        assert_eq!(g.envs[0].sample.indices.len(), 2);
        let html = g.html(&["a", "b", "c"]);
        assert_eq!(html.matches("<img").count(), 4, "{html}");
        assert!(html.contains("data-indices=\"4,3\""), "{html}");
        assert!(html.contains("a 1; unlabelled 1"), "{html}");
        // A partition of another image count is refused.
        let short = Dataset {
            images: train.images.narrow(0, 0, 5),
            labels: train.labels.narrow(0, 0, 5),
            ..train
        };
        assert!(step_gallery(&logits, 3, &short, &options).is_err());
    }
}
