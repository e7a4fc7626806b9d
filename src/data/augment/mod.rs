//! Batched, on-device data augmentation: the SimCLR/DCL train transform that IP-IRM uses and the
//! plain test transform.
//!
//! Train transform, applied independently to every image of a batch (call it twice for two views):
//! RandomResizedCrop([`CROP_SIZE`], scale 0.08–1, ratio 3/4–4/3) → horizontal flip (p = 0.5) →
//! with p = 0.8 ColorJitter(0.4, 0.4, 0.4, 0.1) (the four ops in a random order per image) →
//! grayscale (p = 0.2) → with p = 0.5 Gaussian blur (kernel 3, σ ~ U[0.1, 2]) → Normalize([`MEAN`],
//! [`STD`]). Test transform: to [0, 1] and Normalize, no resize. A run may change the crop's side
//! and its range of areas ([`Views`], `data.crop_size` and `data.crop_scale`; the Fashion-MNIST
//! presets crop at the images' own 28 pixels): the reference's values are the defaults.
//!
//! Sampling ([`sample_train_params`], on the CPU, from tch's global generator so that
//! `tch::manual_seed` makes it reproducible) is separate from application ([`apply_train`], batched
//! tensor ops on the device of the images), so tests can give explicit parameters. The ops follow
//! torchvision's *tensor* semantics (`torchvision.transforms.functional` on float images); each op
//! is public so it can be compared with torchvision on its own.
//!
//! Deviations from the reference, which runs the transforms on PIL images in its data loader
//! (each measured against PIL and OpenCV on STL-sized images in tests/augment.rs, in 0–255 units:
//! the mean absolute difference, and the worst pixel):
//! - everything stays in float32 in [0, 1]; the reference quantises to uint8 after the crop, after
//!   each jitter op, after grayscale and after the blur;
//! - the resized crop: PIL's bilinear resize antialiases when it shrinks (every output pixel
//!   averages its whole source footprint with a triangle filter), which matters on STL-10's 96×96
//!   images, where nearly every crop box is larger than 32. [`resized_crop_antialiased`] computes
//!   PIL's weights in float (`data.antialias`, the default): 0.21, at most 1, PIL's own rounding.
//!   [`resized_crop`] is the plain bilinear sampling without antialiasing (`data.antialias =
//!   false`), which on a 3× shrink reads about one source pixel in three and aliases fine texture
//!   (13.8 and 189 on shrinking crops of synthetic and Fashion-MNIST-made images). Both upsample
//!   alike, so on CIFAR and Fashion-MNIST (boxes never larger than 32) they are the same to the
//!   bit;
//! - colour jitter and grayscale use torchvision's tensor formulas (grayscale weights 0.2989, 0.587,
//!   0.114; hue through float HSV), where PIL works in uint8 (its blends truncate, grayscale
//!   weights 299/587/114 ‰ rounded, hue through uint8 HSV with the shift truncated to 1/255 steps):
//!   brightness, contrast and saturation 0.43–0.48, at most 1.13; grayscale 0.24, at most 0.52;
//!   hue 0.56, at most 11.4;
//! - the blur is torchvision's `gaussian_blur` (3×3, reflect padding); the reference calls
//!   `cv2.GaussianBlur` on the uint8 image, whose kernel and default border (reflect-101) are the
//!   same, but in fixed point and rounded to uint8: 0.14, at most 0.81. The reference draws the
//!   blur's coin and σ from NumPy's global generator inside forked data-loader workers, so on the
//!   authors' PyTorch 1.6 its blur decisions repeat across workers and epochs (PyTorch 1.9 and
//!   later seed NumPy in each worker); here they are fresh for every image.
use tch::{Device, Kind, Tensor};

mod crop;
pub use crop::{resized_crop, resized_crop_antialiased, resized_crop_as};

