//! The classes of each dataset by name, in label order, as the datasets' own files name them:
//! Fashion-MNIST's README, STL-10's `class_names.txt`, CIFAR-10's `batches.meta.txt` and
//! CIFAR-100's `fine_label_names.txt` (the fine labels, which the readers return).
use super::DatasetKind;

pub const FASHION_MNIST: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

pub const STL10: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

pub const CIFAR10: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub const CIFAR100: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

impl DatasetKind {
    /// The names of the classes, indexed by label.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            DatasetKind::FashionMnist => &FASHION_MNIST,
            DatasetKind::Stl10 => &STL10,
            DatasetKind::Cifar10 => &CIFAR10,
            DatasetKind::Cifar100 => &CIFAR100,
        }
    }
}

/// The class names of the dataset named `dataset` (as configs and reports name it), or none
/// for a name this version does not know (a report of a store made by another version).
pub fn names_of(dataset: &str) -> &'static [&'static str] {
    dataset
        .parse::<DatasetKind>()
        .map_or(&[], DatasetKind::class_names)
}

/// Class `c` by name: its name in `names`, else `class c`.
pub fn class_name(names: &[&str], c: usize) -> String {
    names
        .get(c)
        .map_or_else(|| format!("class {c}"), |n| n.to_string())
}

/// The classes present in `counts` (indexed by label), largest first, ties in label order:
/// `Sandal 7, Sneaker 5, …`; at most `most` named, the rest summed as `… 12 in 8 other
/// classes`. "none" when every count is 0.
pub fn mix(counts: &[i64], names: &[&str], most: usize) -> String {
    let mut present: Vec<(usize, i64)> = counts
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, n)| n > 0)
        .collect();
    if present.is_empty() {
        return "none".into();
    }
    present.sort_by_key(|&(c, n)| (std::cmp::Reverse(n), c));
    let mut parts: Vec<String> = present
        .iter()
        .take(most)
        .map(|&(c, n)| format!("{} {n}", class_name(names, c)))
        .collect();
    let rest = &present[most.min(present.len())..];
    if !rest.is_empty() {
        let n: i64 = rest.iter().map(|&(_, n)| n).sum();
        let other = if rest.len() == 1 { "class" } else { "classes" };
        parts.push(format!("… {n} in {} other {other}", rest.len()));
    }
    parts.join(", ")
}

/// One row of a class composition (the classes, then a last column counting unlabelled
/// images, as [`crate::train::ipirm::class_composition`] makes it): its [`mix`], then
/// `; unlabelled N` where there are any.
pub fn composition_mix(row: &[i64], names: &[&str], most: usize) -> String {
    let Some((&unlabelled, labelled)) = row.split_last() else {
        return "none".into();
    };
    match (labelled.iter().any(|&n| n > 0), unlabelled > 0) {
        (_, false) => mix(labelled, names, most),
        (false, true) => format!("unlabelled {unlabelled}"),
        (true, true) => format!("{}; unlabelled {unlabelled}", mix(labelled, names, most)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dataset_names_each_class_once() {
        for kind in DatasetKind::ALL {
            let names = kind.class_names();
            assert_eq!(names.len() as i64, kind.num_classes(), "{kind}");
            let mut unique = names.to_vec();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{kind}: a name twice");
        }
        // CIFAR-100's fine labels are numbered in alphabetical order of their names.
        assert!(CIFAR100.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(names_of("fashion-mnist")[9], "Ankle boot");
        assert!(names_of("no such dataset").is_empty());
    }

    #[test]
    fn a_mix_names_the_largest_classes_first() {
        let names = &FASHION_MNIST[..];
        assert_eq!(
            mix(&[0, 0, 0, 0, 0, 7, 0, 5, 0, 7, 0], names, 10),
            "Sandal 7, Ankle boot 7, Sneaker 5"
        );
        assert_eq!(
            mix(&[1, 2, 3, 0, 0, 0, 0, 0, 0, 1], names, 2),
            "Pullover 3, Trouser 2, … 2 in 2 other classes"
        );
        assert_eq!(mix(&[0, 0], names, 3), "none");
        assert_eq!(mix(&[0, 3], &[], 3), "class 1 3");
        assert_eq!(
            composition_mix(&[0, 2, 0, 5], &STL10, 10),
            "bird 2; unlabelled 5"
        );
        assert_eq!(composition_mix(&[0, 0, 5], &STL10, 10), "unlabelled 5");
        assert_eq!(composition_mix(&[0, 4, 0], &STL10, 10), "bird 4");
    }
}
