//! `uvae grad-stats`: IWAE's gradient bias is detected and the unbiased estimators' is not,
//! on PPCA at K = 5 (seeded; the test's 99% Bonferroni-corrected critical values are printed).

use unbiased_vae::estimators::{Estimator, EstimatorKind};
use unbiased_vae::gradstats::{format_report, grad_stats, ExactKind};

#[test]
fn iwae_bias_is_significant_and_the_unbiased_estimators_are_not() {
    let reps = 20_000;
    let iwae = grad_stats(
        ExactKind::Ppca,
        Estimator::new(EstimatorKind::Iwae, 0.0),
        5,
        reps,
        0,
        0,
    )
    .unwrap();
    println!("{}", format_report(&iwae));
    assert!(
        iwae.groups.iter().any(|g| g.significant),
        "IWAE K=5 bias not detected: {:?}",
        iwae.groups
    );
    for kind in EstimatorKind::RANDOM_SIZE {
        let r = grad_stats(ExactKind::Ppca, Estimator::new(kind, 0.0), 5, reps, 0, 0).unwrap();
        println!("{}", format_report(&r));
        assert!(
            r.groups.iter().all(|g| !g.significant),
            "{kind}: bias flagged: {:?}",
            r.groups
        );
        assert!(
            r.cost_measured > 5.0 && r.cost_expected > 5.0,
            "{kind}: cost {} / {}",
            r.cost_measured,
            r.cost_expected
        );
    }
}

#[test]
fn mlmc_reports_its_level_decay_and_p_range() {
    let r = grad_stats(
        ExactKind::Toy,
        Estimator::new(EstimatorKind::MlmcRr, 0.0),
        5,
        2000,
        1,
        0,
    )
    .unwrap();
    let decay = r.mlmc_decay.as_ref().expect("MLMC reports the level decay");
    assert_eq!(decay.len(), 7);
    assert!(
        decay
            .windows(2)
            .all(|w| w[1].mean_delta_sq < w[0].mean_delta_sq),
        "{decay:?}"
    );
    // Antithetic differences decay like 2^(-2k) (Shi & Cornish 2021).
    let beta = r.beta.unwrap();
    assert!((1.5..2.6).contains(&beta), "beta = {beta}");
    let (lo, hi) = r.p_range.unwrap();
    assert!(lo == 0.5 && (hi - (1.0 - 2f64.powf(-beta))).abs() < 1e-12);
}
