//! CIFAR-stem ResNets and the SimCLR projection head, as the reference's `model.py` builds them.
//!
//! Encoder `f` = torchvision's ResNet with `conv1` replaced by a 3×3 stride-1 convolution and the
//! max-pool and `fc` dropped, held in an `nn.Sequential`, so the variables are named
//! `f.0` (conv1), `f.1` (bn1), `f.3`..`f.6` (layer1..layer4, blocks `0`, `1`, … with torchvision's
//! `conv1`, `bn1`, …, `downsample.0/1`). Head `g` = `g.0` Linear(feat→hidden, no bias),
//! `g.1` BatchNorm1d, ReLU, `g.3` Linear(hidden→feature_dim).
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use crate::config::{Arch, ModelConfig};

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

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// A residual block: BasicBlock (ResNet-18) or Bottleneck (ResNet-50, stride on the 3×3 conv).
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, c_in: i64, planes: i64, stride: i64, bottleneck: bool) -> (Block, i64) {
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
                    bn(p / format!("bn{}", i + 1), co),
                )
            })
            .collect();
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            (conv(&d / "0", c_in, c_out, 1, stride), bn(&d / "1", c_out))
        });
        (Block { convs, downsample }, c_out)
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut y = x.shallow_clone();
        for (i, (c, b)) in self.convs.iter().enumerate() {
            y = y.apply(c).apply_t(b, train);
            if i < last {
                y = y.relu();
            }
        }
        let shortcut = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + shortcut).relu()
    }
}

/// Encoder + projection head.
#[derive(Debug)]
pub struct Model {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Block>>,
    head_fc1: nn::Linear,
    head_bn: nn::BatchNorm,
    head_fc2: nn::Linear,
    /// Width of the encoder's output (2048 for ResNet-50 at width 64).
    pub feature_width: i64,
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
        let conv1 = conv(&f / "0", 3, w, 3, 1);
        let bn1 = bn(&f / "1", w);
        let mut c_in = w;
        let mut layers = Vec::new();
        for (stage, &depth) in depths.iter().enumerate() {
            let planes = w << stage;
            let lp = &f / (stage + 3).to_string();
            let mut blocks = Vec::new();
            for i in 0..depth {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let (block, c_out) =
                    Block::new(&(&lp / i.to_string()), c_in, planes, stride, bottleneck);
                blocks.push(block);
                c_in = c_out;
            }
            layers.push(blocks);
        }
        let g = root / "g";
        let head_fc1 = nn::linear(
            &g / "0",
            c_in,
            cfg.head_hidden,
            nn::LinearConfig {
                bias: false,
                ..Default::default()
            },
        );
        let head_bn = nn::batch_norm1d(&g / "1", cfg.head_hidden, Default::default());
        let head_fc2 = nn::linear(
            &g / "3",
            cfg.head_hidden,
            cfg.feature_dim,
            Default::default(),
        );
        Model {
            conv1,
            bn1,
            layers,
            head_fc1,
            head_bn,
            head_fc2,
            feature_width: c_in,
        }
    }

    /// The encoder's un-normalised pooled output, B×feature_width.
    pub fn encode(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        for block in self.layers.iter().flatten() {
            y = block.forward_t(&y, train);
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    /// The projection head on an encoder output, B×feature_dim (not normalised).
    pub fn project(&self, h: &Tensor, train: bool) -> Tensor {
        h.apply(&self.head_fc1)
            .apply_t(&self.head_bn, train)
            .relu()
            .apply(&self.head_fc2)
    }

    /// `(normalize(feature), normalize(projection))`, as the reference's `Model.forward`.
    pub fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let h = self.encode(x, train);
        let z = self.project(&h, train);
        (l2_normalize(&h), l2_normalize(&z))
    }
}

/// Row-wise L2 normalisation as `F.normalize(x, dim=-1)` (eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    x / norm
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
