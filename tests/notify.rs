//! Notifications for real: a loopback HTTP server (hyper) receives the webhook and Slack payloads, aiosmtpd
//! (tests/harness/smtp-sink.py) receives the e-mail in clear, over STARTTLS and over SMTPS with a login, and dead or
//! silent receivers cost no more than `notify.timeout` and never an error to the caller.
//!
//! The TLS cases trust the sink's certificate through `SSL_CERT_FILE`, which is process-wide, so they run in a child
//! process of this test binary with its own environment, as tests/azure_keyless.rs does.

mod child;
mod common;

use std::path::{Path, PathBuf};

use common::http_receiver::{Answer, Receiver};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use mongo_backup_agent::backup::{BackupId, Outcome, RunReport};
use mongo_backup_agent::config::{ConfigError, EmailConfig, NotifyConfig, SmtpTls};
use mongo_backup_agent::notify::{Delivery, Notifier, NotifyError, summary};
use serde_json::Value;

const TOKEN: &str = "T0KEN-b7f3c9-SECRET";
const CHILD: &str = "MBA_NOTIFY_CHILD";

// --- reports and configs ------------------------------------------------------------------------------------

fn report(outcome: Outcome) -> RunReport {
    let started = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    RunReport {
        id: BackupId::parse("20260301T120000Z-a1b2c3").unwrap(),
        trigger: "ssh".into(),
        host: "db-vm-1".into(),
        store: "azure container backups".into(),
        started_at: started,
        finished_at: started + chrono::Duration::seconds(75),
        outcome,
        error: (outcome != Outcome::Success)
            .then(|| "reading shop.orders: connection <reset> & closed (is mongod running?)".into()),
        bytes_in: 5 << 20,
        bytes_out: if outcome == Outcome::Success { 1 << 20 } else { 0 },
        documents: 12_345,
    }
}

/// Writes a secret to a file in `dir` the way an operator would (with a trailing newline).
fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

fn config(dir: &Path, webhook: Option<String>, slack: Option<String>, timeout: Duration) -> NotifyConfig {
    NotifyConfig {
        webhook_url_file: webhook.map(|url| secret_file(dir, "webhook-url", &url)),
        slack_webhook_url_file: slack.map(|url| secret_file(dir, "slack-webhook-url", &url)),
        timeout,
        ..NotifyConfig::default()
    }
}

fn failure(deliveries: &[Delivery], channel: &str) -> String {
    let delivery = deliveries.iter().find(|d| d.channel == channel).unwrap_or_else(|| panic!("no {channel}"));
    let err = delivery.result.as_ref().expect_err("delivery should have failed");
    let text = err.to_string();
    assert!(!text.contains(TOKEN), "the URL's token leaked into the error: {text}");
    text
}

fn assert_all_ok(deliveries: &[Delivery], channels: &[&str]) {
    let names: Vec<_> = deliveries.iter().map(|d| d.channel).collect();
    assert_eq!(names, channels);
    for d in deliveries {
        assert!(d.result.is_ok(), "{}: {:?}", d.channel, d.result);
    }
}

// --- webhook and Slack --------------------------------------------------------------------------------------

#[tokio::test]
async fn webhook_and_slack_receive_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Answer::Status(200)).await;
    let config = config(
        dir.path(),
        Some(receiver.url(&format!("/hooks/backup?token={TOKEN}"))),
        Some(receiver.url(&format!("/services/T000/B000/{TOKEN}"))),
        Duration::from_secs(5),
    );
    let notifier = Notifier::new(&config).unwrap();
    assert_eq!(notifier.channels(), ["webhook", "slack"]);
    let failed = report(Outcome::Failed);
    assert_all_ok(&notifier.notify(&failed).await, &["webhook", "slack"]);

    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let webhook = seen.iter().find(|r| r.path == "/hooks/backup").expect("webhook request");
    assert_eq!(webhook.content_type, "application/json");
    let Value::Object(body) = &webhook.body else { panic!("webhook body is not an object: {:?}", webhook.body) };
    let Value::Object(fields) = serde_json::to_value(&failed).unwrap() else { unreachable!() };
    for (key, value) in &fields {
        assert_eq!(body.get(key), Some(value), "webhook field {key}");
    }
    assert_eq!(body.len(), fields.len() + 1, "the report's fields plus summary: {body:?}");
    assert_eq!(body["summary"], summary(&failed));
    assert_eq!(body["outcome"], "failed");
    let summary_text = body["summary"].as_str().unwrap();
    for part in ["FAILED", "db-vm-1", failed.id.as_str(), "1m 15s", "connection <reset> & closed", "trigger ssh"] {
        assert!(summary_text.contains(part), "summary lacks {part:?}: {summary_text}");
    }

    let slack = seen.iter().find(|r| r.path.starts_with("/services/")).expect("slack request");
    assert_eq!(slack.content_type, "application/json");
    let Value::Object(payload) = &slack.body else { panic!("slack body is not an object") };
    assert_eq!(payload.keys().collect::<Vec<_>>(), ["text"], "an incoming webhook takes {{\"text\": …}}");
    let text = payload["text"].as_str().unwrap();
    assert!(text.starts_with(":rotating_light: Backup "), "{text}");
    assert!(text.contains("connection &lt;reset&gt; &amp; closed"), "Slack's control characters escaped: {text}");
    assert!(text.contains(failed.id.as_str()) && text.contains("db-vm-1"), "{text}");
}

