//! Generic webhook: POSTs the run report as JSON, plus a readable `summary`, to a URL the operator chose.

use reqwest::{Client, Url};
use serde_json::Value;

use super::NotifyError;
use crate::backup::RunReport;
use crate::config::{ConfigError, read_secret};

/// A webhook receiver; the URL is kept here only, never logged.
pub(super) struct Webhook {
    client: Client,
    url: Url,
}

impl Webhook {
    pub(super) fn new(client: Client, url: Url) -> Self {
        Webhook { client, url }
    }

    /// Sends `{"summary": "...", ...RunReport}`: the report's fields as they are serialized for `status --json`,
    /// so a receiver can route on `outcome`, `host` or `trigger`.
    pub(super) async fn send(&self, report: &RunReport) -> Result<(), NotifyError> {
        let mut body = serde_json::Map::new();
        body.insert("summary".into(), super::summary(report).into());
        if let Value::Object(fields) = serde_json::to_value(report).expect("a RunReport serializes") {
            body.extend(fields);
        }
        post_json(&self.client, &self.url, &Value::Object(body)).await
    }
}

/// POSTs a JSON body and treats any non-2xx answer as a failure. Shared with the Slack channel, which is a webhook
/// with a fixed payload.
pub(super) async fn post_json(client: &Client, url: &Url, body: &Value) -> Result<(), NotifyError> {
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if response.status().is_success() { Ok(()) } else { Err(NotifyError::Status(response.status())) }
}

/// Reads the secret `name` (a URL) and checks that it is an http(s) URL, without echoing it in the error.
pub(super) fn url(name: &str, file: Option<&std::path::Path>) -> Result<Option<Url>, ConfigError> {
    let Some(text) = read_secret(name, file)? else { return Ok(None) };
    let url = Url::parse(text.trim())
        .map_err(|e| ConfigError::Invalid(format!("secret {name:?} is not a URL ({e}); it must be https://…")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::Invalid(format!("secret {name:?} must be an https:// (or http://) URL")));
    }
    Ok(Some(url))
}
