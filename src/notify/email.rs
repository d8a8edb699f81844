//! E-mail over SMTP: a plain-text message whose subject says at a glance which host's backup failed.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::NotifyError;
use crate::backup::{Outcome, RunReport};
use crate::config::{ConfigError, EmailConfig, SmtpTls, read_secret, secret_env};

/// The secret holding the SMTP password.
const PASSWORD_SECRET: &str = "smtp-password";

/// An SMTP submission route; the password lives only inside the transport.
pub(super) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    /// Checks the addresses and the TLS mode and reads the password when a username is set. `tls = "none"` is
    /// refused unless the server is this host: a password or a backup report must not cross a network in clear.
    pub(super) fn new(config: &EmailConfig) -> Result<Self, ConfigError> {
        let invalid = |key: &str, e: &dyn std::fmt::Display| ConfigError::Invalid(format!("notify.email.{key}: {e}"));
        let from: Mailbox = config.from.parse().map_err(|e| invalid("from", &e))?;
        let to = config
            .to
            .iter()
            .map(|address| address.parse::<Mailbox>().map_err(|e| invalid("to", &format!("{address:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let tls_parameters =
            || TlsParameters::builder(config.server.clone()).build_rustls().map_err(|e| invalid("server", &e));
        let (tls, default_port) = match config.tls {
            SmtpTls::Starttls => (Tls::Required(tls_parameters()?), 587),
            SmtpTls::Tls => (Tls::Wrapper(tls_parameters()?), 465),
            SmtpTls::None if is_local(&config.server) => (Tls::None, 25),
            SmtpTls::None => {
                return Err(invalid(
                    "tls",
                    &format!("\"none\" is only allowed for a relay on this host, not {:?}", config.server),
                ));
            }
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server)
            .port(config.port.unwrap_or(default_port))
            .tls(tls);
        if let Some(username) = &config.username {
            let password = read_secret(PASSWORD_SECRET, config.password_file.as_deref())?.ok_or_else(|| {
                ConfigError::MissingSecret {
                    name: PASSWORD_SECRET.into(),
                    file_key: "notify.email.password_file".into(),
                    env: secret_env(PASSWORD_SECRET),
                }
            })?;
            transport = transport.credentials(Credentials::new(username.clone(), password));
        }
        Ok(Email { transport: transport.build(), from, to })
    }

    /// Sends one message to all recipients.
    pub(super) async fn send(&self, report: &RunReport) -> Result<(), NotifyError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject(report));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.header(ContentType::TEXT_PLAIN).body(body(report))?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// Whether `server` names this host, the only place `tls = "none"` may go.
fn is_local(server: &str) -> bool {
    server.eq_ignore_ascii_case("localhost")
        || server.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// "mongo-backup-agent: backup FAILED on db-vm-1": the outcome and host, which is what an inbox list shows.
fn subject(report: &RunReport) -> String {
    let what = match report.outcome {
        Outcome::Success => "succeeded",
        Outcome::Failed => "FAILED",
        Outcome::Cancelled => "cancelled",
    };
    format!("mongo-backup-agent: backup {what} on {}", report.host)
}

/// The summary line, then every field of the report on its own line.
fn body(report: &RunReport) -> String {
    let mut lines = vec![super::summary(report), String::new()];
    let mut field = |name: &str, value: String| lines.push(format!("{name:<10} {value}"));
    field("Backup:", report.id.to_string());
    field("Outcome:", report.outcome.as_str().to_string());
    if let Some(error) = &report.error {
        field("Error:", error.clone());
    }
    field("Host:", report.host.clone());
    field("Trigger:", report.trigger.clone());
    field("Store:", report.store.clone());
    field("Started:", report.started_at.to_rfc3339());
    field("Finished:", report.finished_at.to_rfc3339());
    field("Archive:", format!("{} bytes", report.bytes_in));
    field("Stored:", format!("{} bytes", report.bytes_out));
    field("Documents:", report.documents.to_string());
    lines.join("\n") + "\n"
}