#[tokio::test]
async fn outcomes_follow_on_failure_and_on_success_and_cancelled_never_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Answer::Status(204)).await;
    let mut config = config(dir.path(), Some(receiver.url("/hook")), None, Duration::from_secs(5));

    let default = Notifier::new(&config).unwrap();
    assert!(default.notify(&report(Outcome::Success)).await.is_empty(), "on_success is off by default");
    assert!(default.notify(&report(Outcome::Cancelled)).await.is_empty(), "a shutdown does not page anyone");
    assert!(receiver.seen().is_empty());

    config.on_success = true;
    config.on_failure = false;
    let success_only = Notifier::new(&config).unwrap();
    assert!(success_only.notify(&report(Outcome::Failed)).await.is_empty());
    let success = report(Outcome::Success);
    assert_all_ok(&success_only.notify(&success).await, &["webhook"]);
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["outcome"], "success");
    assert_eq!(seen[0].body["error"], Value::Null);
    let text = seen[0].body["summary"].as_str().unwrap();
    assert!(text.contains("succeeded") && text.contains("5.00 MiB") && text.contains("12345 documents"), "{text}");
}

#[tokio::test]
async fn dead_silent_and_refusing_receivers_cost_at_most_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let silent = Receiver::start(Answer::Never).await;
    let config = config(
        dir.path(),
        Some(format!("http://{closed}/hook/{TOKEN}")),
        Some(silent.url(&format!("/services/{TOKEN}"))),
        Duration::from_secs(1),
    );
    let notifier = Notifier::new(&config).unwrap();
    let start = Instant::now();
    let deliveries = notifier.notify(&report(Outcome::Failed)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(3), "took {took:?}");
    let refused = failure(&deliveries, "webhook");
    assert!(refused.contains("HTTP request failed") && refused.to_lowercase().contains("connect"), "{refused}");
    assert!(matches!(deliveries[1].result, Err(NotifyError::Timeout(_))), "{:?}", deliveries[1].result);
    assert!(failure(&deliveries, "slack").contains("notify.timeout"));
    assert_eq!(silent.seen().len(), 1, "the silent receiver did get the request");

    let refusing = Receiver::start(Answer::Status(404)).await;
    let config = config_for_slack(dir.path(), refusing.url(&format!("/services/{TOKEN}")));
    let deliveries = Notifier::new(&config).unwrap().notify(&report(Outcome::Failed)).await;
    assert!(matches!(deliveries[0].result, Err(NotifyError::Status(s)) if s == 404));
    assert!(failure(&deliveries, "slack").contains("HTTP 404"));
}

fn config_for_slack(dir: &Path, url: String) -> NotifyConfig {
    config(dir, None, Some(url), Duration::from_secs(5))
}

