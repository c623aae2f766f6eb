//! The estimators' coefficients (a, b, c) and objectives, computed on the device from the
//! CPU's log-weights: every estimator, then the subset programs of SUMO and MLMC.

use super::{compare, ParityRow, Suite};
use crate::estimators::{CoefficientProgram, EncoderRule, Estimator, EstimatorKind, SubsetTerm};
use anyhow::Result;

/// Samples per datapoint of the dyadic-block cases (MLMC's shape: a power of two).
pub(super) const N8: usize = 8;

/// MLMC-like dyadic blocks of sizes 1, 2, 4, 8 with arbitrary weights.
pub(super) fn dyadic_blocks() -> Vec<SubsetTerm> {
    [(1, 0.5), (2, -0.7), (4, 1.2), (8, 0.3)]
        .iter()
        .map(|&(size, weight)| SubsetTerm {
            blocks: true,
            size,
            weight,
        })
        .collect()
}

/// Every estimator's coefficients on the same (CPU) log-weights.
pub(super) fn estimator_rows(suite: &mut Suite, lw_cpu: &[f32]) -> Result<Vec<ParityRow>> {
    let (batch, n) = (suite.batch, suite.n);
    let mut rows = Vec::new();
    for kind in EstimatorKind::ALL {
        let est = Estimator::new(kind, 0.3);
        let want = est.coefficients(lw_cpu, batch, n);
        let (a, b, c, obj) = suite
            .gpu
            .coefficients_on_device(lw_cpu, batch, n, &est.program())?;
        let mut got: Vec<f32> = a;
        got.extend(b);
        got.extend(c);
        got.extend(obj);
        let mut reference: Vec<f32> = want.a.clone();
        reference.extend(&want.b);
        reference.extend(&want.c);
        reference.extend(want.objective.iter().map(|&o| o as f32));
        rows.push(compare(
            &format!("weights: coefficients {}", kind.name()),
            &got,
            &reference,
            1e-6,
            1e-4,
        ));
    }
    Ok(rows)
}

/// Subset programs (SUMO's prefixes, MLMC's dyadic blocks) and their encoder rules.
pub(super) fn subset_rows(suite: &mut Suite, lw_cpu: &[f32]) -> Result<Vec<ParityRow>> {
    let (batch, n) = (suite.batch, suite.n);
    let mut rows = Vec::new();
    let prefixes: Vec<SubsetTerm> = (1..=n as u32)
        .map(|size| SubsetTerm {
            blocks: false,
            size,
            weight: 1.0 / size as f64 - 0.3,
        })
        .collect();
    let lw8: Vec<f32> = (0..batch * N8)
        .map(|i| -60.0 + 7.0 * ((i * 37 % 11) as f32 / 11.0) - (i % 3) as f32)
        .collect();
    let blocks = dyadic_blocks();
    let subset_cases = [
        (
            "prefixes, DReG on all",
            CoefficientProgram::Subsets {
                terms: prefixes.clone(),
                encoder: EncoderRule::DregBlocks { size: n as u32 },
            },
            lw_cpu,
            n,
        ),
        (
            "prefixes, variance",
            CoefficientProgram::Subsets {
                terms: prefixes.clone(),
                encoder: EncoderRule::Variance,
            },
            lw_cpu,
            n,
        ),
        (
            // The kernel's running prefix log-sum-exp restarts when a prefix shrinks.
            "prefixes longest first, unbiased RWS",
            CoefficientProgram::Subsets {
                terms: prefixes.into_iter().rev().collect(),
                encoder: EncoderRule::UnbiasedRws,
            },
            lw_cpu,
            n,
        ),
        (
            "dyadic blocks, unbiased RWS",
            CoefficientProgram::Subsets {
                terms: blocks.clone(),
                encoder: EncoderRule::UnbiasedRws,
            },
            &lw8,
            N8,
        ),
        (
            "dyadic blocks, DReG on pairs",
            CoefficientProgram::Subsets {
                terms: blocks.clone(),
                encoder: EncoderRule::DregBlocks { size: 2 },
            },
            &lw8,
            N8,
        ),
        (
            "dyadic blocks on 4, IWAE on the encoder's own 4",
            CoefficientProgram::Subsets {
                terms: blocks.into_iter().filter(|t| t.size <= 4).collect(),
                encoder: EncoderRule::IwaeTail { size: 4 },
            },
            &lw8,
            N8,
        ),
    ];
    for (what, program, lw, nn) in subset_cases {
        let mut want = crate::estimators::Coefficients::default();
        program.coefficients_into(lw, batch, nn, &mut want);
        let (a, b, c, obj) = suite.gpu.coefficients_on_device(lw, batch, nn, &program)?;
        let got: Vec<f32> = a.into_iter().chain(b).chain(c).chain(obj).collect();
        let reference: Vec<f32> = want
            .a
            .iter()
            .chain(&want.b)
            .chain(&want.c)
            .copied()
            .chain(want.objective.iter().map(|&o| o as f32))
            .collect();
        rows.push(compare(
            &format!("weights: subset program, {what}"),
            &got,
            &reference,
            1e-5,
            1e-4,
        ));
    }
    Ok(rows)
}
