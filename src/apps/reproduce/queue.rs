//! A protocol as a work queue. Every worker (`uvae reproduce` process, on one machine or
//! many sharing the folder) walks the runs of its selection in `--list` order and takes the
//! first that is neither finished (its result.json) nor held by another process (its run
//! directory's lock, [`DirLock`]); it keeps the lock while it trains, scores and writes the
//! result, then looks again from the top. A worker that dies releases its run with its
//! lock, and the next worker that looks resumes it from its training state. A worker stops
//! when nothing is left for it to take. The results files are rewritten under the folder's
//! own lock, one rewrite at a time, each from the result.json files on disk then, so an
//! older table never replaces a newer one.

use super::{
    is_finished, results, run_one, EvalSettings, PlannedRun, ProtocolObserver, ProtocolSpec,
    ReproduceOptions, RunAction,
};
use crate::run_lock::{Claim, DirLock, RESULTS_LOCK, RUN_LOCK};
use anyhow::Result;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// What every run of a protocol shares in this process.
pub(super) struct Work<'a> {
    pub spec: &'a ProtocolSpec,
    /// Every run of the protocol (the results files are over all of them).
    pub all: &'a [PlannedRun],
    pub eval: &'a EvalSettings,
    pub opts: &'a ReproduceOptions,
}

/// What a worker did.
pub(super) struct Done {
    pub ran: Vec<(String, RunAction)>,
    /// `name: error` of each run that failed here.
    pub failed: Vec<String>,
}

impl Work<'_> {
    /// Rewrites results.md/.json/.csv/.png over the finished runs, holding the folder's lock.
    pub fn write_results(&self) -> Result<(Vec<PathBuf>, usize)> {
        let _lock = DirLock::wait(&self.opts.out, RESULTS_LOCK)?;
        results::write(self.spec, self.all, self.eval, &self.opts.out)
    }

    fn stopped(&self) -> bool {
        self.opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// Takes runs of `mine` until none is left that is neither finished nor held elsewhere.
/// One run's failure (a divergence, a refused directory) leaves the others to run; an
/// interruption (SIGINT, SIGTERM) writes the results and stops.
pub(super) fn run(
    work: &Work,
    mine: &[PlannedRun],
    observer: &mut dyn ProtocolObserver,
) -> Result<Done> {
    let mut done = Done {
        ran: Vec::new(),
        failed: Vec::new(),
    };
    // Runs this worker has dealt with (finished, skipped or failed: never taken twice), and
    // those whose holder it has reported.
    let mut seen: HashSet<usize> = HashSet::new();
    let mut reported: HashSet<usize> = HashSet::new();
    let total = mine.len();
    'look: loop {
        for (i, run) in mine.iter().enumerate() {
            if seen.contains(&i) {
                continue;
            }
            // Finished runs are skipped without their lock: result.json is written last and
            // atomically, and never removed. A damaged one fails its run, not the worker.
            let finished = match is_finished(run, work.eval) {
                Ok(f) => f,
                Err(e) => {
                    seen.insert(i);
                    observer.on_failure(run, &e);
                    done.failed.push(format!("{}: {e:#}", run.name));
                    continue;
                }
            };
            if finished {
                // One line per run: a run seen held was announced, its end is another's.
                if !reported.contains(&i) {
                    observer.on_run(i + 1, total, run, RunAction::Skipped);
                }
                done.ran.push((run.name.clone(), RunAction::Skipped));
                seen.insert(i);
                continue;
            }
            let what = format!("run directory {}", run.cfg.out.display());
            let lock = match DirLock::try_claim(&run.cfg.out, RUN_LOCK, &what)? {
                Claim::Held(lock) => lock,
                Claim::Busy(holder) => {
                    if reported.insert(i) {
                        observer.on_busy(i + 1, total, run, &holder);
                    }
                    continue;
                }
            };
            seen.insert(i);
            let outcome = run_one(run, &lock, work, i + 1, total, observer);
            drop(lock);
            match outcome {
                Ok(action) => {
                    done.ran.push((run.name.clone(), action));
                    if action != RunAction::Skipped {
                        work.write_results()?;
                    }
                }
                Err(e) if work.stopped() => {
                    work.write_results()?;
                    return Err(e.context(
                        "the protocol was interrupted; rerun the same command to continue",
                    ));
                }
                Err(e) => {
                    observer.on_failure(run, &e);
                    done.failed.push(format!("{}: {e:#}", run.name));
                }
            }
            // From the top again: a run a dead worker released comes before later ones.
            continue 'look;
        }
        return Ok(done);
    }
}
