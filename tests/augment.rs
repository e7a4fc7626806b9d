//! Tests of the batched augmentation against torchvision (the fixture made by
//! tests/fixtures/gen_augment.py), against the reference's own PIL and OpenCV transforms on
//! STL-sized images (tests/fixtures/gen_stl_augment.py), and of the sampler's invariants.
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use ipirm::data::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, apply_train,
    apply_train_unnormalized, color_jitter, gaussian_blur, hflip, normalize, resized_crop,
    resized_crop_antialiased, rgb_to_grayscale, sample_train_params, sample_train_params_in,
    test_view, to_unit, train_view, TrainParams, Views, CROP_SCALE, CROP_SIZE, MEAN, STD,
};
use tch::{Device, Kind, Tensor};

/// tch's generator is global and the tests run on several threads: every test that seeds or draws
/// from it holds this lock, so that a seed gives the same draws whatever runs beside it.
static RNG: Mutex<()> = Mutex::new(());

fn rng_lock() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/augment.safetensors"
    );
    Tensor::read_safetensors(path)
        .expect("read the fixture")
        .into_iter()
        .collect()
}

fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture has no `{key}`"))
}

fn params(f: &HashMap<String, Tensor>) -> TrainParams {
    let t = |k: &str| get(f, k).shallow_clone();
    TrainParams {
        crop: t("crop"),
        flip: t("flip"),
        jitter: t("jitter"),
        brightness: t("brightness"),
        contrast: t("contrast"),
        saturation: t("saturation"),
        hue: t("hue"),
        order: t("order"),
        gray: t("gray"),
        blur: t("blur"),
        sigma: t("sigma"),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    (a - b).abs().max().double_value(&[])
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}

const OP_TOL: f64 = 1e-5;
const PIPE_TOL: f64 = 1e-4;

#[test]
fn to_unit_is_x_over_255() {
    let f = fixture();
    assert_close("to_unit", &to_unit(get(&f, "x")), get(&f, "x01"), 0.0);
}

#[test]
fn resized_crop_matches_torchvision() {
    let f = fixture();
    let x01 = get(&f, "x01");
    let crop = get(&f, "crop");
    assert_close(
        "resized_crop 32 (upscale)",
        &resized_crop(x01, crop, 32),
        get(&f, "op_crop32"),
        OP_TOL,
    );
    assert_close(
        "resized_crop 12 (downscale)",
        &resized_crop(x01, crop, 12),
        get(&f, "op_crop12"),
        OP_TOL,
    );
}

#[test]
fn hflip_matches_torchvision() {
    let f = fixture();
    assert_close(
        "hflip",
        &hflip(get(&f, "x01"), get(&f, "flip")),
        get(&f, "op_flip"),
        0.0,
    );
}

#[test]
fn jitter_ops_match_torchvision() {
    let f = fixture();
    let x = get(&f, "x01");
    assert_close(
        "brightness",
        &adjust_brightness(x, get(&f, "brightness")),
        get(&f, "op_brightness"),
        OP_TOL,
    );
    assert_close(
        "contrast",
        &adjust_contrast(x, get(&f, "contrast")),
        get(&f, "op_contrast"),
        OP_TOL,
    );
    assert_close(
        "saturation",
        &adjust_saturation(x, get(&f, "saturation")),
        get(&f, "op_saturation"),
        OP_TOL,
    );
    assert_close(
        "hue",
        &adjust_hue(x, get(&f, "hue")),
        get(&f, "op_hue"),
        OP_TOL,
    );
}

#[test]
fn color_jitter_in_random_order_matches_torchvision() {
    let f = fixture();
    let p = params(&f);
    let got = color_jitter(
        get(&f, "x01"),
        &p.jitter,
        &p.brightness,
        &p.contrast,
        &p.saturation,
        &p.hue,
        &p.order,
    );
    assert_close("color_jitter", &got, get(&f, "op_jitter"), OP_TOL);
    // Image 4 has jitter off: untouched.
    assert_close("jitter off", &got.get(4), &get(&f, "x01").get(4), 0.0);
}

#[test]
fn grayscale_blur_normalize_match_torchvision() {
    let f = fixture();
    let x = get(&f, "x01");
    assert_close(
        "grayscale",
        &rgb_to_grayscale(x),
        get(&f, "op_gray"),
        OP_TOL,
    );
    assert_close(
        "blur",
        &gaussian_blur(x, get(&f, "sigma")),
        get(&f, "op_blur"),
        OP_TOL,
    );
    assert_close("normalize", &normalize(x), get(&f, "op_normalize"), OP_TOL);
}

#[test]
fn pipeline_matches_torchvision() {
    let f = fixture();
    let p = params(&f);
    let got = apply_train(get(&f, "x"), &p, CROP_SIZE, false);
    assert_eq!(got.kind(), Kind::Float);
    assert_close("pipeline rgb", &got, get(&f, "pipe_x"), PIPE_TOL);
    let got1 = apply_train(get(&f, "x1"), &p, CROP_SIZE, false);
    assert_close("pipeline 1-channel", &got1, get(&f, "pipe_x1"), PIPE_TOL);
}

#[test]
fn test_view_matches_torchvision_and_formula() {
    let f = fixture();
    for (x, want) in [("x", "test_x"), ("x1", "test_x1")] {
        let images = get(&f, x);
        let got = test_view(images);
        assert_close(want, &got, get(&f, want), OP_TOL);
        // (x / 255 − mean) / std, channel by channel, in double precision.
        let (b, _, h, w) = images.size4().unwrap();
        let xd = images.to_kind(Kind::Double).expand([b, 3, h, w], false);
        for ch in 0..3 {
            let expect = (xd.select(1, ch) / 255.0 - MEAN[ch as usize]) / STD[ch as usize];
            assert_close("test_view formula", &got.select(1, ch), &expect, 1e-6);
        }
    }
}

#[test]
fn flip_twice_is_identity() {
    let _rng = rng_lock();
    tch::manual_seed(1);
    let x = Tensor::rand([16, 3, 9, 13], (Kind::Float, Device::Cpu));
    let mask = Tensor::rand([16], (Kind::Float, Device::Cpu)).lt(0.5);
    let once = hflip(&x, &mask);
    assert!(max_abs_diff(&once, &x) > 0.0, "some images are flipped");
    assert_close("flip∘flip", &hflip(&once, &mask), &x, 0.0);
}

#[test]
fn full_box_at_native_size_is_identity() {
    let _rng = rng_lock();
    tch::manual_seed(2);
    let x = Tensor::rand([4, 3, 17, 23], (Kind::Float, Device::Cpu));
    let square = x.narrow(3, 0, 17);
    let crop_sq = Tensor::from_slice(&[0i64, 0, 17, 17])
        .view([1, 4])
        .repeat([4, 1]);
    assert_close(
        "identity crop",
        &resized_crop(&square, &crop_sq, 17),
        &square,
        0.0,
    );
    // A 1×1 box gives a constant image of that pixel.
    let one = Tensor::from_slice(&[5i64, 7, 1, 1])
        .view([1, 4])
        .repeat([4, 1]);
    let got = resized_crop(&x, &one, 8);
    let px = x
        .narrow(2, 5, 1)
        .narrow(3, 7, 1)
        .expand([4, 3, 8, 8], false);
    assert_close("1×1 crop", &got, &px, 1e-6);
}

/// Checks the boxes of `n` sampled crops of an H×W image: inside the image, and (unless it is the
/// fallback box) area fraction in [0.08, 1] and aspect ratio in [3/4, 4/3] up to the rounding of
/// w and h to integers. Returns the fraction of fallback boxes.
fn check_crops(n: i64, height: i64, width: i64, fallback: Option<[i64; 4]>) -> f64 {
    let p = sample_train_params(n, height, width);
    assert_eq!(p.crop.size(), [n, 4]);
    assert_eq!(p.crop.kind(), Kind::Int64);
    let rows: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&p.crop).unwrap();
    let (hh, ww) = (height as f64, width as f64);
    let mut fallbacks = 0;
    let (mut bottom_seen, mut right_seen) = (false, false);
    for r in &rows {
        let (top, left, h, w) = (r[0], r[1], r[2], r[3]);
        assert!(h >= 1 && w >= 1, "empty box {r:?}");
        assert!(
            top >= 0 && left >= 0 && top + h <= height && left + w <= width,
            "box {r:?} outside {height}×{width}"
        );
        if Some([top, left, h, w]) == fallback {
            fallbacks += 1;
            continue;
        }
        let (h, w) = (h as f64, w as f64);
        let area_hi = (w + 0.5) * (h + 0.5) / (hh * ww);
        let area_lo = (w - 0.5) * (h - 0.5) / (hh * ww);
        assert!(
            area_hi >= 0.08 && area_lo <= 1.0,
            "box {r:?}: area fraction out of [0.08, 1]"
        );
        assert!(
            (w + 0.5) / (h - 0.5) >= 0.75 && (w - 0.5) / (h + 0.5) <= 4.0 / 3.0,
            "box {r:?}: ratio"
        );
        bottom_seen |= top + h as i64 == height;
        right_seen |= left + w as i64 == width;
    }
    assert!(
        bottom_seen && right_seen,
        "some boxes reach the bottom and right edges"
    );
    fallbacks as f64 / n as f64
}

