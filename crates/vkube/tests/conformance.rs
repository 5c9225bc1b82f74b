//! The fast subset of the upstream conformance suite (`tools/conformance/fast.txt`) against a
//! `vkube up` virtual cluster started from this build: every test in it passes.

use std::path::Path;
use std::process::Command;

#[test]
fn the_conformance_fast_subset_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let report = tempfile::tempdir().unwrap();
    let output = Command::new(root.join("tools/conformance/run.sh"))
        .env("SUBSET", "fast")
        .env("PROCS", "4")
        .env("TIMEOUT", "12m")
        .env("VKUBE", env!("CARGO_BIN_EXE_vkube"))
        .env("REPORT_DIR", report.path())
        .env_remove("KUBECONFIG")
        .output()
        .expect("tools/conformance/run.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().find(|l| l.starts_with("conformance: ")).unwrap_or_else(|| {
        panic!(
            "no summary; stdout:\n{stdout}\nstderr:\n{}\nlog tail:\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(report.path().join("e2e.log"))
                .map(|l| l.lines().rev().take(40).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        )
    });
    let count = |word: &str| -> usize {
        summary
            .split(", ")
            .find_map(|part| part.trim_start_matches("conformance: ").strip_suffix(word).map(str::trim))
            .and_then(|n| n.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let expected = std::fs::read_to_string(root.join("tools/conformance/fast.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    assert_eq!(count("failed"), 0, "{stdout}");
    assert!(count("passed") >= expected, "every listed test ran and passed: {summary} (listed: {expected})\n{stdout}");
}
