//! The physical limits each stage is compared against, measured with nothing of ours in the way: the driver reading
//! raw BSON, a bare `insert_many` loader, a bare `stage_block` loop, and our own compressor stage in isolation.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use azure_core::http::{ClientOptions, RequestContent, Url, XmlFormat};
use azure_storage_blob::models::BlockLookupList;
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bson::RawDocumentBuf;
use bytes::{BufMut, BytesMut};
use mongo_backup_agent::archive::{ArchiveItem, ArchiveReader, Namespace};
use mongo_backup_agent::compress::{self, CompressionSettings};
use mongo_backup_agent::mongo::{self, NamespaceFilter};
use mongo_backup_agent::store::azure::SharedKeyPolicy;
use mongodb::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Azurite's well-known development account and key (public; they only open the emulator).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The key of [`DEV_ACCOUNT`].
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The driver reading every selected collection as raw BSON and discarding it, `parallel` collections at once in
/// the order backup uses (largest first). Returns the BSON bytes read.
pub async fn raw_read(client: &Client, filter: &NamespaceFilter, parallel: usize, batch_size: u32) -> u64 {
    read_collections(client, filter, parallel, batch_size, None).await
}

/// The source and compressor limits together: the raw read (as in [`raw_read`]) piping every document into
/// `command` (the zstd CLI at our level and threads). The same reading and compressing a backup does, without
/// archive framing, checksums or a store. Returns the BSON bytes read.
pub async fn read_into_command(
    client: &Client,
    filter: &NamespaceFilter,
    parallel: usize,
    batch_size: u32,
    mut command: tokio::process::Command,
) -> u64 {
    let mut child = command.stdin(Stdio::piped()).spawn().expect("start the compressor");
    let mut stdin = child.stdin.take().expect("the compressor's stdin is piped");
    let (blocks, mut pending) = mpsc::channel::<Vec<u8>>(parallel);
    let writer = tokio::spawn(async move {
        while let Some(block) = pending.recv().await {
            stdin.write_all(&block).await.expect("write to the compressor");
        }
    });
    let bytes = read_collections(client, filter, parallel, batch_size, Some(blocks)).await;
    writer.await.expect("the compressor's writer");
    assert!(child.wait().await.expect("wait for the compressor").success(), "the compressor failed");
    bytes
}

/// Reads every selected collection, largest first, `parallel` at once; sends documents in blocks of about
/// [`mongo::BLOCK_TARGET_BYTES`] to `sink` if given, else discards them. Returns the BSON bytes read.
async fn read_collections(
    client: &Client,
    filter: &NamespaceFilter,
    parallel: usize,
    batch_size: u32,
    sink: Option<mpsc::Sender<Vec<u8>>>,
) -> u64 {
    let collections = mongo::list_collections(client, filter, parallel).await.expect("list collections");
    let permits = Arc::new(Semaphore::new(parallel));
    let mut readers = JoinSet::new();
    for info in collections {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        let (client, sink) = (client.clone(), sink.clone());
        readers.spawn(async move {
            let _permit = permit;
            let mut cursor = mongo::open_cursor(&client, &info.source, batch_size).await.expect("open a cursor");
            let (mut bytes, mut block) = (0u64, Vec::new());
            while cursor.advance().await.expect("read a batch") {
                let document = cursor.current().as_bytes();
                bytes += document.len() as u64;
                if let Some(sink) = &sink {
                    block.extend_from_slice(document);
                    if block.len() >= mongo::BLOCK_TARGET_BYTES {
                        sink.send(std::mem::take(&mut block)).await.expect("the writer is running");
                    }
                }
            }
            if let Some(sink) = sink.filter(|_| !block.is_empty()) {
                sink.send(block).await.expect("the writer is running");
            }
            bytes
        });
    }
    readers.join_all().await.into_iter().sum()
}

/// The catalog step a backup and [`raw_read`] begin with: listing the selected collections and their sizes.
pub async fn catalog(client: &Client, filter: &NamespaceFilter, parallel: usize) {
    mongo::list_collections(client, filter, parallel).await.expect("list collections");
}