#[test]
fn sampled_crops_are_within_bounds() {
    let _rng = rng_lock();
    tch::manual_seed(3);
    assert_eq!(check_crops(5000, 32, 32, None), 0.0);
    check_crops(5000, 96, 96, None);
    check_crops(5000, 20, 24, None);
    // A 10×100 image rarely admits a crop: the fallback is the centred 10×13 box
    // (width = round(10 · 4/3)).
    let frac = check_crops(5000, 10, 100, Some([0, 43, 10, 13]));
    assert!(frac > 0.1 && frac < 1.0, "fallback fraction {frac}");
    let frac = check_crops(500, 100, 10, Some([43, 0, 13, 10]));
    assert!(frac > 0.1 && frac < 1.0, "fallback fraction {frac}");
}

fn mean(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

fn assert_freq(what: &str, mask: &Tensor, p: f64) {
    let n = mask.size()[0] as f64;
    let se = (p * (1.0 - p) / n).sqrt();
    let m = mean(mask);
    assert!(
        (m - p).abs() < 5.0 * se,
        "{what}: frequency {m} vs {p} (se {se})"
    );
}

fn assert_range(what: &str, t: &Tensor, lo: f64, hi: f64) {
    let (min, max) = (t.min().double_value(&[]), t.max().double_value(&[]));
    assert!(
        min >= lo && max <= hi,
        "{what}: [{min}, {max}] outside [{lo}, {hi}]"
    );
    // Uniform: mean near the middle, and both ends approached.
    let n = t.size()[0] as f64;
    let se = (hi - lo) / (12.0 * n).sqrt();
    let m = mean(t);
    assert!((m - (lo + hi) / 2.0).abs() < 5.0 * se, "{what}: mean {m}");
    assert!(
        min < lo + 0.01 * (hi - lo) && max > hi - 0.01 * (hi - lo),
        "{what}: [{min}, {max}]"
    );
}

#[test]
fn sampled_coins_and_factors_have_the_right_law() {
    let _rng = rng_lock();
    tch::manual_seed(4);
    let n = 20_000;
    let p = sample_train_params(n, 32, 32);
    for (what, t) in [
        ("flip", &p.flip),
        ("jitter", &p.jitter),
        ("gray", &p.gray),
        ("blur", &p.blur),
    ] {
        assert_eq!(t.kind(), Kind::Bool, "{what}");
        assert_eq!(t.size(), [n], "{what}");
    }
    assert_freq("flip", &p.flip, 0.5);
    assert_freq("jitter", &p.jitter, 0.8);
    assert_freq("gray", &p.gray, 0.2);
    assert_freq("blur", &p.blur, 0.5);
    for (what, t, lo, hi) in [
        ("brightness", &p.brightness, 0.6, 1.4),
        ("contrast", &p.contrast, 0.6, 1.4),
        ("saturation", &p.saturation, 0.6, 1.4),
        ("hue", &p.hue, -0.1, 0.1),
        ("sigma", &p.sigma, 0.1, 2.0),
    ] {
        assert_eq!(t.kind(), Kind::Float, "{what}");
        assert_range(what, t, lo, hi);
    }
    // Each row of `order` is a permutation of 0..4, and every op is equally likely in every slot.
    assert_eq!(p.order.kind(), Kind::Int64);
    let sorted = p.order.sort(1, false).0;
    let expect = Tensor::arange(4, (Kind::Int64, Device::Cpu))
        .view([1, 4])
        .expand([n, 4], false);
    assert!(sorted.equal(&expect), "order rows are permutations of 0..4");
    for slot in 0..4 {
        for op in 0..4 {
            assert_freq("order", &p.order.select(1, slot).eq(op), 0.25);
        }
    }
}

fn rand_images(b: i64, c: i64, h: i64, w: i64) -> Tensor {
    Tensor::randint(256, [b, c, h, w], (Kind::Uint8, Device::Cpu))
}

#[test]
fn same_seed_same_views_different_seed_different_views() {
    let _rng = rng_lock();
    tch::manual_seed(5);
    let x = rand_images(8, 3, 32, 32);
    tch::manual_seed(42);
    let a = train_view(&x, CROP_SIZE, true);
    tch::manual_seed(42);
    let b = train_view(&x, CROP_SIZE, true);
    tch::manual_seed(43);
    let c = train_view(&x, CROP_SIZE, true);
    assert!(a.equal(&b), "same seed, same view");
    assert!(max_abs_diff(&a, &c) > 0.1, "different seed, different view");
    // Two views drawn one after the other differ too.
    let d = train_view(&x, CROP_SIZE, true);
    assert!(max_abs_diff(&c, &d) > 0.1);
}

#[test]
fn train_view_shapes_and_range() {
    let _rng = rng_lock();
    tch::manual_seed(6);
    for (c, h, w) in [(3, 32, 32), (3, 96, 96), (1, 28, 28)] {
        let x = rand_images(5, c, h, w);
        let v = train_view(&x, CROP_SIZE, true);
        assert_eq!(v.size(), [5, 3, CROP_SIZE, CROP_SIZE]);
        assert_eq!(v.kind(), Kind::Float);
        let p = sample_train_params(5, h, w);
        let u = apply_train_unnormalized(&x, &p, CROP_SIZE, true);
        assert!(
            u.min().double_value(&[]) >= 0.0 && u.max().double_value(&[]) <= 1.0,
            "in [0, 1]"
        );
        assert_close(
            "normalise",
            &apply_train(&x, &p, CROP_SIZE, true),
            &normalize(&u),
            0.0,
        );
    }
    let t = test_view(&rand_images(2, 3, 96, 96));
    assert_eq!(t.size(), [2, 3, 96, 96], "test view: no resize");
}

#[test]
fn one_channel_input_stays_gray() {
    let _rng = rng_lock();
    tch::manual_seed(7);
    let x = rand_images(64, 1, 28, 28);
    let p = sample_train_params(64, 28, 28);
    let u = apply_train_unnormalized(&x, &p, CROP_SIZE, true);
    assert_eq!(u.size(), [64, 3, CROP_SIZE, CROP_SIZE]);
    assert_close("G = R", &u.select(1, 1), &u.select(1, 0), 1e-6);
    assert_close("B = R", &u.select(1, 2), &u.select(1, 0), 1e-6);
    let t = test_view(&x);
    assert_eq!(t.size(), [64, 3, 28, 28]);
}

#[test]
fn extreme_factors_and_grey_pixels_stay_finite() {
    // Grey, black and white images through every op: no NaN from the HSV divisions.
    let x = Tensor::cat(
        &[
            Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::ones([1, 3, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::full([1, 3, 8, 8], 0.5, (Kind::Float, Device::Cpu)),
        ],
        0,
    );
    let f = Tensor::from_slice(&[0.6f32, 1.4, 1.0]);
    let h = Tensor::from_slice(&[-0.5f32, 0.5, 0.1]);
    for (what, y) in [
        ("hue", adjust_hue(&x, &h)),
        ("brightness", adjust_brightness(&x, &f)),
        ("contrast", adjust_contrast(&x, &f)),
        ("saturation", adjust_saturation(&x, &f)),
    ] {
        assert!(y.isfinite().all().int64_value(&[]) == 1, "{what}: finite");
    }
    assert_close("hue of grey", &adjust_hue(&x, &h), &x, 1e-7);
}

#[test]
fn empty_subsets_and_batches() {
    let _rng = rng_lock();
    tch::manual_seed(8);
    let x = rand_images(3, 3, 16, 16);
    let mut p = sample_train_params(3, 16, 16);
    p.jitter = Tensor::zeros([3], (Kind::Bool, Device::Cpu));
    p.blur = Tensor::zeros([3], (Kind::Bool, Device::Cpu));
    p.gray = Tensor::zeros([3], (Kind::Bool, Device::Cpu));
    p.flip = Tensor::zeros([3], (Kind::Bool, Device::Cpu));
    let got = apply_train_unnormalized(&x, &p, 16, true);
    let want = resized_crop(&to_unit(&x), &p.crop, 16);
    assert_close("crop only", &got, &want, 0.0);
    let v = train_view(&rand_images(0, 3, 16, 16), CROP_SIZE, true);
    assert_eq!(v.size(), [0, 3, CROP_SIZE, CROP_SIZE]);
}

#[test]
fn cuda_matches_cpu_when_available() {
    let _rng = rng_lock();
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    let f = fixture();
    let p = params(&f);
    let cpu = apply_train(get(&f, "x"), &p, CROP_SIZE, false);
    let gpu = apply_train(
        &get(&f, "x").to_device(Device::Cuda(0)),
        &p,
        CROP_SIZE,
        false,
    );
    assert_eq!(gpu.device(), Device::Cuda(0));
    assert_close(
        "cuda pipeline vs torchvision",
        &gpu,
        get(&f, "pipe_x"),
        PIPE_TOL,
    );
    assert_close("cuda vs cpu", &gpu, &cpu, PIPE_TOL);
    let p_gpu = p.to_device(Device::Cuda(0));
    let gpu2 = apply_train(
        &get(&f, "x").to_device(Device::Cuda(0)),
        &p_gpu,
        CROP_SIZE,
        false,
    );
    assert_close("params on cuda", &gpu2, &gpu, 0.0);
    tch::manual_seed(9);
    // The antialiased crop against the CPU's, with TF32 on as training has it: its matmuls run
    // in full fp32 all the same.
    let x = Tensor::rand([64, 3, 96, 96], (Kind::Float, Device::Cpu));
    let p = sample_train_params(64, 96, 96);
    let tf32 = ipirm::shim::Tf32 {
        matmul: true,
        cudnn: true,
    };
    let gpu = {
        let _tf32 = ipirm::shim::tf32_scope(tf32).unwrap();
        resized_crop_antialiased(&x.to_device(Device::Cuda(0)), &p.crop, CROP_SIZE)
    };
    let cpu = resized_crop_antialiased(&x, &p.crop, CROP_SIZE);
    assert_close("cuda antialiased crop", &gpu, &cpu, 1e-5);
    let x = rand_images(64, 3, 96, 96).to_device(Device::Cuda(0));
    let v = train_view(&x, CROP_SIZE, true);
    assert_eq!(v.device(), Device::Cuda(0));
    assert_eq!(v.size(), [64, 3, CROP_SIZE, CROP_SIZE]);
}

/// Boxes of every kind on 96×96 images, for a 32×32 output: the whole image (3× shrink), both
/// sides shrinking by other factors, one side shrinking and the other growing, both growing, a
/// one-pixel box, and a box the size of the output.
const BOXES: [[i64; 4]; 8] = [
    [0, 0, 96, 96],
    [5, 17, 80, 64],
    [30, 2, 57, 43],
    [11, 40, 48, 24],
    [60, 3, 20, 90],
    [40, 50, 27, 30],
    [95, 0, 1, 1],
    [7, 9, 32, 32],
];

fn boxes(rows: &[[i64; 4]]) -> Tensor {
    Tensor::from_slice(rows.concat().as_slice()).view([rows.len() as i64, 4])
}

/// libtorch's antialiased bilinear kernel (`_upsample_bilinear2d_aa`, which torchvision calls for
/// `antialias=True`) on each image's box, one image at a time.
fn libtorch_aa(x: &Tensor, crop: &Tensor, size: i64) -> Tensor {
    let rows: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(crop).unwrap();
    let out: Vec<Tensor> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            x.get(i as i64)
                .narrow(1, r[0], r[2])
                .narrow(2, r[1], r[3])
                .unsqueeze(0)
                .internal_upsample_bilinear2d_aa([size, size], false, None, None)
        })
        .collect();
    Tensor::cat(&out, 0)
}

#[test]
fn antialiased_crop_matches_libtorch_kernel() {
    let _rng = rng_lock();
    tch::manual_seed(10);
    let n = BOXES.len() as i64;
    let x = Tensor::rand([n, 3, 96, 96], (Kind::Float, Device::Cpu));
    let crop = boxes(&BOXES);
    assert_close(
        "antialiased crop 32",
        &resized_crop_antialiased(&x, &crop, 32),
        &libtorch_aa(&x, &crop, 32),
        OP_TOL,
    );
    // Other output sizes: stronger shrinks (96 → 7), and everything growing (→ 100).
    for size in [7, 100] {
        assert_close(
            &format!("antialiased crop {size}"),
            &resized_crop_antialiased(&x, &crop, size),
            &libtorch_aa(&x, &crop, size),
            OP_TOL,
        );
    }
    // Sampled boxes: RandomResizedCrop on 96×96 and on a 40×100 image.
    for (h, w) in [(96, 96), (40, 100)] {
        let x = Tensor::rand([64, 3, h, w], (Kind::Float, Device::Cpu));
        let p = sample_train_params(64, h, w);
        assert_close(
            &format!("sampled crops of {h}×{w}"),
            &resized_crop_antialiased(&x, &p.crop, CROP_SIZE),
            &libtorch_aa(&x, &p.crop, CROP_SIZE),
            OP_TOL,
        );
    }
}

#[test]
fn antialiasing_changes_nothing_where_no_side_shrinks() {
    let _rng = rng_lock();
    tch::manual_seed(11);
    // In a batch with shrinking boxes, an image whose box shrinks on neither side gets the plain
    // resize up to float rounding (the weights are the same, summed in another order).
    let n = BOXES.len() as i64;
    let x = Tensor::rand([n, 3, 96, 96], (Kind::Float, Device::Cpu));
    let crop = boxes(&BOXES);
    let aa = resized_crop_antialiased(&x, &crop, 32);
    let plain = resized_crop(&x, &crop, 32);
    for (i, b) in BOXES.iter().enumerate() {
        let d = max_abs_diff(&aa.get(i as i64), &plain.get(i as i64));
        match b[2] <= 32 && b[3] <= 32 {
            true => assert!(d <= 1e-6, "box {b:?}: {d}"),
            false => assert!(d > 1e-3, "box {b:?} shrinks: {d}"),
        }
    }
    // A batch with no shrinking box is the plain resize to the bit, and so is the whole train
    // transform on images no larger than the crop (CIFAR, Fashion-MNIST).
    let small = boxes(&BOXES[5..]);
    let x = x.narrow(0, 5, 3);
    assert!(resized_crop_antialiased(&x, &small, 32).equal(&resized_crop(&x, &small, 32)));
    for (c, h, w) in [(3, 32, 32), (1, 28, 28)] {
        let x = rand_images(64, c, h, w);
        let p = sample_train_params(64, h, w);
        assert!(
            apply_train(&x, &p, CROP_SIZE, true).equal(&apply_train(&x, &p, CROP_SIZE, false)),
            "{c}×{h}×{w}"
        );
    }
}

fn stl_fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stl_augment.safetensors"
    );
    Tensor::read_safetensors(path)
        .expect("read the fixture")
        .into_iter()
        .collect()
}

