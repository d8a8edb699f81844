//! The benchmark's data set: a reproducible, realistic mix generated into the server once per size and seed.
//!
//! Small JSON-like events, medium orders with arrays and nested objects, MB-sized and KB-sized binaries, spread over
//! three databases and collections of very different sizes. Text comes from a small vocabulary (compresses like
//! real text), binaries are random (do not compress, like real media).

use std::sync::Arc;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, RawDocumentBuf, doc};
use mongodb::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Bump when the generator changes, so an old data set is regenerated.
const GENERATOR_VERSION: i32 = 1;
/// Where the marker of a complete data set lives.
const MARKER: (&str, &str) = ("bench_meta", "dataset");
const MIB: u64 = 1 << 20;

#[derive(Clone, Copy)]
enum Shape {
    /// ~250 B: a click-stream event.
    Event,
    /// ~2–6 KB: an order with line items, an address and a status history.
    Order,
    /// 0.5–3 MiB of random bytes: uploaded files.
    File,
    /// 8–64 KiB of random bytes: thumbnails.
    Thumbnail,
}

/// (database, collection, share of the total bytes, shape).
const COLLECTIONS: &[(&str, &str, f64, Shape)] = &[
    ("bench_shop", "events", 0.30, Shape::Event),
    ("bench_shop", "orders", 0.30, Shape::Order),
    ("bench_media", "files", 0.20, Shape::File),
    ("bench_media", "thumbnails", 0.08, Shape::Thumbnail),
    ("bench_ops", "audit", 0.08, Shape::Event),
    ("bench_ops", "carts", 0.035, Shape::Order),
    ("bench_ops", "settings", 0.005, Shape::Event),
];

/// The databases the data set lives in (what backups include and restores rename).
pub const DATABASES: &[&str] = &["bench_shop", "bench_media", "bench_ops"];

const WORDS: &[&str] = &[
    "alpha", "blue", "cart", "delta", "order", "paid", "shipped", "pending", "refund", "user", "login", "logout",
    "search", "view", "click", "mobile", "desktop", "berlin", "paris", "london", "madrid", "rome", "oslo", "coffee",
    "tea", "lamp", "chair", "table", "phone", "cable", "charger", "book", "pen", "paper", "green", "red", "small",
    "large", "express", "standard", "gift", "wrap", "coupon", "summer", "winter", "sale", "new", "used", "premium",
];

/// What was generated.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Dataset {
    /// BSON bytes over all collections.
    pub bytes: u64,
    /// Documents over all collections.
    pub documents: u64,
    /// Collections.
    pub collections: usize,
}

/// Makes sure the server holds the data set of `mib` MiB for `seed`; generates it (dropping any other) if not.
pub async fn ensure(client: &Client, mib: u64, seed: u64) -> Dataset {
    let marker = client.database(MARKER.0).collection::<bson::Document>(MARKER.1);
    let wanted = doc! {"_id": "dataset", "mib": mib as i64, "seed": seed as i64, "version": GENERATOR_VERSION};
    if let Some(found) = marker.find_one(doc! {"_id": "dataset"}).await.expect("read the data set marker")
        && ["mib", "seed", "version"].iter().all(|k| found.get(k) == wanted.get(k))
    {
        eprintln!("bench: data set of {mib} MiB (seed {seed}) already present");
        return Dataset {
            bytes: found.get_i64("bytes").unwrap_or(0) as u64,
            documents: found.get_i64("documents").unwrap_or(0) as u64,
            collections: COLLECTIONS.len(),
        };
    }
    for db in DATABASES.iter().chain([&MARKER.0]) {
        client.database(db).drop().await.expect("drop an old data set");
    }
    eprintln!("bench: generating {mib} MiB (seed {seed}) …");
    let started = std::time::Instant::now();
    let mut tasks = JoinSet::new();
    let permits = Arc::new(Semaphore::new(3));
    for (i, &(db, coll, share, shape)) in COLLECTIONS.iter().enumerate() {
        let (client, permits) = (client.clone(), permits.clone());
        let target = (mib as f64 * MIB as f64 * share) as u64;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            fill(&client, db, coll, shape, target, seed.wrapping_add(i as u64)).await
        });
    }
    let (mut bytes, mut documents) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (b, d) = done.expect("generator task");
        bytes += b;
        documents += d;
    }
    let mut info = wanted;
    info.insert("bytes", bytes as i64);
    info.insert("documents", documents as i64);
    marker.insert_one(info).await.expect("write the data set marker");
    eprintln!("bench: generated {documents} documents, {} MiB in {:.0?}", bytes / MIB, started.elapsed());
    Dataset { bytes, documents, collections: COLLECTIONS.len() }
}

