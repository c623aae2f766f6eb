//! The papers' experiments as lists of runs with the papers' settings (`uvae reproduce`).
//! Every number here is a paper's, or says where a paper is silent and what we chose.

use crate::config::{BackendChoice, GradVarLog, OutputBias, TrainConfig};
use crate::estimators::{EncoderChoice, Estimator, EstimatorKind, UnbiasedOptions};
use crate::model::{Arch, ModelChoice};
use crate::optim::{AdamConfig, Schedule};
use serde::Serialize;
use std::path::PathBuf;

/// A named experiment (`uvae reproduce PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Burda et al. (2016), Table 1, one stochastic layer: VAE and IWAE at k = 1, 5, 50.
    Burda,
    /// Shi & Cornish (2021): IWAE, ML-RR and SUMO at expected costs 5 and 15.
    ShiCornish,
    /// Tucker et al. (2019), MNIST: Figure 2 (IWAE, RWS, JVI and their DReG twins at K = 64,
    /// with the gradient variance) and Figure 3 (five estimators at K = 32 and 256, the
    /// DReG(alpha) sweep at 64).
    Dreg,
    /// Ruiz et al. (2021): IWAE against the coupled PIMH, ISIR and DISIR chains.
    Ruiz,
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Burda => "burda",
            Protocol::ShiCornish => "shi-cornish",
            Protocol::Dreg => "dreg",
            Protocol::Ruiz => "ruiz",
        }
    }
}

/// Which checkpoint of a run its test bound scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The last epoch's (Burda et al., Tucker et al. and Ruiz et al. report the end of
    /// training).
    Last,
    /// The epoch with the best validation bound (Shi & Cornish hold out 10,000 validation
    /// images for it).
    BestValidation,
}

/// One row of a protocol: a run configuration (seed 0, no output directory yet) and the
/// paper's test negative log-likelihood where the paper prints one.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub cfg: TrainConfig,
    pub paper_nll: Option<f64>,
    /// The paper's active units for this row ("19", "21+5"), where it prints them.
    pub paper_active_units: Option<&'static str>,
    /// The paper's figure the row draws (`fig2`), which `--runs` also accepts to pick all
    /// of that figure's rows; None where the protocol reproduces a table.
    pub figure: Option<&'static str>,
}

/// A figure id's name in the results ("fig3" -> "Figure 3").
pub fn figure_label(id: &str) -> String {
    match id.strip_prefix("fig") {
        Some(n) => format!("Figure {n}"),
        None => id.to_string(),
    }
}

/// A protocol's rows and how they are scored.
#[derive(Clone, Debug)]
pub struct ProtocolSpec {
    pub protocol: Protocol,
    pub rows: Vec<Row>,
    pub selection: Selection,
    /// Where the settings and the paper's numbers come from.
    pub source: &'static str,
    /// Samples per datapoint of the final test bound (the papers' L_5000).
    pub eval_k: usize,
    /// Seeds per row unless `--seeds` says (the trials a paper averages).
    pub seeds: usize,
    /// The curve's test bound unless `--test-every`/`--test-k` say: every this many epochs
    /// (None: about 20 points per run), with the row's training K (else `DEFAULT_TEST_K`).
    pub test_every: Option<usize>,
    pub test_k_is_training_k: bool,
}

/// Burda et al.'s one-layer MNIST run: Adam (beta1 0.9, beta2 0.999, eps 1e-4) at lr 1e-3
/// with the 3^i schedule (3,280 epochs), batch 20.
fn base() -> TrainConfig {
    TrainConfig {
        model: ModelChoice::Vae,
        data: None,
        binarize: Default::default(),
        image_shape: None,
        valid_size: 1000,
        train_limit: None,
        arch: Arch::burda_mnist(),
        estimator: Estimator::new(EstimatorKind::Iwae, 0.0),
        k: 1,
        epochs: crate::optim::burda_epochs(8),
        batch: 20,
        lr: 1e-3,
        schedule: Schedule::Burda,
        adam: AdamConfig {
            eps: 1e-4,
            ..AdamConfig::default()
        },
        seed: 0,
        threads: 0,
        backend: BackendChoice::Auto,
        adapter: None,
        val_k: 50,
        output_bias: OutputBias::DataMean,
        test: None,
        grad_var: None,
        out: PathBuf::new(),
    }
}

fn row(name: &str, cfg: TrainConfig, paper_nll: Option<f64>) -> Row {
    Row {
        name: name.to_string(),
        cfg,
        paper_nll,
        paper_active_units: None,
        figure: None,
    }
}

fn estimator(kind: EstimatorKind) -> Estimator {
    Estimator::new(kind, 0.0)
}