/// How far float images in [0, 1] (`ours`) are from the reference's uint8 images, in 0–255
/// units: the mean absolute difference of each image, then (the mean of those, the largest,
/// the worst pixel of all).
fn distance_255(what: &str, ours: &Tensor, reference: &Tensor) -> (f64, f64, f64) {
    assert_eq!(ours.size(), reference.size(), "{what}: shapes");
    let d = (ours.to_kind(Kind::Double) * 255.0 - reference.to_kind(Kind::Double)).abs();
    let per_image = d.flatten(1, -1).mean_dim(1, false, Kind::Double);
    let figures = (
        per_image.mean(Kind::Double).double_value(&[]),
        per_image.max().double_value(&[]),
        d.max().double_value(&[]),
    );
    eprintln!(
        "{what}: mean abs difference {:.3} (largest of an image {:.3}), worst pixel {:.3}",
        figures.0, figures.1, figures.2
    );
    figures
}

/// The resized crop (and flip) of 96×96 images against PIL's, as the reference makes STL-10's
/// training crops. Measured on the 42 crops (the mean of the crops' mean absolute differences, the
/// largest of one crop, the worst pixel, in 0–255 units):
/// - antialiased (`data.antialias`, the default): 0.213, 0.399, 1.000 — PIL's own uint8 rounding;
/// - the plain bilinear resize (`data.antialias = false`, the only one before): 11.5, 116, 189
///   over all crops; on the 35 whose box shrinks on some side 13.8, 116, 189 (the synthetic
///   images' 20: 23.5, 116, 189; the Fashion-MNIST images' 15: 0.76, 2.26, 45 at edges), on the 7
///   that only grow 0.215, 0.296, 0.981, as antialiased (PIL does not antialias when it enlarges).
#[test]
fn stl_crops_match_pil() {
    let f = stl_fixture();
    let x = to_unit(&get(&f, "images").index_select(0, get(&f, "src")));
    let (crop, flip) = (get(&f, "crop"), get(&f, "flip"));
    let want = get(&f, "pil_crop");
    let new = hflip(&resized_crop_antialiased(&x, crop, CROP_SIZE), flip);
    let (mean, largest, worst) = distance_255("antialiased crop vs PIL", &new, want);
    // PIL rounds to uint8 after each of its two passes: at most 0.5 + 0.5 (its fixed-point weights
    // add under 1e-3), and about 0.25 on average.
    assert!(
        mean <= 0.3 && largest <= 0.5 && worst <= 1.001,
        "antialiased crop: {mean} {largest} {worst}"
    );
    // The plain resize, on the crops that shrink and on those that only grow.
    let old = hflip(&resized_crop(&x, crop, CROP_SIZE), flip);
    let (mean, largest, worst) = distance_255("plain crop vs PIL", &old, want);
    assert!(
        mean > 10.0 && largest > 100.0 && worst > 150.0,
        "plain crop"
    );
    let shrinks = crop.narrow(1, 2, 2).gt(CROP_SIZE).any_dim(1, false);
    for (what, sel) in [
        ("shrinking", shrinks.shallow_clone()),
        ("growing", shrinks.logical_not()),
    ] {
        let idx = sel.nonzero().squeeze_dim(1);
        let (mean, _, worst) = distance_255(
            &format!("plain crop vs PIL, boxes {what}"),
            &old.index_select(0, &idx),
            &want.index_select(0, &idx),
        );
        if what == "growing" {
            assert!(mean <= 0.35 && worst <= 1.0, "{mean} {worst}");
        }
    }
    // The whole train transform's crop, with no other op drawn, is the antialiased one.
    let n = crop.size()[0];
    let off = Tensor::zeros([n], (Kind::Bool, Device::Cpu));
    let ones = Tensor::ones([n], (Kind::Float, Device::Cpu));
    let p = TrainParams {
        crop: crop.shallow_clone(),
        flip: flip.shallow_clone(),
        jitter: off.shallow_clone(),
        brightness: ones.shallow_clone(),
        contrast: ones.shallow_clone(),
        saturation: ones.shallow_clone(),
        hue: ones.zeros_like(),
        order: Tensor::arange(4, (Kind::Int64, Device::Cpu)).repeat([n, 1]),
        gray: off.shallow_clone(),
        blur: off,
        sigma: ones,
    };
    let images = get(&f, "images").index_select(0, get(&f, "src"));
    assert_close(
        "train transform, crop and flip only",
        &apply_train_unnormalized(&images, &p, CROP_SIZE, true),
        &new,
        0.0,
    );
}

