//! The gradient checks of `gradient_check` on a tiny two-stochastic-layer model
//! (`--model hvae`): the CPU backend's log-weights against the f64 reference
//! (`model::reference::sample_two_layer`), every fixed-size estimator's gradient against
//! central finite differences of its surrogate (same tolerances, same stop-gradient copies:
//! `phi_draw` draws both z1 and z2, `phi_score` scores both log q factors), and mis-routed
//! coefficients failing the check on both q factors' parameters.

use std::time::Instant;

use super::gradient_check::{
    as_is, backend_gradient, compare, finite_difference_gradient, ref_log_weights, softmax,
    Fixture, Route, ALPHA, ATOL, LW_ATOL, LW_RTOL, N, RTOL,
};
use unbiased_vae::backend::Backend;
use unbiased_vae::estimators::EstimatorKind;
use unbiased_vae::model::{Arch, TopLayer};

/// x 7 -> 5 -> 4 -> z1 3 -> 4 -> z2 2 (and mirrored back). q(z2 | z1) is left at sigma ~ 1,
/// near its prior N(0, I): a q much narrower than p spreads the log-weights by
/// 0.5 |eps|^2 terms, and two layers of that would leave one sample all the weight.
fn fixture() -> Fixture {
    let mut f = fixture_arch();
    let top = f.layout.arch.top.clone().expect("two layers");
    let l2 = f.layout.encoder2.last().unwrap().clone();
    f.values[l2.b + top.z_dim..l2.b + 2 * top.z_dim]
        .iter_mut()
        .for_each(|v| *v += 1.0);
    f
}

fn fixture_arch() -> Fixture {
    Fixture::from_arch(Arch {
        x_dim: 7,
        hidden: vec![5, 4],
        z_dim: 3,
        likelihood: Default::default(),
        top: Some(TopLayer {
            hidden: vec![4],
            z_dim: 2,
        }),
    })
}

#[test]
fn two_layer_log_weights_match_reference() {
    let f = fixture();
    let mut be = f.backend();
    let lw = be.forward(&f.x, f.batch, N, &f.noise).unwrap().to_vec();
    let p = f.params64();
    let want: Vec<f64> = ref_log_weights(&f, &f.eps(), &p, &p, &p)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(lw.len(), want.len());
    let mut rows: Vec<(usize, f64, f64, f64)> = lw
        .iter()
        .zip(&want)
        .enumerate()
        .map(|(i, (&g, &w))| (i, f64::from(g), w, (f64::from(g) - w).abs()))
        .collect();
    rows.sort_by(|x, y| y.3.total_cmp(&x.3));
    println!("two-layer log-weights, tol {LW_ATOL:e} + {LW_RTOL:e} |l|; worst pairs:");
    for &(i, g, w, err) in rows.iter().take(5) {
        println!(
            "    datapoint {} sample {}: backend {g:.7} reference {w:.7} |err| {err:.3e}",
            i / N,
            i % N
        );
    }
    for &(i, g, w, err) in &rows {
        assert!(
            err <= LW_ATOL + LW_RTOL * w.abs(),
            "log-weight {i}: backend {g} vs reference {w} (|err| {err:e})"
        );
    }
    // The weights must be spread (no degenerate softmax) for the gradient checks to mean
    // much. Two q factors spread the log-weights more than one does, so the bounds are
    // lower than the one-layer check's 0.02: no sample negligible, none all-weight.
    for l in want.chunks(N) {
        let w = softmax(l);
        println!("    softmax weights {w:.4?}");
        assert!(w.iter().all(|&v| v > 0.003 && v < 0.9), "weights {w:?}");
    }
}

#[test]
fn two_layer_every_estimator_matches_finite_differences() {
    let f = fixture();
    let el = f.layout.encoder_len;
    let enc2 = f.layout.encoder2[0].w..el;
    let dec2 = el..f.layout.decoder[0].w;
    let mut failed = Vec::new();
    let start = Instant::now();
    for kind in EstimatorKind::ALL {
        let got = backend_gradient(&f, kind, ALPHA, as_is);
        let want = finite_difference_gradient(&f, kind, ALPHA);
        let c = compare(&format!("hvae {kind}"), &f.layout, &got, &want);
        // Each of the four networks has a clearly non-zero reference gradient.
        let max_of = |r: std::ops::Range<usize>| want[r].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (name, r) in [
            ("encoder", 0..f.layout.encoder2[0].w),
            ("encoder2", enc2.clone()),
            ("decoder2", dec2.clone()),
            ("decoder", f.layout.decoder[0].w..f.layout.len),
        ] {
            assert!(max_of(r.clone()) > 1e-3, "{kind}: fd gradient of {name} ~0");
        }
        if c.failures > 0 {
            failed.push(format!(
                "{kind} ({} outside, worst err/tol {:.2})",
                c.failures, c.worst_ratio
            ));
        }
    }
    println!("all estimators: {:.2?}", start.elapsed());
    assert!(
        failed.is_empty(),
        "two-layer gradient check failed for {failed:?}"
    );
}

#[test]
fn two_layer_wrong_routing_fails_on_both_q_factors() {
    let f = fixture();
    let swapped: Route = |a, b, c| (a, c, b);
    let decoder_wrong: Route = |_, b, c| (b.clone(), b, c);
    let score_sign: Route = |a, b, c| (a, b, c.into_iter().map(|v| -v).collect());
    let (e2, d2) = (f.layout.encoder2[0].w, f.layout.decoder[0].w);
    let el = f.layout.encoder_len;
    // (label, estimator, route, must fail on: encoder, encoder2, decoder2, decoder)
    let cases: [(&str, EstimatorKind, Route, [bool; 4]); 3] = [
        (
            "iwae-dreg b<->c",
            EstimatorKind::IwaeDreg,
            swapped,
            [true, true, false, false],
        ),
        (
            "iwae-dreg a=w^2",
            EstimatorKind::IwaeDreg,
            decoder_wrong,
            [false, false, true, true],
        ),
        (
            "rws -c",
            EstimatorKind::Rws,
            score_sign,
            [true, true, false, false],
        ),
    ];
    for (label, kind, route, should) in cases {
        let got = backend_gradient(&f, kind, ALPHA, route);
        let want = finite_difference_gradient(&f, kind, ALPHA);
        let c = compare(&format!("hvae {label} (must fail)"), &f.layout, &got, &want);
        assert!(c.failures > 0, "{label}: a wrong routing passed the check");
        let fails = |r: std::ops::Range<usize>| {
            r.into_iter()
                .any(|i| (f64::from(got[i]) - want[i]).abs() > ATOL + RTOL * want[i].abs())
        };
        let ranges = [0..e2, e2..el, el..d2, d2..f.layout.len];
        for ((name, r), want_fail) in ["encoder", "encoder2", "decoder2", "decoder"]
            .iter()
            .zip(ranges)
            .zip(should)
        {
            assert_eq!(fails(r), want_fail, "{label}: {name}");
        }
    }
}
