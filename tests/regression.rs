//! Regression tests, one per fixed bug, each named after what went wrong.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mongo-backup-agent");

/// On a host without CA certificates (a minimal Debian root: found by `make e2e`), opening an Azure store panicked
/// inside the SDK's HTTP client builder (exit 101, no hint). It must be an ordinary error that says what to install.
#[test]
fn azure_store_without_ca_certificates_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (empty_file, empty_dir) = (dir.path().join("empty.pem"), dir.path().join("certs"));
    std::fs::write(&empty_file, "").unwrap();
    std::fs::create_dir(&empty_dir).unwrap();
    let secret = dir.path().join("cs");
    std::fs::write(
        &secret,
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50\
         uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"http://127.0.0.1:9/devstoreaccount1/backups/p\"\nauth = \"connection-string\"\n\
             connection_string_file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    // rustls-native-certs reads only these when they are set: an empty bundle is a host without certificates.
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "list"])
        .env("SSL_CERT_FILE", &empty_file)
        .env("SSL_CERT_DIR", &empty_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("CA certificates") && stderr.contains("ca-certificates package"), "{stderr}");
}