/// Inserts documents of `shape` into `db.coll` until `target` bytes; returns (bytes, documents).
async fn fill(client: &Client, db: &str, coll: &str, shape: Shape, target: u64, seed: u64) -> (u64, u64) {
    let collection = client.database(db).collection::<RawDocumentBuf>(coll);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut bytes, mut id) = (0u64, 0i64);
    // At least a few documents, so even the tiny collection exists.
    while bytes < target || id < 3 {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while batch_bytes < 8 * MIB && (bytes + batch_bytes < target || id < 3) {
            let document = generate(shape, id, &mut rng);
            batch_bytes += document.as_bytes().len() as u64;
            batch.push(document);
            id += 1;
        }
        collection.insert_many(batch).ordered(false).await.unwrap_or_else(|e| panic!("insert into {db}.{coll}: {e}"));
        bytes += batch_bytes;
    }
    (bytes, id as u64)
}

fn words(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ")
}

fn random_binary(rng: &mut StdRng, len: usize) -> Binary {
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    Binary { subtype: BinarySubtype::Generic, bytes }
}

fn generate(shape: Shape, id: i64, rng: &mut StdRng) -> RawDocumentBuf {
    let at = DateTime::from_millis(1_767_225_600_000 + id * 1_000 + rng.random_range(0..1_000));
    let document = match shape {
        Shape::Event => doc! {
            "_id": id,
            "at": at,
            "user": format!("user{:06}", rng.random_range(0..200_000)),
            "action": WORDS[rng.random_range(0..WORDS.len())],
            "ok": rng.random_bool(0.97),
            "latency_ms": rng.random_range(0.5..900.0_f64),
            "tags": [words(rng, 1), words(rng, 1)],
            "ip": format!("10.{}.{}.{}", rng.random_range(0..255), rng.random_range(0..255), rng.random_range(1..255)),
            "page": format!("/{}/{}", words(rng, 1), rng.random_range(0..10_000)),
        },
        Shape::Order => {
            let items: Vec<Bson> = (0..rng.random_range(3..30))
                .map(|line| {
                    Bson::Document(doc! {
                        "line": line,
                        "sku": format!("SKU-{:08}", rng.random_range(0..5_000_000)),
                        "title": words(rng, 6),
                        "qty": rng.random_range(1..5),
                        "price": rng.random_range(1.0..500.0_f64),
                        "attributes": {"color": words(rng, 1), "size": words(rng, 1), "gift": rng.random_bool(0.1)},
                    })
                })
                .collect();
            let history: Vec<Bson> = (0..rng.random_range(1..6))
                .map(|step| Bson::Document(doc! {"at": at, "step": step, "status": words(rng, 1), "by": words(rng, 2)}))
                .collect();
            let notes = rng.random_range(5..60);
            let notes = words(rng, notes);
            doc! {
                "_id": id,
                "created": at,
                "customer": {
                    "name": words(rng, 2),
                    "email": format!("{}@example.com", words(rng, 1)),
                    "address": {"street": words(rng, 3), "city": words(rng, 1), "zip": format!("{:05}", rng.random_range(0..99_999)), "country": "DE"},
                },
                "items": items,
                "history": history,
                "notes": notes,
                "total": rng.random_range(5.0..5_000.0_f64),
            }
        }
        Shape::File => {
            let len = rng.random_range(512 * 1024..3 * 1024 * 1024);
            doc! {"_id": id, "name": format!("{}.bin", words(rng, 2)), "uploaded": at, "data": random_binary(rng, len)}
        }
        Shape::Thumbnail => {
            let len = rng.random_range(8 * 1024..64 * 1024);
            doc! {"_id": id, "of": id, "mime": "image/webp", "data": random_binary(rng, len)}
        }
    };
    RawDocumentBuf::from_document(&document).expect("generated documents encode")
}
