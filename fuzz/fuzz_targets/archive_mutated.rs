//! Valid archives, built by our writer from a fuzzed plan, then damaged: the intact archive must read back exactly
//! as written, and the damaged one must give an error or a consistent result, never a panic or a hang.
#![no_main]

use arbitrary::Arbitrary;
use bson::doc;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use mongo_backup_agent::archive::{ArchiveHeader, ArchiveItem, ArchiveWriter, Namespace, PreludeEntry};
use mongo_backup_agent_fuzz::{check_consistent, read_archive};

#[derive(Arbitrary, Debug)]
struct Plan {
    /// Collections as (database, collection) name indexes; duplicates are dropped.
    collections: Vec<(u8, u8)>,
    steps: Vec<Step>,
    damage: Vec<Damage>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Block { ns: u8, documents: Vec<(i64, String, Vec<u8>)> },
    End { ns: u8 },
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Xor { at: u32, mask: u8 },
    Truncate { at: u32 },
    Insert { at: u32, bytes: Vec<u8> },
    Remove { at: u32, len: u16 },
}

/// Writes the plan with [`ArchiveWriter`]; returns the archive and what each collection got, in prelude order.
fn build(plan: &Plan) -> (Vec<u8>, Vec<Vec<Vec<u8>>>) {
    let mut prelude: Vec<PreludeEntry> = Vec::new();
    for &(db, coll) in &plan.collections {
        let namespace = Namespace::new(format!("d{}", db % 4), format!("c{}", coll % 8));
        if !prelude.iter().any(|e| e.namespace == namespace) {
            prelude.push(PreludeEntry { namespace, metadata: String::new(), kind: "collection".into() });
        }
    }
    let header = ArchiveHeader::new(prelude.len() as i32, "4.4.0");
    let mut written = vec![Vec::new(); prelude.len()];
    let mut ended = vec![false; prelude.len()];
    let bytes = block_on(async {
        let mut w = ArchiveWriter::begin(Vec::new(), &header, &prelude).await.unwrap();
        for step in &plan.steps {
            let ns = match step {
                Step::Block { ns, .. } | Step::End { ns } if !prelude.is_empty() => *ns as usize % prelude.len(),
                _ => continue,
            };
            if ended[ns] {
                continue;
            }
            match step {
                Step::Block { documents, .. } => {
                    let docs: Vec<Vec<u8>> = documents
                        .iter()
                        .map(|(id, text, blob)| {
                            let mut raw = Vec::new();
                            let blob =
                                bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: blob.clone() };
                            doc! { "_id": id, "text": text, "blob": blob }.to_writer(&mut raw).unwrap();
                            raw
                        })
                        .collect();
                    w.write_block(ns, &docs.concat(), docs.len() as u64).await.unwrap();
                    written[ns].extend(docs);
                }
                Step::End { .. } => {
                    w.end_collection(ns).await.unwrap();
                    ended[ns] = true;
                }
            }
        }
        for ns in (0..prelude.len()).filter(|&ns| !ended[ns]) {
            w.end_collection(ns).await.unwrap();
        }
        w.finish().await.unwrap().0
    });
    (bytes, written)
}

fn damage(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for d in damage {
        let at = |at: u32| at as usize % (bytes.len() + 1);
        match d {
            Damage::Xor { at: i, mask } if !bytes.is_empty() => {
                let i = *i as usize % bytes.len();
                bytes[i] ^= mask;
            }
            Damage::Truncate { at: i } => bytes.truncate(at(*i)),
            Damage::Insert { at: i, bytes: extra } => {
                let i = at(*i);
                bytes.splice(i..i, extra.iter().copied());
            }
            Damage::Remove { at: i, len } => {
                let i = at(*i);
                let end = (i + *len as usize).min(bytes.len());
                bytes.drain(i..end);
            }
            Damage::Xor { .. } => {}
        }
    }
    bytes
}

fuzz_target!(|plan: Plan| {
    let (bytes, written) = build(&plan);
    let items = read_archive(&bytes).expect("an archive our writer produced reads back");
    let mut read = vec![Vec::new(); written.len()];
    for item in &items {
        if let ArchiveItem::Document { ns, document } = item {
            read[*ns].push(document.clone());
        }
    }
    assert_eq!(read, written, "documents read back differ from those written");
    check_consistent(&items);

    if let Ok(items) = read_archive(&damage(bytes, &plan.damage)) {
        check_consistent(&items);
    }
});