/// Per-channel mean of the Normalize step (CIFAR-10 statistics, as in DCL / IP-IRM).
pub const MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of the Normalize step.
pub const STD: [f64; 3] = [0.2023, 0.1994, 0.2010];
/// Side of the square training crops (for every dataset, STL-10's 96×96 included).
pub const CROP_SIZE: i64 = 32;

/// RandomResizedCrop's range of the crop's area as a fraction of the image's.
pub const CROP_SCALE: (f64, f64) = (0.08, 1.0);
/// RandomResizedCrop's range of the crop's aspect ratio (width / height).
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
/// Attempts of RandomResizedCrop before it falls back to a centre crop.
pub const CROP_ATTEMPTS: i64 = 10;
/// Probability of a horizontal flip.
pub const P_FLIP: f64 = 0.5;
/// Probability that colour jitter is applied.
pub const P_JITTER: f64 = 0.8;
/// Probability of grayscale conversion.
pub const P_GRAY: f64 = 0.2;
/// Probability of the Gaussian blur.
pub const P_BLUR: f64 = 0.5;
/// ColorJitter strengths: brightness, contrast and saturation factors are drawn from
/// U[1 − s, 1 + s], the hue shift from U[−h, h].
pub const JITTER_BRIGHTNESS: f64 = 0.4;
pub const JITTER_CONTRAST: f64 = 0.4;
pub const JITTER_SATURATION: f64 = 0.4;
pub const JITTER_HUE: f64 = 0.1;
/// Range of the blur's σ.
pub const BLUR_SIGMA: (f64, f64) = (0.1, 2.0);
/// Luma weights of torchvision's `rgb_to_grayscale`.
pub const GRAY_WEIGHTS: [f64; 3] = [0.2989, 0.587, 0.114];

/// Order slots of [`TrainParams::order`].
pub const OP_BRIGHTNESS: i64 = 0;
pub const OP_CONTRAST: i64 = 1;
pub const OP_SATURATION: i64 = 2;
pub const OP_HUE: i64 = 3;

/// The random parameters of one train view of a batch of B images.
///
/// Any device; [`apply_train`] moves them to the images' device (the index bookkeeping is cheapest
/// when they stay on the CPU, where [`sample_train_params`] makes them).
#[derive(Debug)]
pub struct TrainParams {
    /// int64, B×4: top, left, height, width of the crop box, inside the image.
    pub crop: Tensor,
    /// bool, B: flip horizontally.
    pub flip: Tensor,
    /// bool, B: apply colour jitter.
    pub jitter: Tensor,
    /// float32, B: brightness factor (≥ 0).
    pub brightness: Tensor,
    /// float32, B: contrast factor (≥ 0).
    pub contrast: Tensor,
    /// float32, B: saturation factor (≥ 0).
    pub saturation: Tensor,
    /// float32, B: hue shift, in [−0.5, 0.5].
    pub hue: Tensor,
    /// int64, B×4: a permutation of 0..4 per image; slot k holds the op applied k-th
    /// ([`OP_BRIGHTNESS`], [`OP_CONTRAST`], [`OP_SATURATION`], [`OP_HUE`]).
    pub order: Tensor,
    /// bool, B: convert to grayscale (3 equal channels).
    pub gray: Tensor,
    /// bool, B: apply the Gaussian blur.
    pub blur: Tensor,
    /// float32, B: σ of the blur (> 0), used where `blur` is set.
    pub sigma: Tensor,
}

