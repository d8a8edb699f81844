//! Shared by the Azure test binaries: where Azurite is, Azurite instances of a test's own (to kill, restart or run
//! with https + OAuth), containers, SAS tokens, store configs, generated streams and peak-RSS readings.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use azure_core::http::{ClientOptions, Url};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use mongo_backup_agent::config::{AzureAuth, StorageConfig, StorageKind};
use mongo_backup_agent::store::azure::SharedKeyPolicy;
use tokio::io::{AsyncRead, ReadBuf};

/// Azurite's well-known development account and key (public; they only open the emulator).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The shared Azurite that `tests/harness/with-services.sh` (`make test`) starts.
pub fn shared_endpoint() -> String {
    std::env::var("MBA_TEST_AZURITE_BLOB_ENDPOINT").expect(
        "MBA_TEST_AZURITE_BLOB_ENDPOINT is not set: run the tests through `make test` (tests/harness/with-services.sh), \
         which starts Azurite",
    )
}

/// The azurite-blob binary, for tests that need an instance of their own.
pub fn azurite_bin() -> PathBuf {
    std::env::var_os("MBA_AZURITE_BLOB")
        .map(PathBuf::from)
        .expect("MBA_AZURITE_BLOB is not set: run the tests through `make test` (tests/harness/with-services.sh)")
}

/// A container name no other test uses.
pub fn unique_container(tag: &str) -> String {
    let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(40).collect::<String>().to_lowercase();
    format!("t-{tag}-{:08x}", rand::random::<u32>())
}

pub fn connection_string(endpoint: &str) -> String {
    format!("DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={endpoint};")
}

/// A file holding `content`, kept alive by the returned tempdir.
pub fn secret_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

/// A store config for `container` at `endpoint` with small, test-friendly retry limits.
pub fn base_config(endpoint: &str, container: &str, auth: AzureAuth) -> StorageConfig {
    StorageConfig {
        kind: StorageKind::Azure,
        endpoint: Some(endpoint.to_string()),
        container: Some(container.to_string()),
        auth,
        retry_max_secs: 10,
        request_timeout_secs: 20,
        ..StorageConfig::default()
    }
}

/// A connection-string (SharedKey) config; the returned tempdir holds the secret file.
pub fn shared_key_config(endpoint: &str, container: &str) -> (StorageConfig, tempfile::TempDir) {
    let (dir, path) = secret_file(&connection_string(endpoint));
    let mut config = base_config(endpoint, container, AzureAuth::ConnectionString);
    config.connection_string_file = Some(path);
    (config, dir)
}

/// A SAS config; the returned tempdir holds the secret file.
pub fn sas_config(endpoint: &str, container: &str, sas: &str) -> (StorageConfig, tempfile::TempDir) {
    let (dir, path) = secret_file(sas);
    let mut config = base_config(endpoint, container, AzureAuth::Sas);
    config.sas_file = Some(path);
    (config, dir)
}

/// A container client signed with the development key, for setting up and inspecting tests.
pub fn admin_container(endpoint: &str, container: &str) -> BlobContainerClient {
    let mut client_options = ClientOptions::default();
    client_options.per_try_policies.push(Arc::new(SharedKeyPolicy::new(DEV_ACCOUNT, DEV_KEY).unwrap()));
    let url = Url::parse(&format!("{endpoint}/{container}")).unwrap();
    BlobContainerClient::new(url, None, Some(BlobContainerClientOptions { client_options, ..Default::default() }))
        .unwrap()
}

pub async fn create_container(endpoint: &str, container: &str) {
    admin_container(endpoint, container).create(None).await.unwrap_or_else(|e| panic!("create {container}: {e}"));
}

