//! CIFAR-stem ResNets and the SimCLR projection head, as the reference's `model.py` builds them.
//!
//! Encoder `f` = torchvision's ResNet with `conv1` replaced by a 3×3 stride-1 convolution and the
//! max-pool and `fc` dropped, held in an `nn.Sequential`, so the variables are named
//! `f.0` (conv1), `f.1` (bn1), `f.3`..`f.6` (layer1..layer4, blocks `0`, `1`, … with torchvision's
//! `conv1`, `bn1`, …, `downsample.0/1`). Head `g` = `g.0` Linear(feat→hidden, no bias),
//! `g.1` BatchNorm1d, ReLU, `g.3` Linear(hidden→feature_dim).
//!
//! Initialisation as PyTorch draws it for the reference's modules: convolutions of the ResNet
//! Kaiming-normal (fan-out, ReLU; torchvision's loop), except the replaced 3×3 stem, which the
//! reference creates after that loop and so gets `nn.Conv2d`'s default (Kaiming-uniform with
//! a = √5, i.e. U(±1/√fan_in)); BatchNorm weight 1, bias 0; Linear layers `nn.Linear`'s default,
//! weight and bias U(±1/√fan_in). (tch's own defaults differ: BatchNorm weight U(0, 1), Linear
//! weight √6 times wider.)
//!
//! BatchNorm can run as the reference ran it under `nn.DataParallel` ([`SplitBatchNorm`]).
//!
//! The model computes as its [`Numerics`] say (fp32 unless [`Model::set_numerics`] is called):
//! under bf16 autocast and/or in channels_last layout, its outputs always fp32.
use std::sync::{Arc, Mutex};

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::config::{Arch, ModelConfig};
use crate::numerics::Numerics;
use crate::shim::{self, MemoryFormat};

/// torchvision's ResNet initialisation for convolutions: Kaiming normal, fan-out, ReLU gain.
const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: CONV_INIT,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// `nn.Conv2d`'s and `nn.Linear`'s default: U(±1/√fan_in).
fn torch_default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `nn.Linear(c_in, c_out, bias)` as PyTorch initialises it.
fn linear(p: nn::Path, c_in: i64, c_out: i64, bias: bool) -> nn::Linear {
    let init = torch_default_init(c_in);
    nn::linear(
        p,
        c_in,
        c_out,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias,
        },
    )
}

const BN_INIT: nn::BatchNormConfig = nn::BatchNormConfig {
    cudnn_enabled: true,
    eps: 1e-5,
    momentum: 0.1,
    affine: true,
    ws_init: nn::Init::Const(1.0),
    bs_init: nn::Init::Const(0.0),
};

/// BatchNorm that, in train mode with `splits` > 1, normalises the batch in the chunks
/// `nn.DataParallel` would give `splits` GPUs.
///
/// What DataParallel does (torch/nn/parallel/data_parallel.py, scatter_gather.py, replicate.py,
/// comm.py): `scatter` cuts the input along dim 0 with `Tensor.chunk(splits)` (chunks of
/// ⌈B/splits⌉, the last smaller; fewer chunks when B < splits); each chunk runs the whole module on
/// its own replica, so every BatchNorm normalises each chunk with that chunk's own statistics;
/// `replicate` broadcasts parameters and buffers with `broadcast_coalesced`, whose outputs for
/// the source device are the module's own tensors, so replica 0 updates the real running
/// statistics (from chunk 0 alone) while the other replicas update copies that are dropped;
/// `gather` concatenates the outputs in chunk order. Every other layer of the model works per
/// sample, so splitting at each BatchNorm is the same computation. In eval mode the running
/// statistics are used and splitting changes nothing.
#[derive(Debug)]
pub struct SplitBatchNorm {
    bn: nn::BatchNorm,
    splits: i64,
    /// With `model.sync_bn` in a data-parallel run: normalise with the global batch's statistics.
    sync: Option<SyncStats>,
}

/// Sums a tensor over the ranks of a data-parallel run, differentiably (its backward sums the
/// gradients over the ranks too): what SyncBatchNorm needs of the process group. The trainer
/// makes it from its group; the model knows nothing of process groups.
pub type RankSum = Arc<dyn Fn(&Tensor) -> crate::Result<Tensor> + Send + Sync>;