impl TrainParams {
    /// Batch size B.
    pub fn len(&self) -> i64 {
        self.flip.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same parameters on `device`.
    pub fn to_device(&self, device: Device) -> TrainParams {
        TrainParams {
            crop: self.crop.to_device(device),
            flip: self.flip.to_device(device),
            jitter: self.jitter.to_device(device),
            brightness: self.brightness.to_device(device),
            contrast: self.contrast.to_device(device),
            saturation: self.saturation.to_device(device),
            hue: self.hue.to_device(device),
            order: self.order.to_device(device),
            gray: self.gray.to_device(device),
            blur: self.blur.to_device(device),
            sigma: self.sigma.to_device(device),
        }
    }
}

/// U[lo, hi) of the given kind and shape, on the CPU, from tch's global generator.
fn uniform(shape: &[i64], lo: f64, hi: f64, kind: Kind) -> Tensor {
    Tensor::rand(shape, (kind, Device::Cpu)) * (hi - lo) + lo
}

/// Samples the parameters of one train view of `batch` images of `height`×`width` pixels, on the
/// CPU, from tch's global generator (`tch::manual_seed` makes it reproducible).
///
/// Crop boxes follow torchvision's `RandomResizedCrop.get_params`, vectorised over the batch: 10
/// attempts per image with area fraction ~ U(0.08, 1) and log aspect ratio ~ U(log 3/4, log 4/3),
/// w = round(√(area·ratio)), h = round(√(area/ratio)) (round half to even, like Python's `round`);
/// the first attempt with 0 < w ≤ W and 0 < h ≤ H is kept, with top ~ U{0..H−h} and
/// left ~ U{0..W−w}; if none fits, the centre crop of the whole image with its aspect ratio clamped
/// to [3/4, 4/3]. Then flip/jitter/gray/blur coins with probabilities 0.5/0.8/0.2/0.5,
/// brightness/contrast/saturation ~ U[0.6, 1.4], hue ~ U[−0.1, 0.1], a uniform random order of the
/// four jitter ops per image, σ ~ U[0.1, 2].
pub fn sample_train_params(batch: i64, height: i64, width: i64) -> TrainParams {
    sample_train_params_in(batch, height, width, CROP_SCALE)
}

/// [`sample_train_params`] with the crop's area fraction drawn from `scale` (lo, hi) instead of
/// [`CROP_SCALE`]; the same draws in the same order.
pub fn sample_train_params_in(
    batch: i64,
    height: i64,
    width: i64,
    scale: (f64, f64),
) -> TrainParams {
    assert!(
        batch >= 0,
        "sample_train_params: negative batch size {batch}"
    );
    assert!(
        height > 0 && width > 0,
        "sample_train_params: empty image {height}×{width}"
    );
    let (h_img, w_img) = (height as f64, width as f64);
    let shape = [batch, CROP_ATTEMPTS];
    assert!(
        0.0 < scale.0 && scale.0 <= scale.1 && scale.1 <= 1.0,
        "sample_train_params: crop scale {scale:?} is not within (0, 1]"
    );
    let area = uniform(&shape, scale.0, scale.1, Kind::Double) * (h_img * w_img);
    let log_ratio = uniform(&shape, CROP_RATIO.0.ln(), CROP_RATIO.1.ln(), Kind::Double);
    let ratio = log_ratio.exp();
    let w = (&area * &ratio).sqrt().round();
    let h = (&area / &ratio).sqrt().round();
    let fits = w
        .gt(0.0)
        .logical_and(&w.le(w_img))
        .logical_and(&h.gt(0.0))
        .logical_and(&h.le(h_img));
    // argmax returns the first maximal index: the first attempt that fits.
    let first = fits.to_kind(Kind::Int64).argmax(1, true);
    let any = fits.any_dim(1, false);
    let w = w
        .gather(1, &first, false)
        .squeeze_dim(1)
        .to_kind(Kind::Int64);
    let h = h
        .gather(1, &first, false)
        .squeeze_dim(1)
        .to_kind(Kind::Int64);
    // torchvision's fallback: whole image, aspect ratio clamped, centred.
    let in_ratio = w_img / h_img;
    let (fh, fw) = if in_ratio < CROP_RATIO.0 {
        ((w_img / CROP_RATIO.0).round_ties_even() as i64, width)
    } else if in_ratio > CROP_RATIO.1 {
        (height, (h_img * CROP_RATIO.1).round_ties_even() as i64)
    } else {
        (height, width)
    };
    let fallback = |v: i64| Tensor::full([batch], v, (Kind::Int64, Device::Cpu));
    let h = h.where_self(&any, &fallback(fh));
    let w = w.where_self(&any, &fallback(fw));
    // randint(0, n) as floor(u·n), u ~ U[0, 1) in double precision.
    let randint = |n: &Tensor| {
        let u = Tensor::rand([batch], (Kind::Double, Device::Cpu));
        (u * n.to_kind(Kind::Double))
            .floor()
            .to_kind(Kind::Int64)
            .minimum(&(n - 1))
    };
    let top = randint(&(-&h + height + 1));
    let left = randint(&(-&w + width + 1));
    let top = top.where_self(&any, &((-&h + height) / 2).to_kind(Kind::Int64));
    let left = left.where_self(&any, &((-&w + width) / 2).to_kind(Kind::Int64));
    let crop = Tensor::stack(&[top, left, h, w], 1);

    let coin = |p: f64| Tensor::rand([batch], (Kind::Double, Device::Cpu)).lt(p);
    let flip = coin(P_FLIP);
    let jitter = coin(P_JITTER);
    let factor = |s: f64| uniform(&[batch], 1.0 - s, 1.0 + s, Kind::Float);
    let brightness = factor(JITTER_BRIGHTNESS);
    let contrast = factor(JITTER_CONTRAST);
    let saturation = factor(JITTER_SATURATION);
    let hue = uniform(&[batch], -JITTER_HUE, JITTER_HUE, Kind::Float);
    // The argsort of i.i.d. uniforms is a uniformly random permutation (torch.randperm(4) per image).
    let order = Tensor::rand([batch, 4], (Kind::Double, Device::Cpu)).argsort(1, false);
    let gray = coin(P_GRAY);
    let blur = coin(P_BLUR);
    let sigma = uniform(&[batch], BLUR_SIGMA.0, BLUR_SIGMA.1, Kind::Float);
    TrainParams {
        crop,
        flip,
        jitter,
        brightness,
        contrast,
        saturation,
        hue,
        order,
        gray,
        blur,
        sigma,
    }
}

fn assert_images(images: &Tensor, what: &str) -> (i64, i64, i64, i64) {
    let size = images.size();
    assert!(
        size.len() == 4,
        "{what}: expected a B×C×H×W tensor, found shape {size:?}"
    );
    (size[0], size[1], size[2], size[3])
}

fn assert_float_rgb(x: &Tensor, what: &str) -> (i64, i64, i64, i64) {
    let (b, c, h, w) = assert_images(x, what);
    assert!(
        c == 3,
        "{what}: expected 3 channels, found shape {:?}",
        x.size()
    );
    assert!(
        x.kind() == Kind::Float,
        "{what}: expected float32 images, found {:?}",
        x.kind()
    );
    (b, c, h, w)
}

/// A per-image factor (shape B) as a B×1×1×1 float32 tensor on `device`.
fn per_image(f: &Tensor, b: i64, device: Device, what: &str) -> Tensor {
    assert!(
        f.size() == [b],
        "{what}: expected {b} factors, found shape {:?}",
        f.size()
    );
    f.to_device(device).to_kind(Kind::Float).view([b, 1, 1, 1])
}

/// uint8 B×C×H×W images (C ∈ {1, 3}) → float32 B×3×H×W in [0, 1] (x / 255, like `ToTensor`); a
/// single channel is repeated three times.
pub fn to_unit(images: &Tensor) -> Tensor {
    let (b, c, h, w) = assert_images(images, "to_unit");
    assert!(
        images.kind() == Kind::Uint8,
        "to_unit: expected uint8 images, found {:?}",
        images.kind()
    );
    assert!(
        c == 1 || c == 3,
        "to_unit: expected 1 or 3 channels, found shape {:?}",
        images.size()
    );
    let x = images.to_kind(Kind::Float) / 255.0;
    if c == 1 {
        x.expand([b, 3, h, w], false)
    } else {
        x
    }
}

/// The inverse of [`normalize`]: x · [`STD`] + [`MEAN`] per channel, back to [0, 1] pixels (for
/// looking at augmented views).
pub fn denormalize(x: &Tensor) -> Tensor {
    let opts = (Kind::Float, x.device());
    let mean = Tensor::from_slice(&MEAN)
        .to_kind(Kind::Float)
        .to_device(x.device())
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&STD)
        .to_kind(Kind::Float)
        .to_device(opts.1)
        .view([1, 3, 1, 1]);
    x * std + mean
}

