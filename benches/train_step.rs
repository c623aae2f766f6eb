//! Training-step throughput on the CPU backend at the peer benchmark's settings.
//! Run: cargo bench --bench train_step [-- --threads N]
//! Prints one JSON line per configuration (median of repeats after warm-up).

use unbiased_vae::apps::bench;
use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::data;
use unbiased_vae::estimators::{Estimator, EstimatorKind};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ds = data::load_or_bundled(None, 400)?;
    let params = bench::peer_model(&ds);
    let configs = [
        (EstimatorKind::Iwae, 50, 100, 3, 10),
        (EstimatorKind::IwaeDreg, 50, 100, 3, 10),
        (EstimatorKind::Iwae, 5, 20, 20, 200),
        (EstimatorKind::Elbo, 1, 100, 20, 200),
    ];
    for (kind, k, batch, warmup, steps) in configs {
        let mut backend = CpuBackend::new(&params.layout, &params.values, threads)?;
        let config = bench::BenchConfig {
            estimator: Estimator::new(kind, 0.0),
            k,
            batch,
        };
        let r = bench::train_steps(&mut backend, &ds, &config, warmup, steps, 5)?;
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