/// SyncBatchNorm's link to the ranks, shared by every BatchNorm of a model.
#[derive(Clone)]
pub struct SyncStats {
    sum: RankSum,
    /// The first sum that failed in a forward pass (which cannot return an error; the layer
    /// then normalises its chunk alone), for the step to raise ([`Model::sync_failure`]).
    failure: Arc<Mutex<Option<crate::Error>>>,
}

impl std::fmt::Debug for SyncStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncStats")
    }
}

impl SyncStats {
    /// SyncBatchNorm over the ranks that `sum` sums over.
    pub fn new(sum: RankSum) -> SyncStats {
        SyncStats {
            sum,
            failure: Arc::new(Mutex::new(None)),
        }
    }
}

impl SplitBatchNorm {
    fn new(p: nn::Path, c: i64, two_d: bool, splits: i64) -> SplitBatchNorm {
        let bn = if two_d {
            nn::batch_norm2d(p, c, BN_INIT)
        } else {
            nn::batch_norm1d(p, c, BN_INIT)
        };
        SplitBatchNorm {
            bn,
            splits: splits.max(1),
            sync: None,
        }
    }

    /// Train mode with the statistics of the global batch: per channel the sum over the ranks
    /// of each rank's sum and count gives the mean, then of the centred squares the biased
    /// variance, both through [`RankSum`] so that the gradients flow to every rank's chunk as
    /// SyncBatchNorm's do. Computed in fp32, returned in the input's dtype. The running
    /// statistics move as `nn.BatchNorm`'s do (momentum 0.1, unbiased variance).
    fn forward_synced(&self, x: &Tensor, s: &SyncStats) -> crate::Result<Tensor> {
        let c = x.size()[1];
        let dims: Vec<i64> = (0..x.dim() as i64).filter(|&d| d != 1).collect();
        let mut shape = vec![1i64; x.dim()];
        shape[1] = c;
        let xf = x.to_kind(Kind::Float);
        let count =
            Tensor::from_slice(&[(x.numel() as i64 / c.max(1)) as f32]).to_device(x.device());
        let local = xf.sum_dim_intlist(dims.as_slice(), false, Kind::Float);
        let sums = (s.sum)(&Tensor::cat(&[local, count], 0))?;
        let n = sums.get(c);
        let mean = sums.narrow(0, 0, c) / &n;
        let centred = &xf - mean.view(shape.as_slice());
        let squares = centred
            .square()
            .sum_dim_intlist(dims.as_slice(), false, Kind::Float);
        let var = (s.sum)(&squares)? / &n;
        let scale = (&var + BN_INIT.eps).rsqrt();
        let y = centred * scale.view(shape.as_slice());
        // Not in place: autograd keeps what each product's backward needs.
        let y = match &self.bn.ws {
            Some(w) => y * w.view(shape.as_slice()),
            None => y,
        };
        let y = match &self.bn.bs {
            Some(b) => y + b.view(shape.as_slice()),
            None => y,
        };
        tch::no_grad(|| {
            let m = BN_INIT.momentum;
            // n / (n − 1) as a tensor: no wait for the device.
            let n = n.detach();
            let unbiased = var.detach() * &n / (&n - 1.0).clamp_min(1.0);
            // Handles on the layer's own buffers (updated in place).
            let mut rm = self.bn.running_mean.shallow_clone();
            let mut rv = self.bn.running_var.shallow_clone();
            let new_mean = &rm * (1.0 - m) + mean.detach() * m;
            let new_var = &rv * (1.0 - m) + unbiased * m;
            rm.copy_(&new_mean);
            rv.copy_(&new_var);
        });
        Ok(y.to_kind(x.kind()))
    }
}