/// Normalize: (x − [`MEAN`]) / [`STD`] per channel; float32 B×3×H×W in, same shape out.
pub fn normalize(x: &Tensor) -> Tensor {
    assert_float_rgb(x, "normalize");
    let opts = (Kind::Float, x.device());
    let mean = Tensor::from_slice(&MEAN)
        .to_kind(Kind::Float)
        .view([1, 3, 1, 1])
        .to_device(opts.1);
    let std = Tensor::from_slice(&STD)
        .to_kind(Kind::Float)
        .view([1, 3, 1, 1])
        .to_device(opts.1);
    (x - mean) / std
}

/// Flips the images whose `mask` entry is set left–right: x any B×C×H×W, mask bool B (any device).
pub fn hflip(x: &Tensor, mask: &Tensor) -> Tensor {
    let (b, ..) = assert_images(x, "hflip");
    assert!(
        mask.size() == [b],
        "hflip: expected a mask of {b}, found shape {:?}",
        mask.size()
    );
    let mask = mask
        .to_device(x.device())
        .to_kind(Kind::Bool)
        .view([b, 1, 1, 1]);
    x.flip([3]).where_self(&mask, x)
}

/// torchvision's `_blend`: clamp(r·a + (1 − r)·b, 0, 1), with r B×1×1×1.
fn blend(a: &Tensor, b: &Tensor, r: &Tensor) -> Tensor {
    (r * a + (-r + 1.0) * b).clamp(0.0, 1.0)
}

