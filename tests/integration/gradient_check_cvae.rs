//! The gradient checks of `gradient_check` on a tiny conditional model (`--model cvae`): the
//! first 3 of 7 pixels are the context c, the other 4 are modelled. The CPU backend's
//! log-weights against the f64 reference (`model::reference::sample_cond`), every fixed-size
//! estimator's gradient against central finite differences of its surrogate (same
//! tolerances; theta, which moves in the decoder surrogate, now holds the prior p(z | c) as
//! well as the decoder), and mis-routed coefficients failing on the right networks.

use super::gradient_check::{gradient_checks, Fixture, Model};
use crate::common::arch;
use unbiased_vae::model::{Arch, Conditional};

/// x 7 (c 3, modelled 4) -> 5 -> 4 -> z 3; the prior c 3 -> 5 -> 4 -> z 3; the decoder
/// [z, c] 6 -> 4 -> 5 -> 4.
pub(crate) fn cvae_arch() -> Arch {
    Arch {
        cond: Some(Conditional {
            split_row: None,
            c_dim: 3,
        }),
        ..arch(7, &[5, 4], 3)
    }
}

/// The conditional model: encoder | prior, decoder.
fn conditional() -> Model {
    let fixture = Fixture::from_arch(cvae_arch());
    let l = &fixture.layout;
    let (el, d0) = (l.encoder_len, l.decoder[0].w);
    assert_eq!(l.prior[0].w, el, "the prior follows the encoder");
    let networks = vec![
        ("encoder", 0..el),
        ("prior", el..d0),
        ("decoder", d0..l.len),
    ];
    Model {
        label: "cvae ",
        fixture,
        networks,
        min_fd: 1e-2,
        min_weight: 0.02,
    }
}

gradient_checks!(
    conditional(),
    cvae_log_weights_match_reference,
    cvae_every_estimator_matches_finite_differences,
    cvae_wrong_routing_fails_on_the_right_networks
);