impl ModuleT for SplitBatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if let (true, Some(s)) = (train, &self.sync) {
            match self.forward_synced(x, s) {
                Ok(y) => return y,
                Err(e) => {
                    let mut failure = s.failure.lock().unwrap_or_else(|p| p.into_inner());
                    failure.get_or_insert(e);
                }
            }
        }
        if !train || self.splits == 1 {
            return x.apply_t(&self.bn, train);
        }
        let chunks = x.chunk(self.splits, 0);
        let out: Vec<Tensor> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0 => c.apply_t(&self.bn, true),
                // The other replicas' running statistics are discarded: none are passed.
                _ => Tensor::batch_norm(
                    c,
                    self.bn.ws.as_ref(),
                    self.bn.bs.as_ref(),
                    None::<&Tensor>,
                    None::<&Tensor>,
                    true,
                    BN_INIT.momentum,
                    BN_INIT.eps,
                    BN_INIT.cudnn_enabled,
                ),
            })
            .collect();
        Tensor::cat(&out, 0)
    }
}

fn bn(p: nn::Path, c: i64, splits: i64) -> SplitBatchNorm {
    SplitBatchNorm::new(p, c, true, splits)
}

/// A residual block: BasicBlock (ResNet-18) or Bottleneck (ResNet-50, stride on the 3×3 conv).
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, SplitBatchNorm)>,
    downsample: Option<(nn::Conv2D, SplitBatchNorm)>,
    stride: i64,
}

impl Block {
    fn new(
        p: &nn::Path,
        c_in: i64,
        planes: i64,
        stride: i64,
        bottleneck: bool,
        splits: i64,
    ) -> (Block, i64) {
        let expansion = if bottleneck { 4 } else { 1 };
        let c_out = planes * expansion;
        // (kernel, in, out, stride) of each conv, named conv1.. / bn1..
        let shapes: Vec<(i64, i64, i64, i64)> = if bottleneck {
            vec![
                (1, c_in, planes, 1),
                (3, planes, planes, stride),
                (1, planes, c_out, 1),
            ]
        } else {
            vec![(3, c_in, planes, stride), (3, planes, planes, 1)]
        };
        let convs = shapes
            .iter()
            .enumerate()
            .map(|(i, &(k, ci, co, s))| {
                (
                    conv(p / format!("conv{}", i + 1), ci, co, k, s),
                    bn(p / format!("bn{}", i + 1), co, splits),
                )
            })
            .collect();
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            (
                conv(&d / "0", c_in, c_out, 1, stride),
                bn(&d / "1", c_out, splits),
            )
        });
        (
            Block {
                convs,
                downsample,
                stride,
            },
            c_out,
        )
    }
}

impl ModuleT for Block {
    /// As torchvision's blocks, in place where they are (`ReLU(inplace=True)`, `out +=
    /// identity`): the same values, but no new tensor for each ReLU and sum. On the CPU each
    /// new activation tensor costs page faults (glibc maps large blocks afresh), which made the
    /// out-of-place version's forward about 10 % slower than the reference's.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut y = x.shallow_clone();
        for (i, (c, b)) in self.convs.iter().enumerate() {
            // A new tensor (the BatchNorm's output, which its backward does not need).
            y = y.apply(c).apply_t(b, train);
            if i < last {
                let _ = y.relu_();
            }
        }
        let shortcut = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        let _ = y.g_add_(&shortcut);
        let _ = y.relu_();
        y
    }
}

/// Encoder + projection head.
#[derive(Debug)]
pub struct Model {
    conv1: nn::Conv2D,
    bn1: SplitBatchNorm,
    layers: Vec<Vec<Block>>,
    head_fc1: nn::Linear,
    head_bn: SplitBatchNorm,
    head_fc2: nn::Linear,
    /// Width of the encoder's output (2048 for ResNet-50 at width 64).
    pub feature_width: i64,
    numerics: Numerics,
}

