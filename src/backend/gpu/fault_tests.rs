//! GPU faults as errors, on whatever adapter wgpu finds (lavapipe in CI): a shader that does
//! not compile, a lost device, a buffer beyond the adapter's limits, and the bound on
//! submissions in flight. Without an adapter they skip, except under CI=true.

use super::context::{GpuContext, MAX_IN_FLIGHT};
use super::pipelines::build_pipelines_from;
use super::shaders::Family;
use super::AdapterChoice;

/// The context of the best adapter, software included; None (skip) without one.
fn context() -> Option<GpuContext> {
    if super::list_adapters().is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true but wgpu found no adapter: install mesa-vulkan-drivers"
        );
        eprintln!("SKIPPED: no GPU adapter");
        return None;
    }
    let choice = AdapterChoice {
        allow_software: true,
        ..Default::default()
    };
    Some(GpuContext::new(&choice).expect("the adapter opens"))
}

#[test]
fn a_shader_that_does_not_compile_is_an_error_naming_its_file() {
    let Some(ctx) = context() else { return };
    let e = build_pipelines_from(&ctx.device, ctx.shader_checks, |family| match family {
        Family::Vae => "fn log_weights( { this is not WGSL".to_string(),
        f => f.source(ctx.subgroups),
    })
    .err()
    .expect("broken WGSL must fail");
    let e = format!("{e:#}");
    assert!(
        e.contains("shaders/vae.wgsl") && e.contains("compile"),
        "{e}"
    );
    assert!(e.contains("--backend cpu"), "{e}");
    // The device is still usable afterwards: the error went to the scope, not the handler.
    ctx.check().unwrap();
    assert!(
        build_pipelines_from(&ctx.device, ctx.shader_checks, |f| f.source(ctx.subgroups)).is_ok()
    );
}

#[test]
fn a_lost_device_turns_later_operations_into_errors() {
    let Some(ctx) = context() else { return };
    let buf = ctx.storage("probe", 4);
    assert_eq!(ctx.read(&buf, 0, 4).unwrap(), vec![0.0; 4]);
    ctx.device.destroy();
    let e = format!("{:#}", ctx.read(&buf, 0, 4).unwrap_err());
    assert!(e.contains("lost"), "{e}");
    assert!(e.contains("--backend cpu"), "{e}");
    let enc = ctx.device.create_command_encoder(&Default::default());
    assert!(
        ctx.submit(enc).is_err(),
        "a submit after the loss must fail"
    );
}

#[test]
fn a_buffer_beyond_the_adapters_limits_is_refused_before_allocating() {
    let Some(ctx) = context() else { return };
    let e = ctx
        .check_binding(
            u64::MAX / 2,
            "the coefficients of --batch 100 x 10 samples (--k)",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("--batch") && e.contains("MiB"), "{e}");
    ctx.check_binding(1 << 10, "a small buffer").unwrap();
}

#[test]
fn the_host_never_queues_more_than_a_few_submissions() {
    let Some(ctx) = context() else { return };
    let buf = ctx.storage("work", 1 << 16);
    for _ in 0..20 {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&buf, 0, None);
        ctx.submit(enc).unwrap();
        assert!(ctx.in_flight() <= MAX_IN_FLIGHT, "{}", ctx.in_flight());
    }
    ctx.read(&buf, 0, 1).unwrap();
    assert_eq!(ctx.in_flight(), 0, "a readback waits for everything");
}