/// Luma 0.2989·R + 0.587·G + 0.114·B of float B×3×H×W images, as B×1×H×W.
fn luma(x: &Tensor) -> Tensor {
    let ch = |i: i64| x.select(1, i);
    (ch(0) * GRAY_WEIGHTS[0] + ch(1) * GRAY_WEIGHTS[1] + ch(2) * GRAY_WEIGHTS[2]).unsqueeze(1)
}

/// torchvision's `rgb_to_grayscale(x, num_output_channels=3)`: float B×3×H×W → B×3×H×W with three
/// equal channels 0.2989·R + 0.587·G + 0.114·B.
pub fn rgb_to_grayscale(x: &Tensor) -> Tensor {
    let (b, c, h, w) = assert_float_rgb(x, "rgb_to_grayscale");
    luma(x).expand([b, c, h, w], false)
}

/// `adjust_brightness` per image: clamp(x·f, 0, 1). x float B×3×H×W, f float B (any device).
pub fn adjust_brightness(x: &Tensor, f: &Tensor) -> Tensor {
    let (b, ..) = assert_float_rgb(x, "adjust_brightness");
    (x * per_image(f, b, x.device(), "adjust_brightness")).clamp(0.0, 1.0)
}

/// `adjust_contrast` per image: blend with the mean of the image's grayscale version.
/// x float B×3×H×W, f float B.
pub fn adjust_contrast(x: &Tensor, f: &Tensor) -> Tensor {
    let (b, ..) = assert_float_rgb(x, "adjust_contrast");
    let mean = luma(x).mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    blend(x, &mean, &per_image(f, b, x.device(), "adjust_contrast"))
}

