//! Codec tests: byte layout, CRC, reader rules, and the real mongodump fixtures.

use bson::{Bson, doc};

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/mongodump/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn entry(db: &str, coll: &str) -> PreludeEntry {
    PreludeEntry { namespace: Namespace::new(db, coll), metadata: String::new(), kind: "collection".into() }
}

fn raw(doc: bson::Document) -> Vec<u8> {
    let mut out = Vec::new();
    doc.to_writer(&mut out).unwrap();
    out
}

/// Writes `a` (3 docs over two interleaved blocks), an empty `b`, and the oplog (1 doc).
async fn sample_archive() -> Vec<u8> {
    let prelude = vec![entry("d", "a"), entry("d", "b"), PreludeEntry { kind: String::new(), ..entry("", "oplog") }];
    let header = ArchiveHeader::new(2, "4.4.0");
    let mut w = ArchiveWriter::begin(Vec::new(), &header, &prelude).await.unwrap();
    let first = [raw(doc! {"_id": 1}), raw(doc! {"_id": 2})].concat();
    w.write_block(0, &first, 2).await.unwrap();
    w.end_collection(1).await.unwrap();
    w.write_block(0, &raw(doc! {"_id": 3}), 1).await.unwrap();
    w.end_collection(0).await.unwrap();
    w.write_block(2, &raw(doc! {"op": "n"}), 1).await.unwrap();
    w.end_collection(2).await.unwrap();
    let (bytes, stats) = w.finish().await.unwrap();
    assert_eq!(stats[0].documents, 3);
    assert_eq!(stats[1].documents, 0);
    bytes
}

async fn read_all(bytes: &[u8]) -> Result<Vec<ArchiveItem>, ArchiveError> {
    let mut reader = ArchiveReader::open(bytes).await?;
    let mut items = Vec::new();
    while let Some(item) = reader.next().await? {
        items.push(item);
    }
    Ok(items)
}

fn ends(items: &[ArchiveItem]) -> Vec<(String, u64)> {
    items
        .iter()
        .filter_map(|i| match i {
            ArchiveItem::CollectionEnd { stats, .. } => Some((stats.namespace.to_string(), stats.documents)),
            _ => None,
        })
        .collect()
}

fn crc64(bytes: &[u8]) -> u64 {
    let mut digest = Crc64Digest::new();
    digest.write(bytes);
    digest.sum64()
}

#[test]
fn crc_is_crc64_xz_as_go_ecma() {
    assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
    assert_eq!(crc64(b""), 0);
    // Chunked writes (blocks of a collection) give the checksum of the whole.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut chunked = Crc64Digest::new();
    data.chunks(4093).for_each(|c| chunked.write(c));
    assert_eq!(chunked.sum64(), crc64(&data));
}

