//! Runs one `#[ignore]`d test of the current test binary in a child process with its own environment.
//!
//! Process-wide settings (`SSL_CERT_FILE`, a peak-RSS measurement) cannot be isolated inside one test process, so
//! such a test is split: the child body is `#[ignore]`d (it must not run on its own, without its parent's setup) and
//! its parent test, which CI does run, launches it here with `--exact --ignored` and judges its output.

use std::process::{Command, Output};

/// Runs test `name` of this binary with `flag` set (so the child knows its parent launched it) and `envs`.
pub fn run_ignored(name: &str, flag: &str, envs: &[(&str, String)]) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(flag, "1")
        .envs(envs.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .output()
        .unwrap()
}
