//! Notifications: tells people that a backup failed (and, if asked, that it succeeded) by webhook, Slack and e-mail.
//!
//! Policy:
//! * A [`Notifier`] is built once from `[notify]` at startup (and on reload). It reads the secrets then, so a secret
//!   file that is named but unreadable, or a URL that does not parse, is a config error at startup rather than a
//!   silent loss of alerts at 3 a.m.
//! * [`Notifier::notify`] sends to every configured channel at once, each bounded by `notify.timeout`. A channel
//!   that fails is logged at warn level, naming the channel and the error, never the URL or password (webhook URLs
//!   carry their token); the caller only gets the list of [`Delivery`] results and is never failed by them.
//! * Which outcomes notify: `Failed` when `on_failure`, `Success` when `on_success`, and `Cancelled` never. A
//!   cancelled backup is one the agent stopped on purpose (service stop, SIGTERM during a reboot or upgrade): nobody
//!   needs paging for that, and the next trigger backs up again. If backups keep being cancelled, the metric
//!   `mongo_backup_agent_last_success_timestamp_seconds` stops moving and the "no backup in 2 h" alert fires.

mod email;
mod slack;
mod webhook;

use std::time::Duration;

use crate::backup::{Outcome, RunReport};
use crate::config::{ConfigError, NotifyConfig};

/// Why one channel could not deliver a notification. Messages never include the URL or a password.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The channel did not finish within `notify.timeout`.
    #[error("no delivery within {0:?} (notify.timeout); is the receiver reachable from this host?")]
    Timeout(Duration),
    /// The HTTP request failed before an answer (connection refused, TLS, DNS).
    #[error("HTTP request failed: {}", crate::error::chain(.0))]
    Http(reqwest::Error),
    /// The receiver answered with an error status.
    #[error("the receiver answered HTTP {0}; check that the webhook URL is still valid")]
    Status(reqwest::StatusCode),
    /// The SMTP conversation failed (connection, STARTTLS, login, or the server refused the message).
    #[error("SMTP: {}", crate::error::chain(.0))]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The message could not be put together (an address the builder refuses).
    #[error("cannot build the e-mail: {0}")]
    Message(#[from] lettre::error::Error),
}

impl From<reqwest::Error> for NotifyError {
    /// Drops the URL from the error first: a webhook URL is a secret.
    fn from(err: reqwest::Error) -> Self {
        NotifyError::Http(err.without_url())
    }
}

/// What happened on one channel, returned by [`Notifier::notify`] so the caller can show or test it.
#[derive(Debug)]
pub struct Delivery {
    /// The channel's name: "webhook", "slack" or "email".
    pub channel: &'static str,
    /// Whether it was delivered.
    pub result: Result<(), NotifyError>,
}

/// One configured way of telling people.
enum Channel {
    Webhook(webhook::Webhook),
    Slack(slack::Slack),
    Email(email::Email),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Slack(_) => "slack",
            Channel::Email(_) => "email",
        }
    }

    async fn send(&self, report: &RunReport) -> Result<(), NotifyError> {
        match self {
            Channel::Webhook(c) => c.send(report).await,
            Channel::Slack(c) => c.send(report).await,
            Channel::Email(c) => c.send(report).await,
        }
    }
}

/// The configured notification channels and when to use them. Built once; cheap to share behind an `Arc`.
pub struct Notifier {
    on_failure: bool,
    on_success: bool,
    timeout: Duration,
    channels: Vec<Channel>,
}

impl Notifier {
    /// Reads the channels' secrets and builds them. A channel whose secret is found nowhere is off; one whose
    /// secret file is unreadable, whose URL does not parse, or whose e-mail addresses are invalid is an error.
    pub fn new(config: &NotifyConfig) -> Result<Self, ConfigError> {
        let http = || {
            // No client timeout: `notify` bounds every channel alike with `notify.timeout`.
            reqwest::Client::builder()
                .user_agent(concat!("mongo-backup-agent/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ConfigError::Invalid(format!("cannot set up the HTTP client for [notify]: {e}")))
        };
        let mut channels = Vec::new();
        if let Some(url) = webhook::url("webhook-url", config.webhook_url_file.as_deref())? {
            channels.push(Channel::Webhook(webhook::Webhook::new(http()?, url)));
        }
        if let Some(url) = webhook::url("slack-webhook-url", config.slack_webhook_url_file.as_deref())? {
            channels.push(Channel::Slack(slack::Slack::new(http()?, url)));
        }
        if let Some(email) = &config.email {
            channels.push(Channel::Email(email::Email::new(email)?));
        }
        Ok(Notifier { on_failure: config.on_failure, on_success: config.on_success, timeout: config.timeout, channels })
    }

    /// The names of the channels that are on, for the startup log line and `status`.
    pub fn channels(&self) -> Vec<&'static str> {
        self.channels.iter().map(Channel::name).collect()
    }

    /// Whether a run that ended this way is worth telling anyone about (see the module doc for `Cancelled`).
    pub fn wants(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Success => self.on_success,
            Outcome::Failed => self.on_failure,
            Outcome::Cancelled => false,
        }
    }

    /// Sends `report` to every channel concurrently when its outcome is wanted; returns one [`Delivery`] per channel
    /// tried (none when the outcome is not wanted). Takes at most about `notify.timeout`; failures are logged here.
    pub async fn notify(&self, report: &RunReport) -> Vec<Delivery> {
        if !self.wants(report.outcome) {
            return Vec::new();
        }
        let deliveries = futures::future::join_all(self.channels.iter().map(|channel| async move {
            let result = match tokio::time::timeout(self.timeout, channel.send(report)).await {
                Ok(result) => result,
                Err(_) => Err(NotifyError::Timeout(self.timeout)),
            };
            Delivery { channel: channel.name(), result }
        }))
        .await;
        for delivery in &deliveries {
            match &delivery.result {
                Ok(()) => log::info!(backup_id:% = report.id, channel = delivery.channel;
                    "notified {} of backup {} ({})", delivery.channel, report.id, report.outcome.as_str()),
                Err(e) => log::warn!(backup_id:% = report.id, channel = delivery.channel;
                    "could not notify {} of backup {}: {e}", delivery.channel, report.id),
            }
        }
        deliveries
    }
}

/// One readable line about a run, the text of the Slack message, the webhook's `summary` and the e-mail's first line.
pub fn summary(report: &RunReport) -> String {
    let took = humantime::format_duration(Duration::from_secs(report.duration_secs().round() as u64));
    match report.outcome {
        Outcome::Success => format!(
            "Backup {} succeeded on {} in {took}: {} of archive stored as {}, {} documents (trigger {}, store {})",
            report.id,
            report.host,
            indicatif::HumanBytes(report.bytes_in),
            indicatif::HumanBytes(report.bytes_out),
            report.documents,
            report.trigger,
            report.store
        ),
        Outcome::Failed | Outcome::Cancelled => format!(
            "Backup {} {} on {} after {took}: {} (trigger {}, store {})",
            report.id,
            if report.outcome == Outcome::Failed { "FAILED" } else { "was cancelled" },
            report.host,
            report.error.as_deref().unwrap_or("no error recorded"),
            report.trigger,
            report.store
        ),
    }
}
