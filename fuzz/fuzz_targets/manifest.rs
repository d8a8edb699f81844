//! Arbitrary bytes into the manifest parser: an error or a manifest, never a panic; what it accepts re-serializes
//! to a manifest that parses back equal (so `verify` and retention read what `backup` wrote).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_backup_agent::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse(data) {
        let again = Manifest::parse(manifest.to_json().as_bytes()).expect("a parsed manifest parses again");
        assert_eq!(again, manifest);
    }
});