/// `adjust_saturation` per image: blend with the image's grayscale version.
/// x float B×3×H×W, f float B.
pub fn adjust_saturation(x: &Tensor, f: &Tensor) -> Tensor {
    let (b, ..) = assert_float_rgb(x, "adjust_saturation");
    blend(
        x,
        &luma(x),
        &per_image(f, b, x.device(), "adjust_saturation"),
    )
}

/// torchvision's `_rgb2hsv` on float B×3×H×W in [0, 1]: returns (h, s, v), each B×H×W, h in [0, 1).
/// Grey pixels (max = min) get h = s = 0 without dividing by zero.
fn rgb_to_hsv(x: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (r, g, b) = (x.select(1, 0), x.select(1, 1), x.select(1, 2));
    let maxc = x.amax([1i64].as_slice(), false);
    let minc = x.amin([1i64].as_slice(), false);
    let eqc = maxc.eq_tensor(&minc);
    let cr = &maxc - &minc;
    let ones = maxc.ones_like();
    let s = &cr / ones.where_self(&eqc, &maxc);
    let cr_divisor = ones.where_self(&eqc, &cr);
    let rc = (&maxc - &r) / &cr_divisor;
    let gc = (&maxc - &g) / &cr_divisor;
    let bc = (&maxc - &b) / &cr_divisor;
    let is_r = maxc.eq_tensor(&r);
    let is_g = maxc.eq_tensor(&g);
    let not_r = is_r.logical_not();
    let hr = is_r.to_kind(Kind::Float) * (&bc - &gc);
    let hg = is_g.logical_and(&not_r).to_kind(Kind::Float) * (&rc + 2.0 - &bc);
    let hb = is_g.logical_not().logical_and(&not_r).to_kind(Kind::Float) * (&gc + 4.0 - &rc);
    let h = hr + hg + hb;
    let h = (h / 6.0 + 1.0).fmod(1.0);
    (h, s, maxc)
}

/// torchvision's `_hsv2rgb`: h, s, v B×H×W → float B×3×H×W.
fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Tensor {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - &i;
    let i = i.to_kind(Kind::Int64).remainder(6).unsqueeze(1);
    let p = (v * (-s + 1.0)).clamp(0.0, 1.0);
    let q = (v * (-(s * &f) + 1.0)).clamp(0.0, 1.0);
    let t = (v * (-(s * (-&f + 1.0)) + 1.0)).clamp(0.0, 1.0);
    // For sector i (0..6) the (r, g, b) are picked from these six-way tables.
    let pick = |table: [&Tensor; 6]| Tensor::stack(&table, 1).gather(1, &i, false);
    let r = pick([v, &q, &p, &p, &t, v]);
    let g = pick([&t, v, v, &q, &p, &p]);
    let b = pick([&p, &p, &t, v, v, &q]);
    Tensor::cat(&[r, g, b], 1)
}

/// `adjust_hue` per image: RGB → HSV, h ← (h + f) mod 1, HSV → RGB, with torchvision's float
/// formulas. x float B×3×H×W in [0, 1], f float B in [−0.5, 0.5].
pub fn adjust_hue(x: &Tensor, f: &Tensor) -> Tensor {
    let (b, ..) = assert_float_rgb(x, "adjust_hue");
    let f = per_image(f, b, x.device(), "adjust_hue").view([b, 1, 1]);
    let (h, s, v) = rgb_to_hsv(x);
    let h = (h + f).remainder(1.0);
    hsv_to_rgb(&h, &s, &v)
}

/// Indices (int64, on the CPU) of the set entries of a bool vector.
fn where_set(mask: &Tensor) -> Tensor {
    mask.to_device(Device::Cpu)
        .to_kind(Kind::Bool)
        .nonzero()
        .squeeze_dim(1)
}

/// Applies `op` to the images `idx` (int64 CPU indices) of `x` and writes them back.
fn apply_subset(x: Tensor, idx: &Tensor, op: impl FnOnce(&Tensor, &Tensor) -> Tensor) -> Tensor {
    if idx.size()[0] == 0 {
        return x;
    }
    let idx_dev = idx.to_device(x.device());
    let sub = x.index_select(0, &idx_dev);
    let out = op(&sub, idx);
    x.index_copy(0, &idx_dev, &out)
}

