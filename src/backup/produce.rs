//! The producing half of a backup: parallel collection readers feeding one archive writer, then the oplog.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bson::Timestamp;
use mongodb::Client;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::Progress;
use super::pipe::{Completion, PipeWriter};
use crate::archive::{ArchiveHeader, ArchiveWriter, CollectionKind, Namespace, NamespaceStats, PreludeEntry};
use crate::compress::{self, BoxWriter, CompressionSettings};
use crate::crypt::{self, Recipients};
use crate::error::{Error, Result};
use crate::mongo::{self, CollectionInfo, DocumentBatch, NamespaceFilter};
use crate::oplog::{self, WindowStart, slice::Slice};

/// Everything the producer needs; borrowed from [`super::run`].
pub(super) struct Job<'a> {
    pub client: &'a Client,
    pub collections: &'a [CollectionInfo],
    pub auth: Vec<(Namespace, Vec<bson::Document>)>,
    pub oplog_start: Option<WindowStart>,
    /// The backup's namespaces: the slice keeps only what they need.
    pub filter: &'a NamespaceFilter,
    /// When the dump began, for the message of an oplog that rolled over during it.
    pub started: Instant,
    pub header: ArchiveHeader,
    pub prelude: Vec<PreludeEntry>,
    pub compression: CompressionSettings,
    /// Encrypt the compressed stream to these keys on its way to the store; `None`: stored plain.
    pub recipients: Option<Recipients>,
    pub parallel: usize,
    pub batch_size: u32,
    pub progress: &'a Progress,
}

/// What the producer wrote.
pub(super) struct Produced {
    pub stats: Vec<NamespaceStats>,
    pub uncompressed_bytes: u64,
    pub oplog_end: Option<Timestamp>,
    /// Collections dropped while the backup read them: in the archive as far as they were read, and dropped again
    /// by the slice on restore.
    pub dropped: Vec<Namespace>,
}

enum Message {
    Batch(usize, DocumentBatch),
    End(usize),
    /// The collection was dropped while being read.
    Dropped(usize, Namespace),
    Failed(Error),
}