impl Model {
    /// Builds the model's variables under `root` (use `vs.root()`).
    pub fn new(root: &nn::Path, cfg: &ModelConfig) -> Model {
        let f = root / "f";
        let w = cfg.width;
        let (bottleneck, depths) = match cfg.arch {
            Arch::Resnet18 => (false, [2, 2, 2, 2]),
            Arch::Resnet50 => (true, [3, 4, 6, 3]),
        };
        let splits = cfg.bn_splits;
        // The stem the reference puts in place of torchvision's: nn.Conv2d's default init.
        let stem = nn::ConvConfig {
            padding: 1,
            bias: false,
            ws_init: torch_default_init(3 * 3 * 3),
            ..Default::default()
        };
        let conv1 = nn::conv2d(&f / "0", 3, w, 3, stem);
        let bn1 = bn(&f / "1", w, splits);
        let mut c_in = w;
        let mut layers = Vec::new();
        for (stage, &depth) in depths.iter().enumerate() {
            let planes = w << stage;
            let lp = &f / (stage + 3).to_string();
            let mut blocks = Vec::new();
            for i in 0..depth {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let (block, c_out) = Block::new(
                    &(&lp / i.to_string()),
                    c_in,
                    planes,
                    stride,
                    bottleneck,
                    splits,
                );
                blocks.push(block);
                c_in = c_out;
            }
            layers.push(blocks);
        }
        let g = root / "g";
        let head_fc1 = linear(&g / "0", c_in, cfg.head_hidden, false);
        let head_bn = SplitBatchNorm::new(&g / "1", cfg.head_hidden, false, splits);
        let head_fc2 = linear(&g / "3", cfg.head_hidden, cfg.feature_dim, true);
        Model {
            conv1,
            bn1,
            layers,
            head_fc1,
            head_bn,
            head_fc2,
            feature_width: c_in,
            numerics: Numerics::fp32(root.device()),
        }
    }

    /// How the model computes (fp32 until [`Model::set_numerics`]).
    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// Computes as `n` says from now on: relays out the convolution weights in place when the
    /// memory format changes (call it before an optimizer takes the parameters, so its moments
    /// share their layout; values are unchanged, and checkpoints are written in the default
    /// layout whatever this is).
    pub fn set_numerics(&mut self, n: Numerics) -> crate::Result<()> {
        if n.channels_last && n.device == tch::Device::Cpu {
            self.check_cpu_channels_last()?;
        }
        if n.channels_last != self.numerics.channels_last {
            let format = match n.channels_last {
                true => MemoryFormat::ChannelsLast,
                false => MemoryFormat::Contiguous,
            };
            for conv in self.convs_mut() {
                shim::set_memory_format_(&mut conv.ws, format)?;
            }
        }
        self.numerics = n;
        Ok(())
    }

    /// oneDNN's CPU backward of a 1×1 stride-2 convolution in channels_last corrupts the heap
    /// when it has 3 to 7 input channels (PyTorch 2.11.0 on an AVX2 CPU: `double free or
    /// corruption` in `jit_avx2_1x1_convolution_bwd_weights`, measured 2026-12-04 from Python
    /// too; 2, 8 and more are fine). Those are the downsampling shortcuts of a narrow encoder:
    /// refused before any work instead of crashing in the first backward pass.
    fn check_cpu_channels_last(&self) -> crate::Result<()> {
        let narrow = self.layers.iter().flatten().find_map(|b| {
            let (conv, _) = b.downsample.as_ref()?;
            let c_in = conv.ws.size()[1];
            (b.stride != 1 && c_in < 8).then_some(c_in)
        });
        match narrow {
            Some(c_in) => Err(crate::Error::config(
                "train.channels_last",
                format!(
                    "channels_last on the CPU needs at least 8 channels into every strided shortcut, \
                     this encoder has one of {c_in} (model.width too small): oneDNN's CPU kernel \
                     for it corrupts memory; use a wider model or train.channels_last=false"
                ),
            )),
            None => Ok(()),
        }
    }

    fn convs_mut(&mut self) -> impl Iterator<Item = &mut nn::Conv2D> {
        let blocks = self.layers.iter_mut().flatten().flat_map(|b| {
            let down = b.downsample.as_mut().map(|(c, _)| c);
            b.convs.iter_mut().map(|(c, _)| c).chain(down)
        });
        std::iter::once(&mut self.conv1).chain(blocks)
    }

