//! `generate`: the man pages and shell completions the .deb ships are produced by the binary itself and cover
//! every user-facing subcommand, while `generate` stays out of `--help` and the pages.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mongo-backup-agent");

/// The subcommands an operator or the packaging relies on; each must have a page and appear in the top page.
const SUBCOMMANDS: &[&str] = &[
    "backup", "restore", "list", "verify", "export", "prune", "inspect", "check", "serve", "run-now", "status",
    "trigger",
];

fn generate(args: &[&str], dir: &Path) {
    let out = Command::new(BIN).arg("generate").args(args).arg(dir).output().unwrap();
    assert!(out.status.success(), "generate {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn man_pages_cover_every_subcommand_and_hide_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man"); // does not exist yet: generate creates it
    generate(&["man"], &dir);
    let top = std::fs::read_to_string(dir.join("mongo-backup-agent.1")).unwrap();
    assert!(top.starts_with(".ie") || top.contains(".TH mongo-backup-agent 1"), "not a roff page:\n{top}");
    for sub in SUBCOMMANDS {
        assert!(
            top.contains(&format!("mongo\\-backup\\-agent\\-{}(1)", sub.replace('-', "\\-"))),
            "top page does not list {sub}:\n{top}"
        );
        let page = std::fs::read_to_string(dir.join(format!("mongo-backup-agent-{sub}.1")))
            .unwrap_or_else(|e| panic!("no page for {sub}: {e}"));
        assert!(page.contains(".SH NAME"), "{sub} page has no NAME section");
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names.len(), SUBCOMMANDS.len() + 1, "unexpected pages: {names:?}");
    assert!(!top.contains("generate"), "the hidden generate subcommand leaked into the man page");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, file) in
        [("bash", "mongo-backup-agent.bash"), ("zsh", "_mongo-backup-agent"), ("fish", "mongo-backup-agent.fish")]
    {
        let dir = tmp.path().join(shell);
        generate(&["completions", shell], &dir);
        let script = std::fs::read_to_string(dir.join(file)).unwrap();
        for word in ["run-now", "trigger", "config", "verbose"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        assert!(!script.contains("generate"), "{shell} completion offers the hidden generate subcommand");
    }
    let bash = Command::new("bash").arg("-n").arg(tmp.path().join("bash/mongo-backup-agent.bash")).status().unwrap();
    assert!(bash.success(), "bash cannot parse the bash completion");
}

#[test]
fn generate_is_hidden_from_help_and_rejects_unknown_shells() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("trigger") && !help.contains("generate"), "{help}");
    let out = Command::new(BIN).args(["generate", "completions", "tcsh", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}