impl Job<'_> {
    /// Writes the whole archive into `out`; marks the pipe complete only if every stage succeeded.
    pub async fn run(self, out: PipeWriter, completion: Completion) -> Result<Produced> {
        let out: BoxWriter = match &self.recipients {
            Some(recipients) => Box::pin(crypt::encrypting_writer(recipients, out, "the archive").await?),
            None => Box::pin(out),
        };
        let encoder = compress::encoder(&self.compression, out);
        let mut writer =
            ArchiveWriter::begin(BufWriter::with_capacity(256 << 10, encoder), &self.header, &self.prelude).await?;
        let index =
            |ns: &Namespace| self.prelude.iter().position(|e| &e.namespace == ns).expect("prelude has every namespace");

        for (ns, docs) in &self.auth {
            let mut bytes = Vec::new();
            for doc in docs {
                doc.to_writer(&mut bytes)
                    .map_err(|e| Error::Refused(format!("cannot encode a document of {ns}: {e}")))?;
            }
            writer.write_block(index(ns), &bytes, docs.len() as u64).await?;
            writer.end_collection(index(ns)).await?;
        }
        for view in self.collections.iter().filter(|c| c.metadata.kind == CollectionKind::View) {
            writer.end_collection(index(&view.namespace)).await?;
        }

        let dropped = self.dump_collections(&mut writer, &index).await?;

        let mut oplog_end = None;
        if let Some(start) = self.oplog_start {
            self.progress.set_phase("copying oplog");
            let end = oplog::window::close(self.client).await?;
            let ns = index(&Namespace::oplog());
            let tracked = self.progress.track(Namespace::oplog(), 0);
            let listed = self.collections.iter().map(|c| c.namespace.clone()).collect();
            let mut slice = Slice::open(self.client, start, end, self.filter, &listed).await?;
            while let Some(batch) = slice.next_batch().await? {
                tracked.documents.fetch_add(batch.count, Relaxed);
                writer.write_block(ns, &batch.bytes, batch.count).await?;
            }
            slice.explain_vanished(&dropped, end)?;
            oplog::slice::check_not_rolled_over(self.client, start, self.started).await?;
            tracked.done.store(true, Relaxed);
            writer.end_collection(ns).await?;
            oplog_end = Some(end);
        }

        let uncompressed_bytes = writer.bytes_written();
        let (mut out, stats) = writer.finish().await?;
        out.shutdown()
            .await
            .map_err(|source| Error::Io { action: "finishing the compressed stream".into(), source })?;
        completion.finish();
        drop(out);
        Ok(Produced { stats, uncompressed_bytes, oplog_end, dropped })
    }

    /// Reads up to `parallel` collections at once, largest first, and writes their blocks as they arrive.
    /// At most `parallel` collections are open in the archive at any time, matching `concurrent_collections`.
    /// Returns the collections dropped while they were read.
    async fn dump_collections<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        writer: &mut ArchiveWriter<W>,
        index: &(dyn Fn(&Namespace) -> usize + Sync),
    ) -> Result<Vec<Namespace>> {
        // One queued block per reader: blocks only queue while the writer is busy, and each is 4 MiB of memory.
        let (tx, mut rx) = mpsc::channel::<Message>(self.parallel);
        let mut readers = JoinSet::new();
        let work: Vec<_> = self
            .collections
            .iter()
            .filter(|c| c.metadata.kind != CollectionKind::View)
            .map(|c| {
                let batch_size = mongo::bounded_batch_size(self.batch_size, c.size_bytes, c.document_estimate);
                let tracked = self.progress.track(c.namespace.clone(), c.document_estimate);
                (index(&c.namespace), c.namespace.clone(), c.source.clone(), batch_size, tracked)
            })
            .collect();
        let (client, permits) = (self.client.clone(), std::sync::Arc::new(Semaphore::new(self.parallel)));
        // One dispatcher hands out permits in order, so collections start strictly largest first.
        readers.spawn(async move {
            for (ns, name, source, batch_size, tracked) in work {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (client, tx) = (client.clone(), tx.clone());
                tokio::spawn(async move {
                    let result = async {
                        let mut cursor = mongo::open_cursor(&client, &source, batch_size).await?;
                        let what = source.to_string();
                        while let Some(batch) = mongo::next_batch(&mut cursor, &what).await? {
                            tracked.documents.fetch_add(batch.count, Relaxed);
                            tracked.bytes.fetch_add(batch.bytes.len() as u64, Relaxed);
                            tx.send(Message::Batch(ns, batch)).await.map_err(|_| Error::Cancelled)?;
                        }
                        Ok::<(), Error>(())
                    }
                    .await;
                    tracked.done.store(true, Relaxed);
                    // A collection dropped under its reader (an error, or nothing read of a collection that had
                    // documents) is no failure: the slice drops it on restore.
                    let suspect = result.is_err() || (tracked.expected > 0 && tracked.documents.load(Relaxed) == 0);
                    let gone = suspect && !mongo::collection_exists(&client, &source).await.unwrap_or(true);
                    let message = match result {
                        _ if gone => {
                            log::info!(
                                "{name} was dropped while the backup read it; the oplog slice drops it on restore"
                            );
                            Message::Dropped(ns, name)
                        }
                        Ok(()) => Message::End(ns),
                        Err(e) => Message::Failed(e),
                    };
                    let _ = tx.send(message).await;
                    drop(permit);
                });
            }
        });
        let mut dropped = Vec::new();
        while let Some(message) = rx.recv().await {
            match message {
                Message::Batch(ns, batch) => {
                    writer.write_block(ns, &batch.bytes, batch.count).await?;
                    self.progress.archive_bytes.store(writer.bytes_written(), Relaxed);
                }
                Message::End(ns) => writer.end_collection(ns).await?,
                Message::Dropped(ns, name) => {
                    writer.end_collection(ns).await?;
                    dropped.push(name);
                }
                Message::Failed(e) => return Err(e),
            }
        }
        Ok(dropped)
    }
}
