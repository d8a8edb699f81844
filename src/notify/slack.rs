//! Slack incoming webhook: one readable line in the channel the webhook was created for.

use reqwest::{Client, Url};

use super::NotifyError;
use crate::backup::{Outcome, RunReport};

/// A Slack incoming webhook; the URL (which is its credential) is kept here only, never logged.
pub(super) struct Slack {
    client: Client,
    url: Url,
}

impl Slack {
    pub(super) fn new(client: Client, url: Url) -> Self {
        Slack { client, url }
    }

    /// Sends `{"text": ...}`, the payload every incoming webhook accepts: an emoji for the outcome and the summary,
    /// with `&`, `<` and `>` escaped as Slack asks (an error message may contain them).
    pub(super) async fn send(&self, report: &RunReport) -> Result<(), NotifyError> {
        let icon = match report.outcome {
            Outcome::Success => ":white_check_mark:",
            Outcome::Failed => ":rotating_light:",
            Outcome::Cancelled => ":double_vertical_bar:",
        };
        let summary = super::summary(report).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let text = format!("{icon} {summary}");
        super::webhook::post_json(&self.client, &self.url, &serde_json::json!({ "text": text })).await
    }
}
