//! The batched kNN monitor against a slow, obvious per-query implementation on random data.
use ipirm::eval::knn::{knn_accuracy, Knn};
use ipirm::model::l2_normalize;
use tch::{Device, Kind, Tensor};

/// Per query: cosine similarities, sort, take k, sum exp(sim/τ) per class, rank classes.
fn slow_knn(
    bank: &[Vec<f32>],
    labels: &[i64],
    test: &[Vec<f32>],
    truth: &[i64],
    classes: usize,
    k: usize,
    tau: f64,
) -> (f64, f64) {
    let (mut t1, mut t5) = (0, 0);
    for (q, &y) in test.iter().zip(truth) {
        let mut sims: Vec<(f32, i64)> = bank
            .iter()
            .zip(labels)
            .map(|(b, &l)| (b.iter().zip(q).map(|(a, b)| a * b).sum(), l))
            .collect();
        sims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let mut score = vec![0f64; classes];
        for &(s, l) in sims.iter().take(k) {
            score[l as usize] += (s as f64 / tau).exp();
        }
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| score[b].partial_cmp(&score[a]).unwrap());
        t1 += (order[0] as i64 == y) as i64;
        t5 += order.iter().take(5).any(|&c| c as i64 == y) as i64;
    }
    (
        100.0 * t1 as f64 / test.len() as f64,
        100.0 * t5 as f64 / test.len() as f64,
    )
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    Vec::<Vec<f32>>::try_from(t).unwrap()
}

#[test]
fn batched_knn_equals_the_obvious_implementation() {
    tch::manual_seed(7);
    let classes = 7;
    // Clustered data so accuracies are neither 0 nor 100.
    let centres = Tensor::randn([classes, 16], (Kind::Float, Device::Cpu));
    let make = |n: i64| {
        let y = Tensor::randint(classes, [n], (Kind::Int64, Device::Cpu));
        let x =
            centres.index_select(0, &y) + Tensor::randn([n, 16], (Kind::Float, Device::Cpu)) * 1.5;
        (l2_normalize(&x), y)
    };
    let (bank, bl) = make(300);
    let (test, tl) = make(97);
    for (k, tau, batch) in [(200, 0.5, 512), (10, 0.1, 13), (50, 1.0, 5)] {
        let got = knn_accuracy(
            &bank,
            &bl,
            &test,
            &tl,
            classes,
            &Knn {
                k,
                temperature: tau,
                batch_size: batch,
            },
        )
        .unwrap();
        let want = slow_knn(
            &rows(&bank),
            &Vec::<i64>::try_from(&bl).unwrap(),
            &rows(&test),
            &Vec::<i64>::try_from(&tl).unwrap(),
            classes as usize,
            k as usize,
            tau,
        );
        assert!(
            (got.top1 - want.0).abs() < 1e-9 && (got.top5 - want.1).abs() < 1e-9,
            "k={k}: {got:?} vs {want:?}"
        );
        assert!(got.top1 > 20.0 && got.top1 < 100.0, "{got:?}");
    }
}

#[test]
fn k_larger_than_the_bank_uses_the_whole_bank() {
    let bank = l2_normalize(&Tensor::randn([5, 4], (Kind::Float, Device::Cpu)));
    let labels = Tensor::from_slice(&[0i64, 1, 1, 0, 1]);
    let acc = knn_accuracy(
        &bank,
        &labels,
        &bank,
        &labels,
        2,
        &Knn {
            k: 200,
            temperature: 0.5,
            batch_size: 2,
        },
    )
    .unwrap();
    assert!(acc.top5 == 100.0);
}