/// An account SAS (version 2019-12-12) for blob service objects, with permissions `sp`, expiring at `expiry`.
pub fn account_sas(sp: &str, expiry: chrono::DateTime<chrono::Utc>) -> String {
    let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (sv, ss, srt, spr) = ("2019-12-12", "b", "sco", "https,http");
    let to_sign = format!("{DEV_ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
    let sig = azure_core::hmac::hmac_sha256(&to_sign, &azure_core::credentials::Secret::new(DEV_KEY)).unwrap();
    let mut url = Url::parse("http://x/").unwrap();
    url.query_pairs_mut()
        .append_pair("sv", sv)
        .append_pair("ss", ss)
        .append_pair("srt", srt)
        .append_pair("sp", sp)
        .append_pair("se", &se)
        .append_pair("spr", spr)
        .append_pair("sig", &sig);
    url.query().unwrap().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("azurite exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("azurite did not listen on {port}: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// An Azurite of the test's own, on a fresh port and storage directory; killed when dropped.
pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    scheme: &'static str,
}

impl Azurite {
    /// Starts plain-http Azurite.
    pub fn start() -> Self {
        Self::start_with(&[], "http")
    }

    /// Starts Azurite with extra flags (`--oauth basic --cert … --key …` with scheme "https").
    pub fn start_with(extra: &[&str], scheme: &'static str) -> Self {
        let mut azurite = Azurite {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            scheme,
        };
        azurite.spawn();
        azurite
    }

    /// Starts plain-http Azurite keeping everything in memory (faster; cannot survive a restart).
    pub fn start_in_memory() -> Self {
        Self::start_with(&["--inMemoryPersistence"], "http")
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("azurite.log");
        let mut command = Command::new(azurite_bin());
        command.current_dir(self.dir.path()).args(["--blobHost", "127.0.0.1", "--blobPort", &self.port.to_string()]);
        if !self.extra.iter().any(|a| a == "--inMemoryPersistence") {
            command.arg("--location").arg(self.dir.path().join("data"));
        }
        let mut child = command
            .args(["--disableTelemetry", "--silent", "--loose", "--skipApiVersionCheck"])
            .args(&self.extra)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start azurite-blob");
        wait_listening(self.port, &mut child, &log);
        self.child = Some(child);
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}/{DEV_ACCOUNT}", self.scheme, self.port)
    }

    /// SIGKILL: a crash, losing whatever Azurite had not written yet.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: an orderly stop, as a service restart does.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Peak resident set size of this process so far, in KiB (`VmHWM` in /proc/self/status).
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A generated stream of `len` bytes (not compressible, cheap to make), optionally failing after `fail_after`
/// bytes, and counting what has been read.
pub struct Generated {
    remaining: u64,
    produced: u64,
    seed: u64,
    pattern: Arc<Vec<u8>>,
    fail_after: Option<u64>,
    pub read: Arc<std::sync::atomic::AtomicU64>,
}

impl Generated {
    pub fn new(len: u64, seed: u64) -> Self {
        let mut state = seed | 1;
        let pattern = (0..(1 << 20))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        Generated {
            remaining: len,
            produced: 0,
            seed,
            pattern: Arc::new(pattern),
            fail_after: None,
            read: Arc::default(),
        }
    }

    pub fn failing_after(mut self, bytes: u64) -> Self {
        self.fail_after = Some(bytes);
        self
    }

    /// The bytes this stream yields, as a vector (for small lengths).
    pub fn collect(len: u64, seed: u64) -> Vec<u8> {
        let mut g = Generated::new(len, seed);
        let mut out = vec![0u8; len as usize];
        g.fill(&mut out);
        out
    }

    /// Fills `out` with the next bytes (the caller bounds it by `remaining`): the pattern copied as is (fast even
    /// in a debug build), each pass over it stamped with its index and the seed so that no two blocks repeat.
    fn fill(&mut self, out: &mut [u8]) {
        let len = self.pattern.len() as u64;
        let mut done = 0;
        while done < out.len() {
            let offset = (self.produced % len) as usize;
            let take = (out.len() - done).min(self.pattern.len() - offset);
            out[done..done + take].copy_from_slice(&self.pattern[offset..offset + take]);
            let stamp = ((self.produced / len) ^ self.seed.rotate_left(32)).to_le_bytes();
            for i in offset..(offset + take).min(8) {
                out[done + i - offset] = stamp[i];
            }
            done += take;
            self.produced += take as u64;
        }
        self.remaining -= out.len() as u64;
    }
}

impl AsyncRead for Generated {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(limit) = self.fail_after
            && self.produced >= limit
        {
            return Poll::Ready(Err(std::io::Error::other("generated input failure")));
        }
        let mut want = (buf.remaining() as u64).min(self.remaining);
        if let Some(limit) = self.fail_after {
            want = want.min(limit - self.produced);
        }
        let out = buf.initialize_unfilled_to(want as usize);
        self.fill(out);
        buf.advance(want as usize);
        self.read.fetch_add(want, std::sync::atomic::Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