#[tokio::test]
async fn writer_output_reads_back() {
    let bytes = sample_archive().await;
    assert_eq!(&bytes[..4], &MAGIC.to_le_bytes());
    let items = read_all(&bytes).await.unwrap();
    assert_eq!(ends(&items), vec![("d.b".into(), 0), ("d.a".into(), 3), ("oplog".into(), 1)]);
    let docs: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            ArchiveItem::Document { ns: 0, document } => Some(bson::Document::from_reader(&document[..]).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(docs, vec![doc! {"_id": 1}, doc! {"_id": 2}, doc! {"_id": 3}]);
}

#[tokio::test]
async fn reads_real_mongodump_archive() {
    let bytes = fixture("test.bar.archive");
    let mut reader = ArchiveReader::open(&bytes[..]).await.unwrap();
    assert_eq!(reader.header().server_version, "3.4.3");
    assert_eq!(reader.header().concurrent_collections, 4);
    let names: Vec<_> = reader.prelude().iter().map(|e| e.namespace.to_string()).collect();
    assert_eq!(names, ["test.bar", "admin.system.version"]);
    let meta = CollectionMetadata::parse(&reader.prelude()[1].namespace, &reader.prelude()[1].metadata, "").unwrap();
    assert_eq!(meta.indexes.len(), 2);
    assert_eq!(meta.indexes[1].get("v"), Some(&Bson::Decimal128("2".parse().unwrap())));
    let mut items = Vec::new();
    while let Some(item) = reader.next().await.unwrap() {
        items.push(item);
    }
    assert_eq!(ends(&items), vec![("admin.system.version".into(), 1), ("test.bar".into(), 1)]);
    let bar = items.iter().find_map(|i| match i {
        ArchiveItem::Document { ns: 0, document } => Some(bson::Document::from_reader(&document[..]).unwrap()),
        _ => None,
    });
    assert_eq!(bar.unwrap().get_str("foo").unwrap(), "bar");
}

/// Stock mongodump 100.18.0 announces a time-series collection by its name and sends its buckets as
/// `system.buckets.<name>` blocks: we read them as the announced collection's documents.
#[tokio::test]
async fn reads_mongodump_timeseries_archive() {
    let bytes = fixture("timeseries.archive");
    let reader = ArchiveReader::open(&bytes[..]).await.unwrap();
    assert_eq!(
        (reader.header().server_version.as_str(), reader.header().tool_version.as_str()),
        ("8.2.11", "100.18.0")
    );
    let kinds: Vec<_> = reader.prelude().iter().map(|e| (e.namespace.to_string(), e.kind.as_str())).collect();
    assert_eq!(kinds, [("test.plain".to_string(), "collection"), ("test.weather".to_string(), "timeseries")]);
    let weather = &reader.prelude()[1];
    assert_eq!(weather.data_namespace(&reader.header().server_version).to_string(), "test.system.buckets.weather");
    let meta = CollectionMetadata::parse(&weather.namespace, &weather.metadata, &weather.kind).unwrap();
    assert_eq!(meta.kind, CollectionKind::Timeseries);
    assert_eq!(meta.options.get_document("timeseries").unwrap().get_str("timeField").unwrap(), "t");
    let items = read_all(&bytes).await.unwrap();
    assert_eq!(ends(&items), vec![("test.plain".into(), 3), ("test.weather".into(), 2)]);
    let bucket = items.iter().find_map(|i| match i {
        ArchiveItem::Document { ns: 1, document } => Some(bson::Document::from_reader(&document[..]).unwrap()),
        _ => None,
    });
    assert!(bucket.unwrap().contains_key("control"), "the documents are buckets");
}

/// Our writer names a time-series collection's blocks as mongodump does for the dumped server's version, so stock
/// mongorestore finds them, and our reader reads either form back.
#[tokio::test]
async fn timeseries_blocks_carry_the_bucket_namespace_before_8_3() {
    let ts = PreludeEntry { kind: "timeseries".into(), ..entry("d", "ts") };
    for (version, blocks_named) in [("5.0.0", "system.buckets.ts"), ("8.2.11", "system.buckets.ts"), ("8.3.0", "ts")] {
        assert_eq!(ts.data_namespace(version).collection, blocks_named, "{version}");
        let mut w =
            ArchiveWriter::begin(Vec::new(), &ArchiveHeader::new(1, version), std::slice::from_ref(&ts)).await.unwrap();
        w.write_block(0, &raw(doc! {"_id": 1}), 1).await.unwrap();
        w.end_collection(0).await.unwrap();
        let (bytes, stats) = w.finish().await.unwrap();
        assert_eq!(stats[0].namespace.to_string(), "d.ts");
        let header = raw(doc! {"db": "d", "collection": blocks_named, "EOF": false, "CRC": 0_i64});
        find(&bytes, &header, 0); // panics unless a block header names `blocks_named`
        assert_eq!(ends(&read_all(&bytes).await.unwrap()), vec![("d.ts".into(), 1)]);
    }
    // An ordinary collection never moves, and an unparseable version counts as older.
    assert_eq!(entry("d", "c").data_namespace("5.0.0").collection, "c");
    assert_eq!(ts.data_namespace("").collection, "system.buckets.ts");
}

#[tokio::test]
async fn bad_metadata_names_the_namespace() {
    let bytes = fixture("bad-format.archive");
    let reader = ArchiveReader::open(&bytes[..]).await.unwrap();
    let e = &reader.prelude()[0];
    let err = CollectionMetadata::parse(&e.namespace, &e.metadata, &e.kind).unwrap_err().to_string();
    assert!(err.contains("test.ixtest") && err.contains("not valid JSON"), "{err}");
}

#[test]
fn metadata_round_trips_with_key_order() {
    let meta = CollectionMetadata {
        options: doc! {"capped": true, "size": 4096_i64},
        indexes: vec![doc! {"v": 2, "key": {"z": 1, "a": -1}, "name": "z_1_a_-1"}],
        uuid: Some("0123456789abcdef0123456789abcdef".into()),
        collection_name: "c".into(),
        kind: CollectionKind::Collection,
    };
    let json = meta.to_extended_json();
    assert!(
        json.starts_with(
            r#"{"options":{"capped":true,"size":{"$numberLong":"4096"}},"indexes":[{"v":{"$numberInt":"2"},"key":{"z""#
        ),
        "{json}"
    );
    assert_eq!(CollectionMetadata::parse(&Namespace::new("d", "c"), &json, "collection").unwrap(), meta);
}

async fn expect_error(bytes: Vec<u8>, needle: &str) {
    let err = read_all(&bytes).await.expect_err("archive should be refused").to_string();
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
}

/// Position of the first byte of the n-th occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8], nth: usize) -> usize {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).nth(nth).unwrap().0
}

