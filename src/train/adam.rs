//! Adam with L2 weight decay, step for step as `torch.optim.Adam` (single-tensor form), with its
//! state open: the moments and the step count are plain tensors, so a checkpoint can hold them
//! and a resumed run continues bit for bit. (tch's optimizer wraps libtorch's, whose state cannot
//! be read or restored from Rust.)
use tch::Tensor;

use crate::{Error, Result};

/// The optimizer over a fixed, named list of parameters.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken so far.
    pub step: i64,
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

impl Adam {
    /// Adam over `params` (name, tensor that requires grad), PyTorch's defaults for betas and eps.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Adam {
        let exp_avg = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let exp_avg_sq = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            params,
            exp_avg,
            exp_avg_sq,
        }
    }

    /// Adam over the trainable variables of `vs`, in name order.
    pub fn for_var_store(vs: &tch::nn::VarStore, lr: f64, weight_decay: f64) -> Adam {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Adam::new(vars, lr, weight_decay)
    }

    /// The parameters, in the optimizer's order.
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().map(|(_, p)| p)
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update of every parameter that has a gradient:
    /// g ← g + wd·p; m ← lerp(m, g, 1−β1); v ← β2·v + (1−β2)·g²;
    /// p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + eps).
    ///
    /// Rounded as `torch.optim.Adam` rounds it on the CPU (float32): `v.mul_(β2).addcmul_(g, g,
    /// value=1−β2)` and `p.addcdiv_(m, denom, value=−step_size)`, whose kernels compute
    /// `v + ((1−β2)·g)·g` and `p + (−step_size·m)/denom`. tch's `addcmul_`/`addcdiv_` take no
    /// `value`, so the scalar is applied to the first factor beforehand (`value·t1` rounds the same
    /// either way) and the kernel is called with value 1. An earlier form, `v + (g·g)·(1−β2)` and
    /// `p − (m/denom)·step_size`, differed in the last bit (fed the reference's gradients of an
    /// N = 1500 maximize run: up to 4.8e-7 off in the partition logits after 4 steps; now 0). In
    /// the maximize step, whose gradients are of the order of `eps`, such differences do not stay
    /// small (see `maximize_offline_with_order`).
    pub fn step(&mut self) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let t = self.step as f64;
        let bias1 = 1.0 - self.beta1.powf(t);
        let bias2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        let step_size = self.lr / bias1;
        for (i, (_, p)) in self.params.iter_mut().enumerate() {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let grad = if self.weight_decay != 0.0 {
                grad + &*p * self.weight_decay
            } else {
                grad
            };
            let m = &mut self.exp_avg[i];
            let _ = m.lerp_(&grad, 1.0 - self.beta1);
            let v = &mut self.exp_avg_sq[i];
            let _ = v.g_mul_scalar_(self.beta2);
            let _ = v.addcmul_(&(&grad * (1.0 - self.beta2)), &grad);
            let denom = v.sqrt() / bias2_sqrt + self.eps;
            let _ = p.addcdiv_(&(&*m * -step_size), &denom);
        }
    }

    /// Zero gradients, back-propagate `loss`, step.
    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        self.step();
    }

    /// The step count and the moments (shallow: the live tensors).
    pub fn state(&self) -> State {
        let moments = self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq);
        State {
            step: self.step,
            moments: moments
                .map(|(((name, _), m), v)| (name.clone(), m.shallow_clone(), v.shallow_clone()))
                .collect(),
        }
    }

    /// Restores what [`Adam::state`] returned (moments matched to the parameters by name).
    pub fn load_state(&mut self, state: &State) -> Result<()> {
        self.step = state.step;
        let _guard = tch::no_grad_guard();
        for (i, (name, _)) in self.params.iter().enumerate() {
            let (_, m, v) = state
                .moments
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| {
                    Error::Shape(format!(
                        "checkpoint has no optimizer tensor `adam.exp_avg.{name}`"
                    ))
                })?;
            self.exp_avg[i].f_copy_(m)?;
            self.exp_avg_sq[i].f_copy_(v)?;
        }
        Ok(())
    }
}

/// Adam's state, what a checkpoint holds of it.
pub struct State {
    /// Steps taken.
    pub step: i64,
    /// Each parameter's name with its first and second moment estimates (`exp_avg`,
    /// `exp_avg_sq`), in the optimizer's order.
    pub moments: Vec<(String, Tensor, Tensor)>,
}

impl State {
    /// As named tensors: `adam.step`, `adam.exp_avg.<param>`, `adam.exp_avg_sq.<param>`.
    pub fn to_named(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("adam.step".to_string(), Tensor::from_slice(&[self.step]))];
        for (name, m, v) in &self.moments {
            out.push((format!("adam.exp_avg.{name}"), m.shallow_clone()));
            out.push((format!("adam.exp_avg_sq.{name}"), v.shallow_clone()));
        }
        out
    }

    /// Takes the `adam.*` tensors [`State::to_named`] wrote out of `named`.
    pub fn take_from(named: &mut Vec<(String, Tensor)>) -> Result<State> {
        let step = crate::tensor_file::take(named, "adam.step")
            .map_err(|_| Error::Shape("checkpoint has no optimizer tensor `adam.step`".into()))?
            .int64_value(&[0]);
        let mut moments = Vec::new();
        let names: Vec<String> = named
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("adam.exp_avg.").map(str::to_string))
            .collect();
        for name in names {
            let m = crate::tensor_file::take(named, &format!("adam.exp_avg.{name}"))?;
            let v = crate::tensor_file::take(named, &format!("adam.exp_avg_sq.{name}")).map_err(
                |_| {
                    Error::Shape(format!(
                        "checkpoint has no optimizer tensor `adam.exp_avg_sq.{name}`"
                    ))
                },
            )?;
            moments.push((name, m, v));
        }
        Ok(State { step, moments })
    }
}
