//! wgpu's OpenGL backend as the fallback: with no Vulkan driver in sight, `uvae devices` lists
//! the GL adapters and `--backend gpu` trains on one, saying so. Skips where no GL driver
//! exists, except under CI=true (CI installs Mesa's EGL and llvmpipe).

#![cfg(target_os = "linux")]

use crate::common::cli::uvae;

/// Hides every Vulkan driver from the loader (both its old and new variable).
const NO_VULKAN: [(&str, &str); 2] = [
    ("VK_ICD_FILENAMES", "/nonexistent/uvae-no-icd.json"),
    ("VK_DRIVER_FILES", "/nonexistent/uvae-no-icd.json"),
];

fn without_vulkan(args: &[&str]) -> std::process::Output {
    uvae()
        .envs(NO_VULKAN)
        .env_remove("WGPU_BACKEND")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn without_vulkan_the_gl_adapters_are_listed_and_used() {
    let o = without_vulkan(&["devices", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let adapters: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    if adapters.is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true but no GL adapter: install libegl1 libegl-mesa0 libgl1-mesa-dri"
        );
        eprintln!("SKIPPED: no GL adapter (install libegl1 libegl-mesa0 libgl1-mesa-dri)");
        return;
    }
    for a in &adapters {
        assert_eq!(a["backend"], "Gl", "Vulkan was hidden: {a}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gl");
    let o = without_vulkan(&[
        "train",
        "--backend",
        "gpu",
        "--epochs",
        "1",
        "--train-limit",
        "300",
        "--valid-size",
        "100",
        "--batch",
        "50",
        "--hidden",
        "16",
        "--latent",
        "4",
        "--val-k",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("no Vulkan, Metal or DX12 adapter").count(),
        1,
        "one notice: {stderr}"
    );
    assert!(stderr.contains("OpenGL backend"), "{stderr}");
    assert!(out.join("checkpoint.safetensors").exists());
}
