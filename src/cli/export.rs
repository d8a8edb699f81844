//! `export`: a stored backup as a standalone archive file, in the compression stock tools expect.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use mongo_backup_agent::backup;
use mongo_backup_agent::compress::{self, Compression};
use mongo_backup_agent::config::Config;
use mongo_backup_agent::error::{EXIT_OK, Error, Result};
use mongo_backup_agent::store;

use super::IdentityArg;

/// Flags of `export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id or `latest`.
    id: String,
    /// Output file; written under a temporary name and renamed when complete.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Compression of the file: gzip for `mongorestore --gzip --archive`, none for plain `--archive`.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compression,
    #[command(flatten)]
    identity: IdentityArg,
}

pub async fn run(config: &Config, args: Args) -> Result<i32> {
    let store = store::open(&config.storage)?;
    let manifest = backup::resolve(store.as_ref(), &config.storage.prefix, &args.id).await?;
    let identities = args.identity.load(Some(config))?;
    // Decrypted as far as the age header before the output file exists: a missing or wrong key writes nothing.
    let stored = backup::open_archive(store.as_ref(), &config.storage.prefix, &manifest, identities.as_ref()).await?;
    let (_, mut plain) = compress::decoder(stored)
        .await
        .map_err(|source| Error::Io { action: "reading the stored archive".into(), source })?;
    let temp = args.out.with_extension("partial");
    let io = |action: &str| {
        let action = format!("{action} {}", temp.display());
        move |source| Error::Io { action, source }
    };
    // 0600 whatever the umask (a leftover temporary file keeps its mode, hence the explicit chmod): the archive is
    // the whole database.
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .await
        .map_err(io("creating"))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).await.map_err(io("restricting"))?;
    let mut settings = config.backup.compression_settings();
    settings.compression = args.compression;
    let mut out = compress::encoder(&settings, file);
    // A stream that fails half way (a damaged or tampered archive) leaves no partial file behind.
    if let Err(e) = compress::compress_all(&mut plain, &mut out).await {
        drop(out);
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(io("writing")(e));
    }
    tokio::fs::rename(&temp, &args.out).await.map_err(io("renaming"))?;
    eprintln!("exported backup {} to {} ({})", manifest.id, args.out.display(), args.compression);
    Ok(EXIT_OK)
}