    /// Runs `f` on the input laid out and under autocast as the numerics say; returns its
    /// outputs cast to fp32. With plain numerics, `f(x)` exactly.
    fn compute<const N: usize>(
        &self,
        x: &Tensor,
        f: impl FnOnce(&Tensor) -> [Tensor; N],
    ) -> [Tensor; N] {
        let n = &self.numerics;
        if n.is_plain() {
            return f(x);
        }
        // The shim fails only on a device or dtype autocast does not know, which resolution
        // never produces; like tch's infallible ops, the forward panics then.
        let fail =
            |e: crate::Error| -> ! { panic!("the model's numerics ({}): {e}", n.describe()) };
        let x = n.input(x).unwrap_or_else(|e| fail(e));
        let out = {
            let _autocast = n.autocast().unwrap_or_else(|e| fail(e));
            f(&x)
        };
        out.map(|t| t.to_kind(Kind::Float))
    }

    fn encode_raw(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.apply(&self.conv1).apply_t(&self.bn1, train);
        let _ = y.relu_();
        for block in self.layers.iter().flatten() {
            y = block.forward_t(&y, train);
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn project_raw(&self, h: &Tensor, train: bool) -> Tensor {
        let mut y = h.apply(&self.head_fc1).apply_t(&self.head_bn, train);
        let _ = y.relu_();
        y.apply(&self.head_fc2)
    }

    /// The encoder's un-normalised pooled output, B×feature_width (fp32).
    pub fn encode(&self, x: &Tensor, train: bool) -> Tensor {
        let [h] = self.compute(x, |x| [self.encode_raw(x, train)]);
        h
    }

    /// `(normalize(feature), normalize(projection))`, as the reference's `Model.forward`; both
    /// fp32, normalised in fp32.
    pub fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let [h, z] = self.compute(x, |x| {
            let h = self.encode_raw(x, train);
            let z = self.project_raw(&h, train);
            [h, z]
        });
        (l2_normalize(&h), l2_normalize(&z))
    }

    /// From now on, in train mode, every BatchNorm normalises with the global batch's
    /// statistics summed by `sync` (SyncBatchNorm, `model.sync_bn`), or, with `None`, as
    /// [`Model::set_bn_splits`] says.
    pub fn set_sync_stats(&mut self, sync: Option<SyncStats>) {
        for bn in self.batch_norms() {
            bn.sync = sync.clone();
        }
    }

    /// Where SyncBatchNorm leaves the first error of a forward pass (which cannot return it),
    /// for the step to raise; `None` without SyncBatchNorm.
    pub fn sync_failure(&self) -> Option<Arc<Mutex<Option<crate::Error>>>> {
        self.bn1.sync.as_ref().map(|s| s.failure.clone())
    }

    /// Every BatchNorm of the model: the stem's, the blocks', the head's.
    fn batch_norms(&mut self) -> impl Iterator<Item = &mut SplitBatchNorm> {
        let blocks = self.layers.iter_mut().flatten().flat_map(|b| {
            let down = b.downsample.as_mut().map(|(_, bn)| bn);
            b.convs.iter_mut().map(|(_, bn)| bn).chain(down)
        });
        std::iter::once(&mut self.bn1)
            .chain(blocks)
            .chain(std::iter::once(&mut self.head_bn))
    }

    /// Normalises each training batch in `splits` chunks from now on (see [`SplitBatchNorm`]):
    /// a rank of a data-parallel run takes its share of `model.bn_splits`.
    pub fn set_bn_splits(&mut self, splits: i64) {
        for bn in self.batch_norms() {
            bn.splits = splits.max(1);
        }
    }
}

/// Row-wise L2 normalisation as `F.normalize(x, dim=-1)` (eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    x / norm
}

/// `nn.Linear(c_in, c_out)` as PyTorch initialises it (for heads built outside the model).
pub fn torch_linear(p: nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    linear(p, c_in, c_out, true)
}

/// Number of trainable scalars among the variables whose name starts with `prefix`
/// (`"f."` = encoder, `"g."` = head). BatchNorm running statistics are not counted.
pub fn count_parameters(vs: &nn::VarStore, prefix: &str) -> i64 {
    vs.variables()
        .iter()
        .filter(|(name, t)| name.starts_with(prefix) && t.requires_grad())
        .map(|(_, t)| t.numel() as i64)
        .sum()
}

impl Module for Model {
    fn forward(&self, x: &Tensor) -> Tensor {
        Model::forward(self, x, false).1
    }
}