/// Our colour ops (torchvision's tensor formulas on float) against the reference's (PIL's
/// ImageEnhance and HSV on uint8, OpenCV's blur on uint8), each applied alone to the same PIL
/// crop. Measured on the 14 crops (the mean of the crops' mean absolute differences, the largest of
/// one crop, the worst pixel, in 0–255 units); what is left is the reference's uint8 arithmetic:
/// - brightness 0.425, 0.539, 0.999: PIL's blend truncates to uint8 (ours is about half a unit
///   brighter);
/// - contrast 0.476, 0.646, 1.108: the same truncation, and PIL blends towards the mean of its
///   uint8 grayscale rounded to an integer;
/// - saturation 0.457, 0.583, 1.134: the truncation, towards PIL's uint8 grayscale;
/// - hue 0.562, 1.037, 11.4: PIL's HSV holds hue, saturation and value in uint8 (hue in steps of
///   1/256 of the circle, so dark or grey-ish pixels round to other hues) and truncates the shift
///   to whole steps (int(255·hue));
/// - grayscale 0.241, 0.339, 0.521: PIL rounds its 299/587/114 ‰ luma to uint8 (ours weighs
///   0.2989/0.587/0.114 in float);
/// - blur 0.144, 0.263, 0.812: OpenCV's 8-bit blur uses a fixed-point kernel and rounds to uint8.
#[test]
fn stl_colour_ops_match_pil_and_opencv() {
    let f = stl_fixture();
    let x = get(&f, "pil_crop").index_select(0, get(&f, "jit"));
    let x = to_unit(&x);
    let g = |k: &str| get(&f, k);
    // Each bound (on the mean, the largest image mean, the worst pixel) a little above the
    // figures measured.
    let mut failed = Vec::new();
    let mut check = |what: &str, ours: Tensor, reference: &str, bound: [f64; 3]| {
        let (mean, largest, worst) = distance_255(what, &ours, g(reference));
        if mean > bound[0] || largest > bound[1] || worst > bound[2] {
            failed.push(format!(
                "{what}: {mean:.3} {largest:.3} {worst:.3} beyond {bound:?}"
            ));
        }
    };
    let (b, c, s) = (g("brightness"), g("contrast"), g("saturation"));
    check(
        "brightness",
        adjust_brightness(&x, b),
        "pil_brightness",
        [0.5, 0.6, 1.05],
    );
    check(
        "contrast",
        adjust_contrast(&x, c),
        "pil_contrast",
        [0.55, 0.7, 1.25],
    );
    check(
        "saturation",
        adjust_saturation(&x, s),
        "pil_saturation",
        [0.55, 0.7, 1.25],
    );
    check("hue", adjust_hue(&x, g("hue")), "pil_hue", [0.7, 1.3, 13.0]);
    check(
        "grayscale",
        rgb_to_grayscale(&x),
        "pil_gray",
        [0.3, 0.4, 0.6],
    );
    check(
        "blur",
        gaussian_blur(&x, g("sigma")),
        "cv_blur",
        [0.2, 0.35, 1.0],
    );
    assert!(failed.is_empty(), "beyond the bounds: {failed:?}");
}

