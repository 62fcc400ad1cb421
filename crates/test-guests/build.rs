//! Builds every guest policy from source before the tests that load them:
//! the Rust examples in `policies/` and the test guests in `tests/guests/`
//! (hostile, wrong-world, lookups, spin) with `cargo build --target
//! wasm32-wasip2 --release`, and the Python example with componentize-py.
//! The components land in `<target dir>/wasm-guests`, a target dir of their
//! own so that the nested cargo never waits on the lock of the build that
//! runs this script.

use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../..").canonicalize()?;
    for watched in ["policies", "tests/guests", "crates/policy-sdk"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root.join("target"),
    }
    .join("wasm-guests");
    cargo_build(&root.join("policies/Cargo.toml"), &target, &["--workspace"])?;
    // spin alone: built with the others, it would get the SDK's `std`
    // feature that they enable (features are unified over what one build
    // selects), and with it WASI.
    let guests = root.join("tests/guests/Cargo.toml");
    cargo_build(&guests, &target, &["--workspace", "--exclude", "spin"])?;
    cargo_build(&guests, &target, &["--package", "spin"])?;
    let python = target.join("require_labels_py.wasm");
    componentize_py(&root, &python)?;
    let release = target.join("wasm32-wasip2/release");
    let consts = [
        ("VM_GUARD", release.join("vm_guard.wasm")),
        ("PROMPT_REVIEW", release.join("prompt_review.wasm")),
        ("USER_GUARD", release.join("user_guard.wasm")),
        ("USER_MANAGER", release.join("user_manager.wasm")),
        ("LOOKUPS", release.join("lookups.wasm")),
        ("HOSTILE", release.join("hostile.wasm")),
        ("SPIN", release.join("spin.wasm")),
        ("WRONG_WORLD", release.join("wrong_world.wasm")),
        ("REQUIRE_LABELS_PY", python),
    ];
    let mut out = String::new();
    for (name, path) in consts {
        if !path.exists() {
            return Err(format!("{} was not built", path.display()).into());
        }
        out.push_str(&format!(
            "/// Path of the built component `{}`.\n",
            path.display()
        ));
        out.push_str(&format!(
            "pub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR")?).join("guests.rs"), out)?;
    Ok(())
}

/// Runs `cargo build` for a guest workspace with its own settings and none
/// of the outer build's (flags, wrappers such as clippy's, target dir)
/// leaking in.
fn cargo_build(manifest: &Path, target: &Path, select: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .args(select)
        // From the workspace's own directory, so that its
        // `.cargo/config.toml` (the policies' stack size) applies.
        .current_dir(manifest.parent().unwrap_or(manifest))
        .env("CARGO_TARGET_DIR", target)
        .status()?;
    if !status.success() {
        return Err(format!(
            "building {} failed; is the wasm32-wasip2 target installed (rustup target add wasm32-wasip2)?",
            manifest.display()
        )
        .into());
    }
    Ok(())
}

/// Builds the Python example into a component.
fn componentize_py(root: &Path, out: &Path) -> Result<()> {
    let source = root.join("policies/require-labels-py");
    let status = Command::new("componentize-py")
        .args(["-d", "../wit/0.1.0", "-w", "policy", "componentize", "app", "-o"])
        .arg(out)
        .current_dir(&source)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .map_err(|e| {
            format!("cannot run componentize-py ({e}); install it: pip install componentize-py==0.25.1")
        })?;
    if !status.success() {
        return Err(format!("componentize-py failed on {}", source.display()).into());
    }
    Ok(())
}
