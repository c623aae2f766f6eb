//! `uvae reproduce`: a paper's experiment, its flags and its console lines.

use super::common::CommonArgs;
use super::console::{Mode, TrainConsole, WorkBar};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use unbiased_vae::apps::reproduce::{
    self, PlannedRun, Protocol, ProtocolObserver, ReproduceOptions, RunAction, RunResult,
};
use unbiased_vae::error::ConfigError;
use unbiased_vae::progress::Progress;
use unbiased_vae::train::TrainObserver;

#[derive(Args)]
pub struct ReproduceArgs {
    /// burda (Burda et al. 2016, Table 1), shi-cornish (Shi & Cornish 2021), dreg (Tucker et al. 2019), ruiz (Ruiz et al. 2021).
    #[arg(value_enum)]
    protocol: Protocol,
    #[command(flatten)]
    common: CommonArgs,
    /// The protocol's folder: one run directory per run, and results.md/.json/.csv/.png.
    /// Not needed with --list, which writes nothing.
    #[arg(long, required_unless_present = "list")]
    out: Option<PathBuf>,
    /// Epochs of every run instead of the paper's.
    #[arg(long, conflicts_with = "epochs_scale")]
    epochs: Option<usize>,
    /// The paper's epochs times F (at least 1 epoch), e.g. 0.01.
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    epochs_scale: Option<f64>,
    /// Seeds per row: 0..S [default: the paper's trials: 3 for dreg, 1 for the others].
    #[arg(long, value_name = "S")]
    seeds: Option<usize>,
    /// Rows to run, by name or by figure (fig2, fig3: all of that figure's rows; see --list).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    runs: Option<Vec<String>>,
    /// Take only every N-th run, starting at the I-th (1-based). Without it any number of
    /// processes share the folder anyway, each taking the next run no other holds.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Validation images held back (the protocol's unless given).
    #[arg(long, value_name = "N")]
    valid_size: Option<usize>,
    /// Samples per datapoint of the per-epoch validation bound (the protocol's unless given).
    #[arg(long, value_name = "K")]
    val_k: Option<usize>,
    /// Samples per datapoint of the final test bound [default: the paper's 5000].
    #[arg(long, value_name = "K")]
    eval_k: Option<usize>,
    /// Score the final test bound on the first N test images [default: all 10,000].
    #[arg(long, value_name = "N")]
    eval_limit: Option<usize>,
    /// Epochs between test bounds during training, for the curves [default: about 20 per run].
    #[arg(long, value_name = "N")]
    test_every: Option<usize>,
    /// Samples per datapoint of the test bound during training [default: 100].
    #[arg(long, value_name = "K")]
    test_k: Option<usize>,
    /// The test bound during training on the first N test images [default: all].
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// The rows that log the gradient variance (dreg's Figure 2): every N steps
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    grad_var_every: Option<usize>,
    /// Estimates per point of that logging [default: 10].
    #[arg(long, value_name = "R")]
    grad_var_reps: Option<usize>,
    /// Print the protocol's runs and their settings, and stop.
    #[arg(long)]
    list: bool,
    /// Only rewrite the results files from the finished runs in --out.
    #[arg(long, conflicts_with = "list")]
    report: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize), ConfigError> {
    let bad = || {
        ConfigError::range(
            "--shard",
            format!("'{s}'"),
            "give I/N with 1 <= I <= N, e.g. 2/4",
        )
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    Ok((
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    ))
}

impl ReproduceArgs {
    fn options(&self) -> Result<ReproduceOptions, ConfigError> {
        Ok(ReproduceOptions {
            // Only --list goes without --out (clap's rule), and it writes nothing.
            out: self.out.clone().unwrap_or_default(),
            epochs: self.epochs,
            epochs_scale: self.epochs_scale,
            seeds: self.seeds,
            runs: self.runs.clone(),
            shard: self.shard.as_deref().map(parse_shard).transpose()?,
            backend: Some(self.common.backend),
            adapter: self.common.adapter.clone(),
            threads: self.common.threads,
            data: self.common.data.clone(),
            binarize: self.common.binarize,
            image_shape: self.common.image_shape,
            train_limit: self.train_limit,
            valid_size: self.valid_size,
            val_k: self.val_k,
            eval_k: self.eval_k,
            eval_limit: self.eval_limit,
            test_every: self.test_every,
            test_k: self.test_k,
            test_limit: self.test_limit,
            grad_var_every: self.grad_var_every,
            grad_var_reps: self.grad_var_reps,
            stop: None,
        })
    }
}

/// The console of a protocol: a line per run, the training bars of `uvae train`, a bar
/// for each test bound.
struct ProtocolConsole {
    mode: Mode,
    train: TrainConsole,
    score: WorkBar,
}

impl ProtocolObserver for ProtocolConsole {
    fn on_run(&mut self, index: usize, total: usize, run: &PlannedRun, action: RunAction) {
        let what = match action {
            RunAction::Skipped => "finished earlier, skipped".to_string(),
            RunAction::Started => format!("training {} epochs", run.cfg.epochs),
            RunAction::Resumed => format!("resuming to {} epochs", run.cfg.epochs),
            RunAction::Scored => "trained; scoring".to_string(),
        };
        self.train = TrainConsole::new(self.mode);
        self.train.line(&format!(
            "[{index}/{total}] {} ({}): {what}",
            run.name,
            reproduce::results::describe(&run.cfg)
        ));
    }
    fn on_busy(&mut self, index: usize, total: usize, run: &PlannedRun, holder: &str) {
        self.train.line(&format!(
            "[{index}/{total}] {}: another worker ({holder}) holds it; going on with the next",
            run.name
        ));
    }
    fn on_result(&mut self, r: &RunResult) {
        self.train.line(&format!(
            "  {}: test NLL {:.2} ± {:.2} (L_{} on {} images, epoch {}), {:.2} samples per datapoint per step",
            r.run,
            -r.test_lk,
            r.test_lk_stderr,
            r.eval.k,
            r.test_images,
            r.scored_epoch,
            r.measured_samples
        ));
    }
    fn on_failure(&mut self, run: &PlannedRun, error: &anyhow::Error) {
        self.train.warn(&format!(
            "  {} failed: {error:#}; going on with the next run",
            run.name
        ));
    }
    fn training(&mut self) -> &mut dyn TrainObserver {
        &mut self.train
    }
    fn scoring(&mut self) -> &mut dyn Progress {
        &mut self.score
    }
}

pub fn run(a: ReproduceArgs) -> Result<()> {
    let mut opts = a.options()?;
    let spec = a.protocol.spec();
    if a.list {
        println!("{} ({}):", a.protocol.name(), spec.source);
        for r in reproduce::selected(spec.plan(&opts)?, &opts) {
            let figure = r.row.figure.map_or(String::new(), |f| format!("{f}: "));
            println!(
                "  {:<26} {figure}{} epochs, {}",
                r.name,
                r.cfg.epochs,
                reproduce::results::describe(&r.cfg)
            );
        }
        return Ok(());
    }
    let outcome = if a.report {
        reproduce::report(a.protocol, &opts)?
    } else {
        opts.stop = Some(super::train::stop_on_signals()?);
        let mode = Mode::detect(a.common.quiet);
        let mut console = ProtocolConsole {
            mode,
            train: TrainConsole::new(mode),
            score: WorkBar::new(mode),
        };
        reproduce::reproduce(a.protocol, &opts, &mut console)?
    };
    let names: Vec<String> = outcome
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    println!(
        "done: {} of {} runs finished; wrote {}",
        outcome.finished,
        outcome.total,
        names.join(", ")
    );
    Ok(())
}