#[test]
fn bad_secrets_are_config_errors_that_do_not_echo_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let missing = NotifyConfig { webhook_url_file: Some(dir.path().join("absent")), ..NotifyConfig::default() };
    assert!(matches!(Notifier::new(&missing), Err(ConfigError::SecretFile { .. })));

    let not_a_url = config(dir.path(), Some(format!("hooks.example.com/{TOKEN}")), None, Duration::from_secs(5));
    let err = Notifier::new(&not_a_url).err().expect("refused").to_string();
    assert!(err.contains("webhook-url") && !err.contains(TOKEN), "{err}");

    let ftp = config(dir.path(), None, Some(format!("ftp://example.com/{TOKEN}")), Duration::from_secs(5));
    let err = Notifier::new(&ftp).err().expect("refused").to_string();
    assert!(err.contains("slack-webhook-url") && err.contains("https://") && !err.contains(TOKEN), "{err}");

    assert!(Notifier::new(&NotifyConfig::default()).unwrap().channels().is_empty(), "no secret, no channel");
}

// --- e-mail ---------------------------------------------------------------------------------------------------

/// aiosmtpd on loopback, started for one test; stopped when dropped.
struct SmtpSink {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    fn start(extra: &[&str]) -> Self {
        let python = std::env::var("MBA_TEST_SMTP_PYTHON")
            .expect("MBA_TEST_SMTP_PYTHON is not set: run the tests with `make test` (tests/harness/with-services.sh)");
        let maildir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/smtp-sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--maildir")
            .arg(maildir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("smtp-sink.py did not print its port: {line:?}"));
        SmtpSink { child, port, maildir }
    }