/// ColorJitter on the images whose `jitter` entry is set: for slot k = 0..4, each op
/// (brightness 0, contrast 1, saturation 2, hue 3) is applied, with the image's factor, to exactly
/// the images whose `order[:, k]` selects it. x float B×3×H×W in [0, 1]; jitter bool B; factors
/// float B; order int64 B×4 (each row a permutation of 0..4). Returns float B×3×H×W.
pub fn color_jitter(
    x: &Tensor,
    jitter: &Tensor,
    brightness: &Tensor,
    contrast: &Tensor,
    saturation: &Tensor,
    hue: &Tensor,
    order: &Tensor,
) -> Tensor {
    let (b, ..) = assert_float_rgb(x, "color_jitter");
    assert!(
        order.size() == [b, 4],
        "color_jitter: expected a {b}×4 order, found shape {:?}",
        order.size()
    );
    let sel = where_set(jitter);
    let order = order.to_device(Device::Cpu).to_kind(Kind::Int64);
    let factors: Vec<Tensor> = [brightness, contrast, saturation, hue]
        .iter()
        .map(|f| f.to_device(Device::Cpu))
        .collect();
    apply_subset(x.shallow_clone(), &sel, |y, sel| {
        let order = order.index_select(0, sel);
        let factors: Vec<Tensor> = factors.iter().map(|f| f.index_select(0, sel)).collect();
        let mut y = y.shallow_clone();
        for slot in 0..4 {
            let slot_ops = order.select(1, slot);
            for op in [OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE] {
                let idx = where_set(&slot_ops.eq(op));
                let f = factors[op as usize].index_select(0, &idx);
                y = apply_subset(y, &idx, |z, _| match op {
                    OP_BRIGHTNESS => adjust_brightness(z, &f),
                    OP_CONTRAST => adjust_contrast(z, &f),
                    OP_SATURATION => adjust_saturation(z, &f),
                    _ => adjust_hue(z, &f),
                });
            }
        }
        y
    })
}

/// torchvision's `gaussian_blur(img, [3, 3], [σ, σ])` per image: the 3×3 kernel is the outer
/// product of the normalised k(t) = exp(−t²/(2σ²)), t ∈ {−1, 0, 1}, applied with reflect padding
/// as one grouped convolution over the batch. x float B×C×H×W (H, W ≥ 2), sigma float B (> 0).
pub fn gaussian_blur(x: &Tensor, sigma: &Tensor) -> Tensor {
    let (b, c, h, w) = assert_images(x, "gaussian_blur");
    assert!(
        x.kind() == Kind::Float,
        "gaussian_blur: expected float32 images, found {:?}",
        x.kind()
    );
    assert!(
        sigma.size() == [b],
        "gaussian_blur: expected {b} sigmas, found shape {:?}",
        sigma.size()
    );
    if b == 0 {
        return x.shallow_clone();
    }
    let device = x.device();
    let t = Tensor::from_slice(&[-1.0f32, 0.0, 1.0])
        .to_device(device)
        .view([1, 3]);
    let sigma = sigma.to_device(device).to_kind(Kind::Float).view([b, 1]);
    let pdf = ((t / sigma).square() * -0.5).exp();
    let k1 = &pdf / pdf.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let k2 = k1.unsqueeze(2) * k1.unsqueeze(1); // B×3×3, rows = y, columns = x
    let weight = k2
        .unsqueeze(1)
        .expand([b, c, 3, 3], false)
        .reshape([b * c, 1, 3, 3]);
    let padded = x
        .pad([1i64, 1, 1, 1].as_slice(), "reflect", None::<f64>)
        .reshape([1, b * c, h + 2, w + 2]);
    padded
        .conv2d(
            &weight,
            None::<Tensor>,
            [1i64, 1].as_slice(),
            [0i64, 0].as_slice(),
            [1i64, 1].as_slice(),
            b * c,
        )
        .reshape([b, c, h, w])
}

