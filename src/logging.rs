//! Logging: structured records to journald under systemd, plain lines to stderr otherwise.

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the logger once per process. Under systemd (`JOURNAL_STREAM` set), or with `prefer_journal` when a
/// journal is running, records go to the journal with their key-value fields (backup id, phase, bytes); elsewhere
/// to stderr.
pub fn init(level: LevelFilter, prefer_journal: bool) {
    let journal_running = std::path::Path::new("/run/systemd/journal/socket").exists();
    let installed = if std::env::var_os("JOURNAL_STREAM").is_some() || (prefer_journal && journal_running) {
        systemd_journal_logger::JournalLog::new()
            .map(|j| j.with_syslog_identifier("mongo-backup-agent".into()))
            .and_then(|j| j.install().map_err(std::io::Error::other))
            .is_ok()
    } else {
        false
    };
    if !installed {
        let _ = log::set_boxed_logger(Box::new(StderrLog));
    }
    log::set_max_level(level);
}

struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) && record.target().starts_with("mongo_backup_agent") {
            eprintln!("{} {}", record.level().as_str().to_lowercase(), record.args());
        }
    }

    fn flush(&self) {}
}
