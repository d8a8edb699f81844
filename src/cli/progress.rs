//! Shows a running backup's progress: bars per collection on a terminal, a log line every ten seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mongo_backup_agent::backup::Progress;

/// Starts the display; dropping the handle stops it.
pub fn show(progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    if std::io::stderr().is_terminal() {
        tokio::spawn(bars(progress))
    } else {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                log::info!("progress: {}", progress.summary());
            }
        })
    }
}

async fn bars(progress: Arc<Progress>) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>30} {bar:30} {pos:>10}/{len:10} docs {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut shown: Vec<(Arc<mongo_backup_agent::backup::CollectionProgress>, ProgressBar)> = Vec::new();
    loop {
        for c in progress.collections() {
            if !shown.iter().any(|(s, _)| Arc::ptr_eq(s, &c)) {
                let bar = multi.add(ProgressBar::new(c.expected.max(1)));
                bar.set_style(style.clone());
                bar.set_prefix(c.namespace.to_string());
                shown.push((c, bar));
            }
        }
        for (c, bar) in &shown {
            let docs = c.documents.load(Relaxed);
            bar.set_length(c.expected.max(docs).max(1));
            bar.set_position(docs);
            bar.set_message(indicatif::HumanBytes(c.bytes.load(Relaxed)).to_string());
            if c.done.load(Relaxed) && !bar.is_finished() {
                bar.finish();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
