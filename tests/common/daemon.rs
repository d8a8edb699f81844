//! The daemon as systemd runs it: a `serve` child process with a temp control socket, driven by the real CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cli;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mongo-backup-agent");

/// A `serve` child process and its files.
pub struct Daemon {
    /// The `serve` process.
    pub child: Child,
    /// Its directory: config, socket, log and store.
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Writes `text` as the config and starts `serve` on the socket it names (`dir/control.sock`); returns once
    /// `status` answers.
    pub fn start_text(dir: &Path, text: &str) -> Daemon {
        let config = dir.join("config.toml");
        std::fs::write(&config, text).unwrap();
        let daemon = Daemon::spawn(dir, &config, &dir.join("control.sock"), &[]);
        daemon.wait_ready();
        daemon
    }

    /// Writes a config (`extra` is appended verbatim) and starts `serve`; returns once `status` answers.
    pub fn start(dir: &Path, uri: &str, include: &[String], extra: &str) -> Daemon {
        Daemon::start_with_env(dir, uri, include, extra, &[])
    }

    /// [`Daemon::start`] with extra environment for the daemon process (test-only fault injection).
    pub fn start_with_env(dir: &Path, uri: &str, include: &[String], extra: &str, env: &[(&str, &str)]) -> Daemon {
        let socket = dir.join("control.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(dir, uri, include, extra)).unwrap();
        let daemon = Daemon::spawn(dir, &config, &socket, env);
        daemon.wait_ready();
        daemon
    }

    pub fn spawn(dir: &Path, config: &Path, socket: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_binary(Path::new(BIN), dir, config, socket, env)
    }

    pub fn spawn_binary(bin: &Path, dir: &Path, config: &Path, socket: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child, dir: dir.to_path_buf(), config: config.to_path_buf(), socket: socket.to_path_buf() }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.cli(&["status"]).0 == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("daemon did not answer status within 60 s; log:\n{}", self.log());
    }

    /// Runs a client command against this daemon's socket.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        cli(&full)
    }

    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        Command::new(BIN)
            .args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the daemon to exit; returns its exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (i32, Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon still running after {limit:?}; log:\n{}", self.log());
    }

    /// Waits until `status` shows a running backup that is past connecting.
    pub fn wait_backing_up(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let (_, out, _) = self.cli(&["status", "--json"]);
            if let Ok(reply) = serde_json::from_str::<serde_json::Value>(&out)
                && let Some(summary) = reply["running"]["summary"].as_str()
                && summary.starts_with("dumping")
            {
                return reply["running"]["id"].as_str().unwrap().to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no backup reached the dumping phase; log:\n{}", self.log());
    }

    /// Waits until the daemon's log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in the log within 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The manifest of backup `id`, parsed.
    pub fn manifest(&self, id: &str) -> serde_json::Value {
        let path = self.manifests().into_iter().find(|m| m.parent().unwrap().ends_with(id));
        let path = path.unwrap_or_else(|| panic!("no manifest for {id}: {:?}", self.manifests()));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn manifests(&self) -> Vec<PathBuf> {
        find(&self.dir.join("store"), "manifest.json")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn config_text(dir: &Path, uri: &str, include: &[String], extra: &str) -> String {
    format!(
        "[mongodb]\nuri = {uri:?}\n[storage]\npath = {:?}\nprefix = \"t\"\n[daemon]\nsocket = {:?}\n\
         [backup]\ninclude = {include:?}\noplog = \"off\"\n{extra}",
        dir.join("store").display().to_string(),
        dir.join("control.sock").display().to_string(),
    )
}

pub fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                find(&path, name)
            } else if path.file_name().is_some_and(|n| n == name) {
                vec![path]
            } else {
                Vec::new()
            }
        })
        .collect()
}
