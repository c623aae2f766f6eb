use unbiased_vae::backend::cpu::CpuBackend;
use unbiased_vae::{
    bench, data,
    estimators::{Estimator, EstimatorKind},
};
fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let k: usize = a[1].parse()?;
    let b: usize = a[2].parse()?;
    let steps: usize = a[3].parse()?;
    let ds = data::load_or_bundled(None, 400)?;
    let p = bench::peer_model(&ds);
    let mut be = CpuBackend::new(&p.layout, &p.values, 0)?;
    let r = bench::train_steps(
        &mut be,
        &ds,
        Estimator::new(EstimatorKind::Iwae, 0.0),
        k,
        b,
        10,
        steps,
        1,
    )?;
    println!("{:.0}", r.datapoints_per_s);
    Ok(())
}