    /// What the sink recorded of message `n` (from 1): envelope, TLS, login, decoded headers and body.
    fn message(&self, n: usize) -> Value {
        let path = self.maildir.path().join(format!("{n}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no message {n} in the sink: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn count(&self) -> usize {
        std::fs::read_dir(self.maildir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
            .count()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn email_config(port: u16, tls: SmtpTls, login: Option<(&str, PathBuf)>) -> NotifyConfig {
    NotifyConfig {
        email: Some(EmailConfig {
            server: "127.0.0.1".into(),
            port: Some(port),
            tls,
            username: login.as_ref().map(|(user, _)| user.to_string()),
            password_file: login.map(|(_, file)| file),
            from: "mongo-backup-agent <backups@db-vm-1.example>".into(),
            to: vec!["ops@example.com".into(), "Dba Team <dba@example.com>".into()],
        }),
        timeout: Duration::from_secs(10),
        ..NotifyConfig::default()
    }
}

/// Checks the message a failed report makes, as the sink's e-mail parser decoded it.
fn assert_failure_mail(envelope: &Value, failed: &RunReport) {
    let headers = &envelope["headers"];
    assert_eq!(headers["subject"], "mongo-backup-agent: backup FAILED on db-vm-1");
    assert_eq!(headers["from"], "mongo-backup-agent <backups@db-vm-1.example>");
    assert_eq!(headers["to"], "ops@example.com, Dba Team <dba@example.com>");
    assert!(headers["content-type"].as_str().unwrap().starts_with("text/plain"), "{headers}");
    let body = envelope["body"].as_str().unwrap().replace("\r\n", "\n");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], summary(failed), "the summary opens the body");
    for line in [
        format!("Backup:    {}", failed.id),
        "Outcome:   failed".to_string(),
        format!("Error:     {}", failed.error.as_deref().unwrap()),
        "Documents: 12345".to_string(),
    ] {
        assert!(lines.contains(&line.as_str()), "no line {line:?} in {body}");
    }
    assert_eq!(envelope["mail_from"], "backups@db-vm-1.example");
    assert_eq!(envelope["rcpt_tos"], serde_json::json!(["ops@example.com", "dba@example.com"]));
}

#[tokio::test]
async fn email_reaches_a_local_relay_without_tls() {
    let sink = SmtpSink::start(&[]);
    let notifier = Notifier::new(&email_config(sink.port, SmtpTls::None, None)).unwrap();
    assert_eq!(notifier.channels(), ["email"]);
    let failed = report(Outcome::Failed);
    assert_all_ok(&notifier.notify(&failed).await, &["email"]);
    let envelope = sink.message(1);
    assert_failure_mail(&envelope, &failed);
    assert_eq!(envelope["tls"], false);
}

#[tokio::test]
async fn starttls_is_required_not_hoped_for() {
    let sink = SmtpSink::start(&[]);
    let notifier = Notifier::new(&email_config(sink.port, SmtpTls::Starttls, None)).unwrap();
    let deliveries = notifier.notify(&report(Outcome::Failed)).await;
    let err = failure(&deliveries, "email");
    assert!(err.starts_with("SMTP:"), "{err}");
    assert_eq!(sink.count(), 0, "nothing was sent in clear");
}

#[test]
fn email_config_errors_are_found_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut remote = email_config(25, SmtpTls::None, None);
    remote.email.as_mut().unwrap().server = "smtp.example.com".into();
    let err = Notifier::new(&remote).err().expect("refused").to_string();
    assert!(err.contains("notify.email.tls") && err.contains("smtp.example.com"), "{err}");

    let mut bad_to = email_config(25, SmtpTls::None, None);
    bad_to.email.as_mut().unwrap().to.push("not an address".into());
    let err = Notifier::new(&bad_to).err().expect("refused").to_string();
    assert!(err.contains("notify.email.to") && err.contains("not an address"), "{err}");

    let no_password = email_config(587, SmtpTls::Starttls, Some(("agent", dir.path().join("absent"))));
    assert!(matches!(Notifier::new(&no_password), Err(ConfigError::SecretFile { .. })));
}

// --- e-mail over TLS, in a child process that trusts the sink's certificate --------------------------------------

/// A self-signed certificate for 127.0.0.1 made with the openssl CLI.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("smtp.pem"), dir.join("smtp.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for the test certificate (apt-get install openssl): {e}"));
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn run_child(test: &str, envs: &[(&str, String)]) -> bool {
    let output = child::run_ignored(test, CHILD, envs);
    println!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    output.status.success()
}

#[test]
fn email_over_starttls_and_smtps_logs_in_and_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let login = ["--user", "agent", "--password", "pa55:word"];
    let starttls = SmtpSink::start(&[&["--starttls", cert_s, key_s][..], &login].concat());
    let smtps = SmtpSink::start(&[&["--smtps", cert_s, key_s][..], &login].concat());
    let password = secret_file(dir.path(), "smtp-password", "pa55:word");
    let envs = |trust: &Path| {
        vec![
            ("SSL_CERT_FILE", trust.display().to_string()),
            ("MBA_STARTTLS_PORT", starttls.port.to_string()),
            ("MBA_SMTPS_PORT", smtps.port.to_string()),
            ("MBA_SMTP_PASSWORD_FILE", password.display().to_string()),
        ]
    };
    assert!(run_child("tls_child_delivers", &envs(&cert)), "delivery over TLS failed");
    let failed = report(Outcome::Failed);
    for sink in [&starttls, &smtps] {
        let envelope = sink.message(1);
        assert_failure_mail(&envelope, &failed);
        assert_eq!(envelope["tls"], true);
        assert_eq!(envelope["login"], "agent");
    }

    let other = tempfile::tempdir().unwrap();
    let (untrusted, _) = certificate(other.path());
    assert!(run_child("tls_child_is_refused", &envs(&untrusted)), "an untrusted certificate was accepted");
    assert_eq!(starttls.count() + smtps.count(), 2, "nothing more was delivered");
}

fn child_notifiers() -> Vec<Notifier> {
    let port = |name: &str| std::env::var(name).unwrap().parse().unwrap();
    let password = PathBuf::from(std::env::var("MBA_SMTP_PASSWORD_FILE").unwrap());
    [(port("MBA_STARTTLS_PORT"), SmtpTls::Starttls), (port("MBA_SMTPS_PORT"), SmtpTls::Tls)]
        .into_iter()
        .map(|(port, tls)| Notifier::new(&email_config(port, tls, Some(("agent", password.clone())))).unwrap())
        .collect()
}

#[tokio::test]
#[ignore = "run by email_over_starttls_and_smtps_logs_in_and_checks_the_certificate"]
async fn tls_child_delivers() {
    assert!(std::env::var_os(CHILD).is_some(), "run by its parent test only");
    for notifier in child_notifiers() {
        assert_all_ok(&notifier.notify(&report(Outcome::Failed)).await, &["email"]);
    }
}

#[tokio::test]
#[ignore = "run by email_over_starttls_and_smtps_logs_in_and_checks_the_certificate"]
async fn tls_child_is_refused() {
    assert!(std::env::var_os(CHILD).is_some(), "run by its parent test only");
    for notifier in child_notifiers() {
        let deliveries = notifier.notify(&report(Outcome::Failed)).await;
        let err = failure(&deliveries, "email").to_lowercase();
        assert!(err.contains("certificate") || err.contains("issuer"), "{err}");
    }
}