#[tokio::test]
async fn flipped_crc_byte_is_a_crc_mismatch() {
    let mut bytes = sample_archive().await;
    // Headers in order: a, b EOF, a, a EOF, oplog, oplog EOF: flip a byte of the CRC in the fourth.
    let at = find(&bytes, b"CRC\0", 3) + 4;
    bytes[at] ^= 0x01;
    expect_error(bytes, "CRC mismatch for d.a").await;
}

#[tokio::test]
async fn flipped_document_byte_is_a_crc_mismatch() {
    let mut bytes = sample_archive().await;
    let at = find(&bytes, b"_id\0", 1) + 4;
    bytes[at] ^= 0x40;
    expect_error(bytes, "CRC mismatch for d.a").await;
}

#[tokio::test]
async fn truncation_anywhere_is_reported() {
    let bytes = sample_archive().await;
    for cut in 0..bytes.len() {
        let err = read_all(&bytes[..cut]).await.expect_err("a truncated archive must not read cleanly");
        assert!(matches!(err, ArchiveError::Truncated { .. }), "cut at {cut}: {err}");
    }
}

#[tokio::test]
async fn wrong_magic_is_refused() {
    let mut bytes = sample_archive().await;
    bytes[0] = 0x1f;
    expect_error(bytes, "not a mongodump archive").await;
}

#[tokio::test]
async fn over_long_document_is_refused_before_allocating() {
    let mut bytes = sample_archive().await;
    let at = find(&bytes, b"_id\0", 0) - 5;
    bytes[at..at + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    expect_error(bytes, "outside 5..=16777216").await;
}

#[tokio::test]
async fn two_terminators_in_a_row_are_refused() {
    let mut bytes = sample_archive().await;
    bytes.extend_from_slice(&TERMINATOR.to_le_bytes());
    expect_error(bytes, "two terminators").await;
}

/// Builds an archive by hand from raw parts so the reader's structural rules can be broken one at a time.
async fn hand_built(concurrent: i32, blocks: &[(&str, bool, u64, usize)]) -> Vec<u8> {
    let prelude = vec![entry("d", "a"), entry("d", "b"), entry("", "oplog")];
    let w = ArchiveWriter::begin(Vec::new(), &ArchiveHeader::new(concurrent, "4.4.0"), &[]).await.unwrap();
    let (mut bytes, _) = w.finish().await.unwrap();
    bytes.truncate(bytes.len() - 4);
    for e in &prelude {
        bytes.extend(raw(e.to_document()));
    }
    bytes.extend(TERMINATOR.to_le_bytes());
    for &(coll, eof, crc, docs) in blocks {
        let (db, coll) = if coll == "oplog" { ("", coll) } else { ("d", coll) };
        bytes.extend(raw(doc! {"db": db, "collection": coll, "EOF": eof, "CRC": crc as i64}));
        for i in 0..docs {
            bytes.extend(raw(doc! {"_id": i as i32}));
        }
        bytes.extend(TERMINATOR.to_le_bytes());
    }
    bytes
}

#[tokio::test]
async fn structural_rules_are_enforced() {
    let crc1 = crc64(&raw(doc! {"_id": 0}));
    let ok = [("a", false, 0, 1), ("a", true, crc1, 0), ("b", true, 0, 0), ("oplog", true, 0, 0)];
    assert_eq!(ends(&read_all(&hand_built(1, &ok).await).await.unwrap()).len(), 3);

    let unknown = [("zzz", false, 0, 1)];
    expect_error(hand_built(1, &unknown).await, "does not announce").await;

    let after_eof = [("b", true, 0, 0), ("b", false, 0, 1)];
    expect_error(hand_built(1, &after_eof).await, "after its EOF").await;

    let eof_with_docs = [("b", true, 0, 1)];
    expect_error(hand_built(1, &eof_with_docs).await, "documents after the EOF block of d.b").await;

    let too_many_open = [("a", false, 0, 1), ("b", false, 0, 1)];
    expect_error(hand_built(1, &too_many_open).await, "allows 1").await;

    let oplog_early = [("oplog", false, 0, 1)];
    expect_error(hand_built(3, &oplog_early).await, "oplog must come after").await;

    let missing_eof = [("a", false, 0, 1), ("a", true, crc1, 0), ("b", true, 0, 0)];
    expect_error(hand_built(1, &missing_eof).await, "oplog, which never got its EOF").await;

    let mut extra_key = hand_built(1, &[]).await;
    extra_key.extend(raw(doc! {"db": "d", "collection": "a", "EOF": false, "CRC": 0_i64, "x": 1}));
    expect_error(extra_key, "unexpected field \"x\"").await;
}