/// The train transform without the final Normalize: float32 B×3×size×size in [0, 1].
/// `images`: uint8 B×C×H×W (C ∈ {1, 3}; one channel is repeated three times), any device;
/// `p`: parameters for B images (see [`TrainParams`]), boxes inside H×W; `antialias`: how the
/// crops are resized ([`resized_crop_as`]).
pub fn apply_train_unnormalized(
    images: &Tensor,
    p: &TrainParams,
    size: i64,
    antialias: bool,
) -> Tensor {
    let (b, _, h, w) = assert_images(images, "apply_train");
    assert!(
        p.len() == b,
        "apply_train: parameters for {} images, batch of {b}",
        p.len()
    );
    assert!(h > 0 && w > 0, "apply_train: empty images of {h}×{w}");
    assert!(
        size >= 2,
        "apply_train: crops of {size}×{size} are too small to blur"
    );
    let x = to_unit(images);
    let x = resized_crop_as(&x, &p.crop, size, antialias);
    let x = hflip(&x, &p.flip);
    let x = color_jitter(
        &x,
        &p.jitter,
        &p.brightness,
        &p.contrast,
        &p.saturation,
        &p.hue,
        &p.order,
    );
    let gray = p
        .gray
        .to_device(x.device())
        .to_kind(Kind::Bool)
        .view([b, 1, 1, 1]);
    let x = rgb_to_grayscale(&x).where_self(&gray, &x);
    let blur = where_set(&p.blur);
    let sigma = p.sigma.to_device(Device::Cpu);
    apply_subset(x, &blur, |y, idx| {
        gaussian_blur(y, &sigma.index_select(0, idx))
    })
}

/// The train transform with given parameters: uint8 B×C×H×W (C ∈ {1, 3}) on any device →
/// float32 B×3×size×size on the same device, normalised with [`MEAN`] / [`STD`]; `antialias` as
/// in [`apply_train_unnormalized`].
pub fn apply_train(images: &Tensor, p: &TrainParams, size: i64, antialias: bool) -> Tensor {
    normalize(&apply_train_unnormalized(images, p, size, antialias))
}

/// One random train view: [`sample_train_params`] then [`apply_train`] (`antialias`: a run's
/// [`crate::config::DataConfig::antialiased_crops`]). uint8 B×C×H×W → float32 B×3×size×size,
/// normalised, on the images' device.
pub fn train_view(images: &Tensor, size: i64, antialias: bool) -> Tensor {
    Views {
        size,
        scale: CROP_SCALE,
        antialias,
    }
    .draw(images)
}

/// What a run's training views are: the crop's side, RandomResizedCrop's range of area
/// fractions, and whether shrinking crops are antialiased. The reference's, for every dataset:
/// [`CROP_SIZE`], [`CROP_SCALE`], antialiased (PIL). A run gets its own from
/// [`crate::config::DataConfig::views`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Views {
    /// Side of the square crops.
    pub size: i64,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f64, f64),
    /// Resize shrinking crops with antialiasing ([`resized_crop_antialiased`]).
    pub antialias: bool,
}

impl Views {
    /// One train view of every image of a batch (draws as [`sample_train_params_in`]).
    pub fn draw(&self, images: &Tensor) -> Tensor {
        let (b, _, h, w) = assert_images(images, "train_view");
        let p = sample_train_params_in(b, h, w, self.scale);
        apply_train(images, &p, self.size, self.antialias)
    }
}

/// The test transform: uint8 B×C×H×W (C ∈ {1, 3}) → float32 B×3×H×W, (x / 255 − mean) / std,
/// no resize.
pub fn test_view(images: &Tensor) -> Tensor {
    normalize(&to_unit(images))
}
