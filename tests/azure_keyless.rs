//! Keyless auth for real: Azurite over https with `--oauth basic` and a certificate from a CA made here, a
//! loopback token server in this process speaking the App Service managed-identity protocol
//! (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) and an https Entra token endpoint for workload identity and client
//! secrets (`AZURE_AUTHORITY_HOST`). Every store runs in a child process whose environment (those variables,
//! `SSL_CERT_FILE`) is its own, so nothing leaks between tests running in parallel threads.

mod azure_support;
mod child;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_support::{Azurite, DEV_ACCOUNT, DEV_KEY, Generated, create_container, sha256_hex, unique_container};
use bytes::Bytes;
use mongo_backup_agent::config::{AzureAuth, StorageConfig};
use mongo_backup_agent::store::{self, ObjectMeta, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CHILD: &str = "MBA_KEYLESS_CHILD";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9";
const IDENTITY_SECRET: &str = "identity-header-secret";
const CLIENT_SECRET: &str = "client~secret.value";
const FEDERATED_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmFja3VwOmFnZW50In0.c2ln";

// --- test PKI -----------------------------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| panic!("openssl is needed to make the test CA (apt-get install openssl): {e}"));
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca = [
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mongo-backup-agent test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        run(&[&["req", "-x509"], &ec[..], &ca[..]].concat());
        run(&[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        run(&["x509", "-in", "server.pem", "-outform", "DER", "-out", "server.der"]);
        run(&["pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-outform", "DER", "-out", "server.key.der"]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Azurite over https with OAuth, presenting the server certificate.
    fn azurite(&self) -> Azurite {
        Azurite::start_with(
            &["--oauth", "basic", "--cert", &self.path_str("server.pem"), "--key", &self.path_str("server.key")],
            "https",
        )
    }
}

// --- loopback token services ----------------------------------------------------------------------------------

/// A JWT that Azurite's `--oauth basic` accepts (it checks issuer, audience and times, not the signature).
fn fake_jwt(audience: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let part = |json: serde_json::Value| {
        azure_core::base64::encode_url_safe(json.to_string()).trim_end_matches('=').to_string()
    };
    let header = part(serde_json::json!({"alg": "RS256", "typ": "JWT"}));
    let claims = part(serde_json::json!({
        "aud": audience, "iss": format!("https://sts.windows.net/{TENANT}/"), "iat": now - 60, "nbf": now - 60,
        "exp": now + 3600, "oid": CLIENT_ID, "tid": TENANT, "appid": CLIENT_ID,
    }));
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

/// One request as the token server saw it.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    headers: HashMap<String, String>,
    body: String,
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Seen> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..]).to_string();
    Some(Seen { target, headers, body })
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A token server on a thread of its own; records every request.
struct TokenServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TokenServer {
    fn start(tls: Option<&Pki>, handler: Handler) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let acceptor = tls.map(|pki| {
            use tokio_rustls::rustls;
            let cert = rustls::pki_types::CertificateDer::from(std::fs::read(pki.path("server.der")).unwrap());
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(std::fs::read(pki.path("server.key.der")).unwrap().into());
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let log = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (handler, log, acceptor) = (handler.clone(), log.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let serve = |seen: Seen| {
                        log.lock().unwrap().push(seen.clone());
                        handler(&seen)
                    };
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                            if let Some(seen) = read_request(&mut tls).await {
                                let (status, body) = serve(seen);
                                respond(&mut tls, status, &body).await;
                            }
                        }
                        None => {
                            let mut tcp = tcp;
                            if let Some(seen) = read_request(&mut tcp).await {
                                let (status, body) = serve(seen);
                                respond(&mut tcp, status, &body).await;
                            }
                        }
                    }
                });
            }
        });
        TokenServer { port, seen, _runtime: runtime }
    }

    /// The App Service managed-identity protocol: GET with `X-IDENTITY-HEADER`, token with `expires_on`.
    fn managed_identity(audience: &'static str) -> Self {
        Self::start(
            None,
            Arc::new(move |seen: &Seen| {
                if seen.headers.get("x-identity-header").map(String::as_str) != Some(IDENTITY_SECRET) {
                    return (401, r#"{"error":"bad identity header"}"#.into());
                }
                let expires_on = (chrono::Utc::now().timestamp() + 3600).to_string();
                let body = serde_json::json!({
                    "access_token": fake_jwt(audience), "expires_on": expires_on,
                    "resource": "https://storage.azure.com", "token_type": "Bearer",
                });
                (200, body.to_string())
            }),
        )
    }

    /// Entra's token endpoint for a client assertion (what workload identity sends) or a client secret.
    fn entra(pki: &Pki) -> Self {
        Self::start(
            Some(pki),
            Arc::new(|seen: &Seen| {
                let form: HashMap<String, String> =
                    azure_core::http::Url::parse(&format!("http://form/?{}", seen.body))
                        .unwrap()
                        .query_pairs()
                        .into_owned()
                        .collect();
                let ok = seen.target == format!("/{TENANT}/oauth2/v2.0/token")
                    && (form.get("client_assertion").map(String::as_str) == Some(FEDERATED_TOKEN)
                        || form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET))
                    && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                    && form.get("scope").is_some_and(|s| s.contains("storage.azure.com"));
                if !ok {
                    return (400, r#"{"error":"invalid_request","error_description":"unexpected request"}"#.into());
                }
                let body = serde_json::json!({
                    "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                    "access_token": fake_jwt("https://storage.azure.com"),
                });
                (200, body.to_string())
            }),
        )
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

// --- parent side: set up, run a child with its own environment ------------------------------------------------

fn run_child(test: &str, envs: &[(&str, String)]) -> String {
    let output = child::run_ignored(test, CHILD, envs);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{test} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for line in stdout.lines().filter(|l| l.starts_with("CHILD")) {
        println!("{line}");
    }
    stdout
}

fn trust(pki: &Pki) -> (&'static str, String) {
    ("SSL_CERT_FILE", pki.path_str("ca.pem"))
}

#[test]
fn managed_identity_over_https_round_trips() {
    let pki = Pki::new();
    let azurite = pki.azurite();
    let tokens = TokenServer::managed_identity("https://storage.azure.com");
    run_child(
        "round_trip_child",
        &[
            trust(&pki),
            ("MBA_KEYLESS_ENDPOINT", azurite.endpoint()),
            ("MBA_KEYLESS_AUTH", "managed-identity".into()),
            ("MBA_KEYLESS_CLIENT_ID", CLIENT_ID.into()),
            ("IDENTITY_ENDPOINT", format!("http://127.0.0.1:{}/msi/token", tokens.port)),
            ("IDENTITY_HEADER", IDENTITY_SECRET.into()),
        ],
    );
    let seen = tokens.seen();
    assert!(!seen.is_empty() && seen.len() <= 2, "one token, cached across operations: {seen:?}");
    assert!(seen[0].target.contains("resource=https%3A%2F%2Fstorage.azure.com"), "{seen:?}");
    assert!(seen[0].target.contains(&format!("client_id={CLIENT_ID}")), "user-assigned id is sent: {seen:?}");
}

#[test]
fn workload_identity_over_https_round_trips() {
    let pki = Pki::new();
    let azurite = pki.azurite();
    let entra = TokenServer::entra(&pki);
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, FEDERATED_TOKEN).unwrap();
    run_child(
        "round_trip_child",
        &[
            trust(&pki),
            ("MBA_KEYLESS_ENDPOINT", azurite.endpoint()),
            ("MBA_KEYLESS_AUTH", "workload-identity".into()),
            ("MBA_KEYLESS_CLIENT_ID", CLIENT_ID.into()),
            ("MBA_KEYLESS_TENANT_ID", TENANT.into()),
            ("MBA_KEYLESS_TOKEN_FILE", token_file.display().to_string()),
            ("AZURE_AUTHORITY_HOST", format!("https://127.0.0.1:{}", entra.port)),
        ],
    );
    let seen = entra.seen();
    assert!(!seen.is_empty() && seen.len() <= 2, "{seen:?}");
}

#[test]
fn client_secret_over_https_round_trips() {
    let pki = Pki::new();
    let azurite = pki.azurite();
    let entra = TokenServer::entra(&pki);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    run_child(
        "round_trip_child",
        &[
            trust(&pki),
            ("MBA_KEYLESS_ENDPOINT", azurite.endpoint()),
            ("MBA_KEYLESS_AUTH", "client-secret".into()),
            ("MBA_KEYLESS_CLIENT_ID", CLIENT_ID.into()),
            ("MBA_KEYLESS_TENANT_ID", TENANT.into()),
            ("MBA_KEYLESS_SECRET_FILE", secret_file.display().to_string()),
            ("AZURE_AUTHORITY_HOST", format!("https://127.0.0.1:{}", entra.port)),
        ],
    );
    let seen = entra.seen();
    assert!(!seen.is_empty() && seen.len() <= 2, "{seen:?}");
    assert!(seen[0].body.contains("client_secret="), "{seen:?}");
}

#[test]
fn a_token_the_service_rejects_fails_at_once_naming_the_role() {
    // Azurite refuses a token for another audience, as Azure refuses an identity without a data role.
    let pki = Pki::new();
    let azurite = pki.azurite();
    let tokens = TokenServer::managed_identity("https://vault.azure.net");
    let out = run_child(
        "refused_child",
        &[
            trust(&pki),
            ("MBA_KEYLESS_ENDPOINT", azurite.endpoint()),
            ("MBA_KEYLESS_AUTH", "managed-identity".into()),
            ("IDENTITY_ENDPOINT", format!("http://127.0.0.1:{}/msi/token", tokens.port)),
            ("IDENTITY_HEADER", IDENTITY_SECRET.into()),
            ("MBA_KEYLESS_EXPECT", "Storage Blob Data Contributor|system-assigned managed identity|HTTP 40".into()),
            ("MBA_KEYLESS_MAX_SECS", "3".into()),
        ],
    );
    assert!(out.contains(DEV_ACCOUNT));
}

#[test]
fn an_unreachable_identity_endpoint_fails_within_the_budget_with_what_to_check() {
    let pki = Pki::new();
    let azurite = pki.azurite();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    run_child(
        "refused_child",
        &[
            trust(&pki),
            ("MBA_KEYLESS_ENDPOINT", azurite.endpoint()),
            ("MBA_KEYLESS_AUTH", "managed-identity".into()),
            ("IDENTITY_ENDPOINT", format!("http://127.0.0.1:{closed}/msi/token")),
            ("IDENTITY_HEADER", IDENTITY_SECRET.into()),
            ("MBA_KEYLESS_EXPECT", "could not get an access token|managed identity assigned".into()),
            ("MBA_KEYLESS_MAX_SECS", "15".into()),
        ],
    );
}

#[test]
fn an_untrusted_certificate_fails_at_once_without_retries() {
    let pki = Pki::new();
    let azurite = pki.azurite();
    // The system CA bundle does not know the test CA.
    run_child(
        "refused_child",
        &[
            ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt".into()),
            ("MBA_KEYLESS_ENDPOINT", azurite.endpoint()),
            ("MBA_KEYLESS_AUTH", "connection-string".into()),
            ("MBA_KEYLESS_EXPECT", "TLS with https://127.0.0.1|not trusted|SSL_CERT_FILE".into()),
            ("MBA_KEYLESS_MAX_SECS", "3".into()),
        ],
    );
}

// --- child side: the store under the environment the parent set ---------------------------------------------

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The store config the parent asked for; the connection-string secret file lives in `dir`.
fn child_config(dir: &Path, container: &str) -> StorageConfig {
    let endpoint = env("MBA_KEYLESS_ENDPOINT").unwrap();
    let auth = match env("MBA_KEYLESS_AUTH").unwrap().as_str() {
        "managed-identity" => AzureAuth::ManagedIdentity,
        "workload-identity" => AzureAuth::WorkloadIdentity,
        "client-secret" => AzureAuth::ClientSecret,
        _ => AzureAuth::ConnectionString,
    };
    let mut config = azure_support::base_config(&endpoint, container, auth);
    config.retry_max_secs = 5;
    config.block_size_kib = 128;
    config.download_chunk_kib = 200;
    config.client_id = env("MBA_KEYLESS_CLIENT_ID");
    config.tenant_id = env("MBA_KEYLESS_TENANT_ID");
    config.federated_token_file = env("MBA_KEYLESS_TOKEN_FILE").map(PathBuf::from);
    config.client_secret_file = env("MBA_KEYLESS_SECRET_FILE").map(PathBuf::from);
    if auth == AzureAuth::ConnectionString {
        let text = format!(
            "DefaultEndpointsProtocol=https;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={endpoint};"
        );
        std::fs::write(dir.join("cs"), text).unwrap();
        config.connection_string_file = Some(dir.join("cs"));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the keyless tests in a child process with its own environment"]
async fn round_trip_child() {
    if !is_child() {
        return;
    }
    let endpoint = env("MBA_KEYLESS_ENDPOINT").unwrap();
    let container = unique_container("keyless");
    create_container(&endpoint, &container).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&child_config(dir.path(), &container)).unwrap();
    let data = Generated::collect(1_500_000, 21);
    let summary =
        store.put_stream("kl/archive", Box::pin(std::io::Cursor::new(data.clone())), &ObjectMeta::new()).await.unwrap();
    assert_eq!(summary.sha256, sha256_hex(&data));
    assert_eq!(store.get_bytes("kl/archive").await.unwrap(), data);
    store.put_if_absent("kl/manifest.json", Bytes::from_static(b"{}")).await.unwrap();
    let again = store.put_if_absent("kl/manifest.json", Bytes::from_static(b"{\"x\":1}")).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists { .. })), "{again:?}");
    let keys: Vec<String> = store.list("kl/").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["kl/archive", "kl/manifest.json"]);
    store.delete("kl/archive").await.unwrap();
    println!("\nCHILD {} round trip ok against {}", env("MBA_KEYLESS_AUTH").unwrap(), store.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the keyless tests in a child process with its own environment"]
async fn refused_child() {
    if !is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&child_config(dir.path(), "refused")).unwrap();
    let started = Instant::now();
    let err = store.list("").await.unwrap_err();
    let took = started.elapsed();
    let msg = err.to_string();
    println!("\nCHILD refused in {:.2} s: {msg}", took.as_secs_f64());
    let max: u64 = env("MBA_KEYLESS_MAX_SECS").unwrap().parse().unwrap();
    assert!(took < Duration::from_secs(max), "took {took:?}");
    for needle in env("MBA_KEYLESS_EXPECT").unwrap().split('|') {
        assert!(msg.contains(needle), "{needle:?} missing from {msg}");
    }
    assert!(matches!(err, StoreError::Backend(_)));
}
