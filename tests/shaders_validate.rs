//! Every WGSL module parses and passes naga's validator (no GPU needed).

use unbiased_vae::backend::gpu::shaders::Family;

#[test]
fn every_shader_family_validates_with_naga() {
    let mut failures = Vec::new();
    for family in Family::ALL {
        let src = family.source();
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{}: parse error:\n{}",
                    family.file(),
                    e.emit_to_string(&src)
                ));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{}: validation error:\n{}",
                family.file(),
                e.emit_to_string(&src)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
