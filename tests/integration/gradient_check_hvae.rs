//! The gradient checks of `gradient_check` on a tiny two-stochastic-layer model
//! (`--model hvae`): the CPU backend's log-weights against the f64 reference
//! (`model::reference::sample_two_layer`), every fixed-size estimator's gradient against
//! central finite differences of its surrogate (same tolerances, same stop-gradient copies:
//! `phi_draw` draws both z1 and z2, `phi_score` scores both log q factors), and mis-routed
//! coefficients failing the check on both q factors' parameters.

use super::gradient_check::{gradient_checks, Fixture, Model};
use crate::common::arch2;

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
    Fixture::from_arch(arch2(7, &[5, 4], 3, &[4], 2))
}

/// The two-layer model: both encoders, then both decoders.
fn two_layer() -> Model {
    let fixture = fixture();
    let l = &fixture.layout;
    let (e2, el, d2) = (l.encoder2[0].w, l.encoder_len, l.decoder[0].w);
    let networks = vec![
        ("encoder", 0..e2),
        ("encoder2", e2..el),
        ("decoder2", el..d2),
        ("decoder", d2..l.len),
    ];
    Model {
        label: "hvae ",
        fixture,
        networks,
        min_fd: 1e-3,
        // Two q factors spread the log-weights more than one does, so the bound is lower
        // than the one-layer check's 0.02: no sample negligible, none all-weight.
        min_weight: 0.003,
    }
}

gradient_checks!(
    two_layer(),
    two_layer_log_weights_match_reference,
    two_layer_every_estimator_matches_finite_differences,
    two_layer_wrong_routing_fails_on_both_q_factors
);
