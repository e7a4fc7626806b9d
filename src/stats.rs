//! The few statistics `ipirm compare` reports: mean, sample standard deviation and Student t
//! intervals (one sample, paired, and Welch's for two samples of unequal variance).
use serde::Serialize;

/// A sample's mean with its spread: `sd` and the 95 % interval need at least two values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator).
    pub sd: Option<f64>,
    /// 95 % Student t interval of the mean: mean ± t(0.975, n − 1)·sd/√n.
    pub ci95: Option<(f64, f64)>,
}

/// `values` summarised; `None` when there are none.
pub fn summary(values: &[f64]) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(Summary {
            n,
            mean,
            sd: None,
            ci95: None,
        });
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = t_quantile(0.975, (n - 1) as f64) * sd / (n as f64).sqrt();
    Some(Summary {
        n,
        mean,
        sd: Some(sd),
        ci95: Some((mean - half, mean + half)),
    })
}

/// The difference of two means, `b − a`, with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    pub mean: f64,
    pub ci95: (f64, f64),
    /// Degrees of freedom of the t distribution used.
    pub df: f64,
}

/// Paired: the t interval of the mean of `b[i] − a[i]` (at least two pairs).
pub fn paired(a: &[f64], b: &[f64]) -> Option<Difference> {
    assert_eq!(a.len(), b.len(), "paired samples");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let s = summary(&d)?;
    Some(Difference {
        mean: s.mean,
        ci95: s.ci95?,
        df: (s.n - 1) as f64,
    })
}

/// Unpaired (Welch): mean(b) − mean(a), standard error √(s²a/na + s²b/nb), Welch–Satterthwaite
/// degrees of freedom (each sample at least two values).
pub fn welch(a: &[f64], b: &[f64]) -> Option<Difference> {
    let (sa, sb) = (summary(a)?, summary(b)?);
    let (va, vb) = (sa.sd?.powi(2) / sa.n as f64, sb.sd?.powi(2) / sb.n as f64);
    let se = (va + vb).sqrt();
    let mean = sb.mean - sa.mean;
    let df = if se == 0.0 {
        (sa.n + sb.n - 2) as f64
    } else {
        (va + vb).powi(2) / (va.powi(2) / (sa.n - 1) as f64 + vb.powi(2) / (sb.n - 1) as f64)
    };
    let half = t_quantile(0.975, df) * se;
    Some(Difference {
        mean,
        ci95: (mean - half, mean + half),
        df,
    })
}

/// The `p` quantile of Student's t with `df` > 0 degrees of freedom, by bisection on its CDF.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && df > 0.0, "t_quantile({p}, {df})");
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Student t's CDF at `t`: 1 − I_x(df/2, 1/2)/2 for t ≥ 0 with x = df/(df + t²).
fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz's
/// method), using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where it converges faster.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        // Even step, then odd step of the fraction.
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + num / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * f / a
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut s = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        s += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the printed table (e.g. scipy.stats.t.ppf(0.975, df)).
    #[test]
    fn t_quantiles_match_the_table() {
        for (df, want) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (3.0, 3.182_446_305),
            (4.0, 2.776_445_105),
            (9.0, 2.262_157_163),
            (30.0, 2.042_272_456),
            (1e6, 1.959_966_423),
        ] {
            let got = t_quantile(0.975, df);
            assert!((got - want).abs() < 1e-6, "df {df}: {got} vs {want}");
        }
        assert!((t_quantile(0.025, 4.0) + 2.776_445_105).abs() < 1e-6);
    }

    #[test]
    fn summaries_and_differences_by_hand() {
        let s = summary(&[70.0, 72.0, 74.0]).unwrap();
        assert_eq!((s.n, s.mean, s.sd), (3, 72.0, Some(2.0)));
        let half = 4.302_652_730 * 2.0 / 3f64.sqrt();
        let (lo, hi) = s.ci95.unwrap();
        assert!((lo - (72.0 - half)).abs() < 1e-6 && (hi - (72.0 + half)).abs() < 1e-6);
        assert_eq!(summary(&[5.0]).unwrap().ci95, None);
        assert!(summary(&[]).is_none());

        // Paired: differences 1, 2, 3.
        let d = paired(&[10.0, 20.0, 30.0], &[11.0, 22.0, 33.0]).unwrap();
        assert_eq!((d.mean, d.df), (2.0, 2.0));
        let half = 4.302_652_730 * 1.0 / 3f64.sqrt();
        assert!((d.ci95.1 - (2.0 + half)).abs() < 1e-6);

        // Welch with equal sizes and variances: df = 2n − 2.
        let w = welch(&[1.0, 2.0, 3.0], &[2.0, 3.0, 4.0]).unwrap();
        assert!((w.mean - 1.0).abs() < 1e-12 && (w.df - 4.0).abs() < 1e-9);
        let half = 2.776_445_105 * (2.0f64 / 3.0).sqrt();
        assert!((w.ci95.0 - (1.0 - half)).abs() < 1e-6);
    }
}
