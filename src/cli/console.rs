//! What the console shows while work runs: progress bars on a terminal, plain line-buffered
//! lines when stderr is a log or a pipe (CI, `| tee`), never both; `--quiet` shows only
//! errors, warnings and the final line.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use unbiased_vae::progress::Progress;
use unbiased_vae::train::{EpochMetrics, TrainObserver};

/// How the console reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars on stderr (a terminal), result lines on stdout.
    Bars,
    /// Result lines only: stderr is not a terminal, so bars would litter the log.
    Lines,
    /// Errors, warnings and the final line only.
    Quiet,
}

impl Mode {
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("=> ")
}

/// Stderr in [`Mode::Bars`], nowhere otherwise.
fn target(mode: Mode) -> ProgressDrawTarget {
    if mode == Mode::Bars {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar of `len` steps (None: a spinner) drawn as `mode` says.
fn bar(mode: Mode, len: Option<u64>, template: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(len, target(mode));
    pb.set_style(style(template));
    pb
}

/// The console of `uvae train`: a bar for the epoch and one for the whole run, and the
/// epoch lines on stdout.
pub struct TrainConsole {
    mode: Mode,
    multi: MultiProgress,
    run: Option<ProgressBar>,
    epoch: Option<ProgressBar>,
    epochs: usize,
    batch: usize,
    epoch_start: Instant,
    objective: Option<f64>,
}

impl TrainConsole {
    pub fn new(mode: Mode) -> Self {
        TrainConsole {
            mode,
            multi: MultiProgress::with_draw_target(target(mode)),
            run: None,
            epoch: None,
            epochs: 0,
            batch: 0,
            epoch_start: Instant::now(),
            objective: None,
        }
    }

    /// Prints `line` to stdout above the bars (not at all when quiet).
    pub fn line(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => println!("{line}"),
            Mode::Bars => self.multi.suspend(|| println!("{line}")),
        }
    }

    /// Prints `line` to stderr above the bars, whatever the mode.
    pub fn warn(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    fn refresh(&self, step: usize) {
        if let Some(pb) = &self.epoch {
            let secs = self.epoch_start.elapsed().as_secs_f64().max(1e-9);
            let rate = (step * self.batch) as f64 / secs;
            let obj = self
                .objective
                .map_or_else(String::new, |o| format!("  objective {o:.3}"));
            pb.set_message(format!("{rate:.0} datapoints/s{obj}"));
        }
    }
}

impl TrainObserver for TrainConsole {
    fn on_backend(&mut self, description: &str) {
        self.line(&format!("backend: {description}"));
    }

    fn on_start(&mut self, epochs: usize, steps_per_epoch: usize, batch: usize) {
        self.batch = batch;
        self.epochs = epochs;
        let run = self.multi.add(bar(
            self.mode,
            Some((epochs * steps_per_epoch) as u64),
            "run   [{bar:30}] epoch {prefix} {percent:>3}%  elapsed {elapsed}, ETA {eta}",
        ));
        run.set_prefix(format!("0/{epochs}"));
        let epoch = self.multi.add(bar(
            self.mode,
            Some(steps_per_epoch as u64),
            "epoch [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
        ));
        epoch.enable_steady_tick(Duration::from_millis(250));
        self.epoch_start = Instant::now();
        self.run = Some(run);
        self.epoch = Some(epoch);
    }

    fn on_step(&mut self, epoch: usize, step: usize, running_objective: Option<f64>) {
        if step == 1 {
            self.objective = None;
            if let Some(run) = &self.run {
                run.set_prefix(format!("{epoch}/{}", self.epochs));
            }
        }
        if running_objective.is_some() {
            self.objective = running_objective;
        }
        if let Some(pb) = &self.epoch {
            pb.set_position(step as u64);
        }
        if let Some(run) = &self.run {
            run.inc(1);
        }
        self.refresh(step);
    }

    fn on_validation(&mut self, _epoch: usize, images: usize) {
        if let Some(pb) = &self.epoch {
            pb.set_message(format!("validating on {images} datapoints"));
        }
    }

    fn on_epoch(&mut self, m: &EpochMetrics) {
        // The next epoch's first step starts now (validation is behind us).
        self.epoch_start = Instant::now();
        self.line(&epoch_line(m));
        if let Some(c) = &m.chains {
            self.line(&format!(
                "           chains met at t = {:.2} on average (90% by {}, max {}); {:.1} samples per datapoint used, {:.1} computed",
                c.meeting_time_mean, c.meeting_time_p90, c.meeting_time_max, m.samples_per_datapoint, c.computed_samples_per_datapoint
            ));
            if c.capped > 0 {
                self.warn(&format!(
                    "warning: epoch {}: {} datapoint-steps reached --max-iters before their chains met; those gradients are truncated and biased (raise --max-iters)",
                    m.epoch, c.capped
                ));
            }
        }
    }
}

impl Drop for TrainConsole {
    fn drop(&mut self) {
        for pb in [&self.epoch, &self.run].into_iter().flatten() {
            pb.finish_and_clear();
        }
    }
}

/// One epoch's console line.
fn epoch_line(m: &EpochMetrics) -> String {
    let exact = match (m.exact_log_px, m.optimum_log_px) {
        (Some(e), Some(o)) => format!("  exact log p(x) {e:>9.3} (optimum {o:.3})"),
        (Some(e), None) => format!("  exact log p(x) {e:>9.3}"),
        _ => String::new(),
    };
    format!(
        "epoch {:>3}  objective {:>9.3}  val L_{} {:>9.3} ± {:.3}{exact}  {:>6.1} s  {:>8.0} datapoints/s",
        m.epoch, m.train_objective, m.val_k, m.val_lk, m.val_lk_stderr, m.seconds, m.datapoints_per_s
    )
}

/// A bar over one piece of library work (an evaluation, a statistics run).
pub struct WorkBar {
    mode: Mode,
    bar: Option<ProgressBar>,
}

impl WorkBar {
    pub fn new(mode: Mode) -> Self {
        WorkBar { mode, bar: None }
    }

    /// A spinner for work that reports no steps (the parity suite, a benchmark).
    pub fn spinner(mode: Mode, what: &str) -> Self {
        let pb = bar(mode, None, "{spinner} {msg}  {elapsed}");
        pb.set_message(what.to_string());
        if mode == Mode::Bars {
            pb.enable_steady_tick(Duration::from_millis(120));
        }
        WorkBar {
            mode,
            bar: Some(pb),
        }
    }
}

impl Progress for WorkBar {
    fn start(&mut self, what: &str, total: u64, unit: &str) {
        let pb = bar(
            self.mode,
            Some(total),
            &format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"),
        );
        pb.set_prefix(what.to_string());
        self.bar = Some(pb);
    }

    fn advance(&mut self, done: u64) {
        if let Some(pb) = &self.bar {
            pb.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
    }
}

impl Drop for WorkBar {
    fn drop(&mut self) {
        self.finish();
    }
}
