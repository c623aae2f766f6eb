//! Every WGSL module parses and passes naga's validator (no GPU needed): the naga wgpu
//! re-exports (`wgpu::naga`), so the check runs the very copy, and features, that wgpu
//! compiles the shaders with.

use unbiased_vae::backend::gpu::shaders::Family;
use wgpu::naga;

#[test]
fn every_shader_family_validates_with_naga() {
    let mut failures = Vec::new();
    let variants = Family::ALL.iter().flat_map(|&f| {
        let mut v = vec![(f, false)];
        if f.has_subgroup_variant() {
            v.push((f, true));
        }
        v
    });
    for (family, subgroups) in variants {
        let src = family.source(subgroups);
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{} (subgroups {subgroups}): parse error:\n{}",
                    family.file(),
                    e.emit_to_string(&src)
                ));
                continue;
            }
        };
        let caps = if subgroups {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::default()
        };
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        if subgroups {
            validator
                .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        }
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{} (subgroups {subgroups}): validation error:\n{}",
                family.file(),
                e.emit_to_string(&src)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