impl Protocol {
    /// The protocol's rows with the papers' settings (full budgets).
    pub fn spec(self) -> ProtocolSpec {
        match self {
            Protocol::Burda => burda(),
            Protocol::ShiCornish => shi_cornish(),
            Protocol::Dreg => dreg(),
            Protocol::Ruiz => ruiz(),
        }
    }
}

/// Burda et al. (2016), Table 1: the VAE (ELBO, k samples averaged) and IWAE at k = 1, 5,
/// 50, with one stochastic layer (784-200-200-50) and with two (784-200-200-100 and
/// 100-100-100-50, `--model hvae`; rows `vae2-*`, `iwae2-*`). Burda et al. train on all
/// 60,000 images; we hold out 1,000 for the per-epoch validation bound and score the last
/// epoch.
fn burda() -> ProtocolSpec {
    #[rustfmt::skip]
    let paper = [
        (EstimatorKind::Elbo, "vae", 1, [86.76, 86.47, 86.35], ["19", "20", "20"]),
        (EstimatorKind::Iwae, "iwae", 1, [86.76, 85.54, 84.78], ["19", "22", "25"]),
        (EstimatorKind::Elbo, "vae2", 2, [85.33, 85.01, 84.78], ["16+5", "17+5", "17+5"]),
        (EstimatorKind::Iwae, "iwae2", 2, [85.33, 83.89, 82.90], ["16+5", "21+5", "26+7"]),
    ];
    let rows = burda_rows(&paper, base());
    ProtocolSpec {
        protocol: Protocol::Burda,
        rows,
        selection: Selection::Last,
        source: "Burda, Grosse & Salakhutdinov (2016), Table 1 (MNIST, one and two stochastic layers, test NLL from L_5000)",
        eval_k: 5000,
        seeds: 1,
        test_every: None,
        test_k_is_training_k: false,
    }
}

/// Shi & Cornish (2021), MNIST: AMSGrad (eps 1e-4) at lr 1e-3 with the linear decay over
/// 3,280 epochs, gradient clipping 60 (decoder) and 125 (encoder), batch 100, the output
/// bias at the data mean's logit, 50,000 training and 10,000 validation images, the
/// best-validation checkpoint scored by L_5000. ML-RR and SUMO train the encoder by IWAE
/// on fresh samples of their own.
fn shi_cornish() -> ProtocolSpec {
    let sc = |kind, k| TrainConfig {
        estimator: estimator(kind),
        k,
        batch: 100,
        schedule: Schedule::Linear,
        valid_size: 10_000,
        // A cheap per-epoch bound over the 10,000 validation images (our choice).
        val_k: 10,
        adam: AdamConfig {
            eps: 1e-4,
            amsgrad: true,
            clip_encoder: Some(125.0),
            clip_decoder: Some(60.0),
            ..AdamConfig::default()
        },
        ..base()
    };
    let unbiased = |kind, k, encoder_k, mlmc: Option<(f64, u32, u32)>| {
        let mut cfg = sc(kind, k);
        let (p, cap, i0) = mlmc.unwrap_or((0.6, 0, 2));
        cfg.estimator.unbiased = UnbiasedOptions {
            mlmc_p: p,
            mlmc_i0: i0,
            mlmc_cap: mlmc.map(|_| cap),
            encoder: EncoderChoice::Iwae,
            encoder_k,
        };
        cfg
    };
    let rows = vec![
        row("iwae-k5", sc(EstimatorKind::Iwae, 5), None),
        row(
            "ml-rr-cost5",
            unbiased(EstimatorKind::MlmcRr, 1, 5, Some((0.585, 6, 0))),
            None,
        ),
        row("sumo-m1", unbiased(EstimatorKind::Sumo, 1, 5, None), None),
        row("iwae-k15", sc(EstimatorKind::Iwae, 15), None),
        row(
            "ml-rr-cost15",
            unbiased(EstimatorKind::MlmcRr, 1, 15, Some((0.63, 4, 2))),
            None,
        ),
        row("sumo-m9", unbiased(EstimatorKind::Sumo, 9, 15, None), None),
    ];
    ProtocolSpec {
        protocol: Protocol::ShiCornish,
        rows,
        selection: Selection::BestValidation,
        source: "Shi & Cornish (2021), MNIST experiments (settings as in their reference implementation; the seeds hold only the abstract, so no paper number is shown)",
        eval_k: 5000,
        seeds: 1,
        test_every: None,
        test_k_is_training_k: false,
    }
}

