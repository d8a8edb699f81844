//! Arbitrary bytes into the archive reader: it must return an error or items, never panic, hang or allocate more
//! than one document's declared length (checked against 16 MiB before anything is allocated).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_backup_agent_fuzz::{check_consistent, read_archive};

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = read_archive(data) {
        check_consistent(&items);
    }
});