/// A run's crop area range (`data.crop_scale`): the default draws are the reference's, draw for
/// draw, and a narrower range keeps every crop's area inside it (up to the rounding of its sides
/// and the aspect ratio's clamp); `Views::draw` crops at its own side.
#[test]
fn crop_scale_bounds_the_crops_area() {
    let _rng = rng_lock();
    let n = 5_000;
    tch::manual_seed(9);
    let a = sample_train_params(n, 28, 28);
    tch::manual_seed(9);
    let b = sample_train_params_in(n, 28, 28, CROP_SCALE);
    assert!(a.crop.equal(&b.crop) && a.sigma.equal(&b.sigma));
    let area = |p: &TrainParams| {
        let c = p.crop.to_kind(Kind::Double);
        (c.select(1, 2) * c.select(1, 3)) / (28.0 * 28.0)
    };
    let wide = area(&a);
    tch::manual_seed(9);
    let narrow = area(&sample_train_params_in(n, 28, 28, (0.5, 1.0)));
    // A side rounds by at most half a pixel: area ≥ (√(0.5·784) − 0.5)² / 784 ≈ 0.476.
    let min = narrow.min().double_value(&[]);
    assert!((0.47..0.5).contains(&min), "smallest area fraction {min}");
    assert!(wide.min().double_value(&[]) < 0.1);
    let mean = |t: &Tensor| t.mean(Kind::Double).double_value(&[]);
    assert!(
        mean(&narrow) > mean(&wide) + 0.15,
        "{} {}",
        mean(&narrow),
        mean(&wide)
    );
    let x = rand_images(4, 1, 28, 28);
    let v = Views {
        size: 28,
        scale: (0.5, 1.0),
        antialias: true,
    }
    .draw(&x);
    assert_eq!(v.size(), [4, 3, 28, 28]);
}