/// A bare loader: every document of the plain archive at `path` inserted with unordered `insert_many` batches of
/// at most `batch_size` documents / 8 MiB, `parallel` in flight, into `<prefix><db>`. Returns the BSON bytes loaded.
pub async fn bare_load(client: &Client, path: &Path, prefix: &str, parallel: usize, batch_size: usize) -> u64 {
    let file = tokio::fs::File::open(path).await.expect("open the plain archive");
    let mut reader = ArchiveReader::open(BufReader::with_capacity(1 << 20, file)).await.expect("archive prelude");
    let targets: Vec<Namespace> = reader
        .prelude()
        .iter()
        .map(|e| Namespace::new(format!("{prefix}{}", e.namespace.db), &e.namespace.collection))
        .collect();
    let mut pending: Vec<(Vec<RawDocumentBuf>, usize)> = vec![(Vec::new(), 0); targets.len()];
    let permits = Arc::new(Semaphore::new(parallel));
    let mut inserts = JoinSet::new();
    let mut loaded = 0u64;
    let send = |ns: usize, docs: Vec<RawDocumentBuf>, inserts: &mut JoinSet<()>, permit| {
        let collection = client.database(&targets[ns].db).collection::<RawDocumentBuf>(&targets[ns].collection);
        inserts.spawn(async move {
            let _permit = permit;
            collection.insert_many(docs).ordered(false).await.expect("insert_many");
        });
    };
    loop {
        let (ns, flush) = match reader.next().await.expect("read the archive") {
            Some(ArchiveItem::Document { ns, document }) => {
                loaded += document.len() as u64;
                let slot = &mut pending[ns];
                slot.1 += document.len();
                slot.0.push(RawDocumentBuf::from_bytes(document).expect("valid BSON"));
                (ns, slot.0.len() >= batch_size || slot.1 >= 8 << 20)
            }
            Some(ArchiveItem::CollectionEnd { ns, .. }) => (ns, !pending[ns].0.is_empty()),
            None => break,
        };
        if flush {
            let permit = permits.clone().acquire_owned().await.expect("semaphore open");
            let docs = std::mem::take(&mut pending[ns]).0;
            send(ns, docs, &mut inserts, permit);
        }
    }
    inserts.join_all().await;
    loaded
}

/// Our encoder alone: the plain archive at `path` through [`compress::encoder`] into a sink. Returns input bytes.
pub async fn our_compressor(path: &Path, settings: &CompressionSettings) -> u64 {
    let file = tokio::fs::File::open(path).await.expect("open the plain archive");
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut encoder = compress::encoder(settings, tokio::io::sink());
    compress::compress_all(&mut input, &mut encoder).await.expect("compress")
}

/// A container client signed with the development key.
pub fn container(endpoint: &str, container: &str) -> BlobContainerClient {
    let mut client_options = ClientOptions::default();
    client_options.per_try_policies.push(Arc::new(SharedKeyPolicy::new(DEV_ACCOUNT, DEV_KEY).expect("dev key")));
    let url = Url::parse(&format!("{endpoint}/{container}")).expect("container URL");
    BlobContainerClient::new(url, None, Some(BlobContainerClientOptions { client_options, ..Default::default() }))
        .expect("container client")
}

/// A bare upload: the file at `path` staged in blocks of `block_size` with `in_flight` requests at once (no
/// checksums, no digest), then committed. Returns the bytes uploaded.
pub async fn stage_block_loop(
    container: &BlobContainerClient,
    key: &str,
    path: &Path,
    block_size: usize,
    in_flight: usize,
) -> u64 {
    let blob = Arc::new(container.blob_client(key).block_blob_client());
    let mut file = tokio::fs::File::open(path).await.expect("open the compressed archive");
    let mut uploads = JoinSet::new();
    let mut ids = Vec::new();
    let mut total = 0u64;
    loop {
        let mut block = BytesMut::with_capacity(block_size);
        while block.len() < block_size {
            let room = block_size - block.len();
            if file.read_buf(&mut (&mut block).limit(room)).await.expect("read") == 0 {
                break;
            }
        }
        if block.is_empty() {
            break;
        }
        total += block.len() as u64;
        while uploads.len() >= in_flight {
            uploads.join_next().await.expect("set not empty").expect("upload task");
        }
        let id = format!("{:07}", ids.len()).into_bytes();
        ids.push(id.clone());
        let blob = blob.clone();
        let data = block.freeze();
        uploads.spawn(async move {
            blob.stage_block(&id, data.len() as u64, data.into(), None).await.expect("stage_block");
        });
    }
    uploads.join_all().await;
    let list = BlockLookupList { latest: Some(ids), ..Default::default() };
    let content: RequestContent<BlockLookupList, XmlFormat> = list.try_into().expect("block list");
    blob.commit_block_list(content, None).await.expect("commit_block_list");
    total
}