/// One row per estimator of `kinds`, all with the same settings `cfg`: a row is named
/// A row of Burda et al.'s Table 1: estimator, label, stochastic layers, and the paper's
/// NLL and active units at k = 1, 5, 50.
type BurdaPaperRow = (
    EstimatorKind,
    &'static str,
    usize,
    [f64; 3],
    [&'static str; 3],
);

fn burda_rows(paper: &[BurdaPaperRow], base: TrainConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    for &(kind, label, layers, nll, units) in paper {
        for ((k, nll), units) in [1, 5, 50].into_iter().zip(nll).zip(units) {
            let mut cfg = TrainConfig {
                estimator: estimator(kind),
                k,
                ..base.clone()
            };
            if layers == 2 {
                cfg.model = ModelChoice::Hvae;
                cfg.arch = Arch::burda_mnist_two_layer();
            }
            rows.push(Row {
                paper_active_units: Some(units),
                ..row(&format!("{label}-k{k}"), cfg, Some(nll))
            });
        }
    }
    rows
}

/// Burda et al.'s Table 1, Omniglot columns (the rows `uvae reproduce burda` runs given
/// `--data chardata.mat`): the MNIST rows' settings on the 28x28 Omniglot, holding out the
/// 1,345 validation images of the IWAE code (which first shuffles the training set with a
/// fixed seed; we keep the file's order).
pub fn burda_omniglot_rows() -> Vec<Row> {
    #[rustfmt::skip]
    let paper = [
        (EstimatorKind::Elbo, "omniglot-vae", 1, [108.11, 107.62, 107.80], ["28", "28", "28"]),
        (EstimatorKind::Iwae, "omniglot-iwae", 1, [108.11, 106.12, 104.67], ["28", "34", "41"]),
        (EstimatorKind::Elbo, "omniglot-vae2", 2, [107.58, 106.31, 106.30], ["28+4", "30+5", "30+5"]),
        (EstimatorKind::Iwae, "omniglot-iwae2", 2, [107.56, 104.79, 103.38], ["30+5", "38+6", "44+7"]),
    ];
    burda_rows(
        &paper,
        TrainConfig {
            valid_size: 1345,
            ..base()
        },
    )
}

/// `<name>-k<K>`.
fn rows_per_estimator(kinds: &[(EstimatorKind, &str)], cfg: TrainConfig) -> Vec<Row> {
    kinds
        .iter()
        .map(|&(kind, name)| {
            let cfg = TrainConfig {
                estimator: estimator(kind),
                ..cfg.clone()
            };
            row(&format!("{name}-k{}", cfg.k), cfg, None)
        })
        .collect()
}

/// Tucker et al. (2019), section 6.2 (MNIST generative modelling), Figures 2 and 3: Burda's
/// one-layer model (50 latents, two 200-unit tanh layers each way, Bernoulli outputs,
/// dynamically binarized MNIST), three trials per curve, 5 million steps.
///
/// The paper gives no optimizer, learning rate or batch. We take those of the authors'
/// published training script (google-research `dreg_estimators`, `train.py`): Adam at a
/// constant 3e-4, batch 32, the output bias at the training mean's logit, and the test
/// objective with the training K every 10 epochs. 5 million steps of 32 on our 50,000
/// training images: 3,202 epochs of 1,562 steps, the fewest that reach them (5,001,524).
/// Figure 2's rows log the gradient's variance every 1,000 steps from 10 estimates on a
/// fixed minibatch (a choice: the script smooths the variance of successive training
/// gradients instead, which mixes the estimator's noise with the drift of the parameters).
///
/// Figure 4 (§6.3, structured prediction on MNIST): the conditional model (`--model cvae`,
/// bottom half given top half, a learned prior p(z|c) of two 200-unit tanh layers, the
/// decoder on [z, c]) at the same settings, rows named `cvae-*`: five estimators at K = 64
/// and 256, and the alpha sweep {0.1, 0.2, 0.5, 1} at K = 64, whose alpha = 0.5 is STL's
/// direction and alpha = 1 RWS-DReG, so those two are the `cvae-stl-k64` and
/// `cvae-rws-dreg-k64` rows, run once.
fn dreg() -> ProtocolSpec {
    let base = TrainConfig {
        batch: 32,
        lr: 3e-4,
        schedule: Schedule::Constant,
        adam: AdamConfig::default(),
        valid_size: 10_000,
        val_k: 10,
        epochs: 3202,
        ..base()
    };
    let tagged = |figure, name: String, kind, k, alpha: f64, grad_var| Row {
        name,
        cfg: TrainConfig {
            estimator: Estimator::new(kind, alpha),
            k,
            grad_var,
            ..base.clone()
        },
        paper_nll: None,
        paper_active_units: None,
        figure: Some(figure),
    };
    let mut rows = Vec::new();
    // Figure 2: each estimator against its DReG twin at K = 64 (Figure 5's caption for its
    // Omniglot twin states the K), the variance panels on top.
    let variance = Some(DREG_GRAD_VAR);
    for (kind, name) in [
        (EstimatorKind::Iwae, "iwae"),
        (EstimatorKind::IwaeDreg, "iwae-dreg"),
        (EstimatorKind::Rws, "rws"),
        (EstimatorKind::RwsDreg, "rws-dreg"),
        (EstimatorKind::Jvi, "jvi"),
        (EstimatorKind::JviDreg, "jvi-dreg"),
    ] {
        rows.push(tagged(
            "fig2",
            format!("{name}-k64"),
            kind,
            64,
            0.0,
            variance,
        ));
    }
    // Figure 3, left and middle: five estimators at K = 32 and 256.
    for k in [32, 256] {
        for (kind, name) in [
            (EstimatorKind::Iwae, "iwae"),
            (EstimatorKind::IwaeDreg, "iwae-dreg"),
            (EstimatorKind::Rws, "rws"),
            (EstimatorKind::RwsDreg, "rws-dreg"),
            (EstimatorKind::Stl, "stl"),
        ] {
            rows.push(tagged("fig3", format!("{name}-k{k}"), kind, k, 0.0, None));
        }
    }
    // Figure 3, right: DReG(alpha) at K = 64, relative to IWAE-DReG (Figure 2's row).
    for alpha in [0.5, 0.7, 0.8, 0.9, 1.0] {
        let name = format!("dreg-alpha{alpha}-k64");
        rows.push(tagged("fig3", name, EstimatorKind::Dreg, 64, alpha, None));
    }
    // Figure 4: the same on the conditional model.
    let cvae = |row: Row| Row {
        name: format!("cvae-{}", row.name),
        cfg: TrainConfig {
            model: ModelChoice::Cvae,
            arch: crate::model::resolve_arch(ModelChoice::Cvae, None, None, None, None)
                .expect("the conditional model's default shape"),
            ..row.cfg
        },
        ..row
    };
    for k in [64, 256] {
        for (kind, name) in [
            (EstimatorKind::Iwae, "iwae"),
            (EstimatorKind::IwaeDreg, "iwae-dreg"),
            (EstimatorKind::Rws, "rws"),
            (EstimatorKind::RwsDreg, "rws-dreg"),
            (EstimatorKind::Stl, "stl"),
        ] {
            let r = tagged("fig4", format!("{name}-k{k}"), kind, k, 0.0, None);
            rows.push(cvae(r));
        }
    }
    for alpha in [0.1, 0.2] {
        let name = format!("dreg-alpha{alpha}-k64");
        rows.push(cvae(tagged(
            "fig4",
            name,
            EstimatorKind::Dreg,
            64,
            alpha,
            None,
        )));
    }
    ProtocolSpec {
        protocol: Protocol::Dreg,
        rows,
        selection: Selection::Last,
        source: "Tucker, Lawson, Gu & Maddison (2019), sections 6.2 and 6.3, Figures 2, 3 and 4 (curves only: no table to compare against); optimizer, learning rate and batch from the authors' training script",
        eval_k: 5000,
        seeds: 3,
        test_every: Some(10),
        test_k_is_training_k: true,
    }
}

/// Figure 2's variance logging: every 1,000 steps (5,000 points over 5 million steps, at
/// 1 % more passes), 10 estimates each.
pub const DREG_GRAD_VAR: GradVarLog = GradVarLog {
    every: 1000,
    reps: 10,
};

/// Ruiz et al. (2021): IWAE against the coupled chains at equal particles per set (K = 10
/// here). The slides give no schedule: we use Adam at lr 1e-3, batch 100, 500 epochs.
fn ruiz() -> ProtocolSpec {
    let kinds = [
        (EstimatorKind::Iwae, "iwae"),
        (EstimatorKind::CoupledPimh, "coupled-pimh"),
        (EstimatorKind::CoupledIsir, "coupled-isir"),
        (EstimatorKind::CoupledDisir, "coupled-disir"),
    ];
    let cfg = TrainConfig {
        k: RUIZ_PARTICLES,
        batch: 100,
        schedule: Schedule::Constant,
        adam: AdamConfig::default(),
        valid_size: 10_000,
        val_k: 10,
        epochs: 500,
        ..base()
    };
    ProtocolSpec {
        protocol: Protocol::Ruiz,
        rows: rows_per_estimator(&kinds, cfg),
        selection: Selection::Last,
        source: "Ruiz, Titsias, Cemgil & Doucet (2021), MNIST experiment (slides: curves only; schedule our choice)",
        eval_k: 5000,
        seeds: 1,
        test_every: None,
        test_k_is_training_k: false,
    }
}

/// Particles per set of the `ruiz` rows, IWAE's K beside them.
pub const RUIZ_PARTICLES: usize = 10;
