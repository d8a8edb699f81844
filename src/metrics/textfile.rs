//! node_exporter's textfile collector: the same metrics as a `.prom` file, for hosts that scrape node_exporter only.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Metrics, MetricsError};

/// Writes the metrics to `path` atomically: a temporary file in the same directory (not ending in `.prom`, so the
/// collector never reads it half written), flushed to disk, then renamed over `path`. The file is made readable by
/// all (mode 0644) because node_exporter runs as another user and the service's umask would hide it.
pub fn write_textfile(metrics: &Metrics, path: &Path) -> Result<(), MetricsError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = std::path::PathBuf::from(temp);
    let write = || {
        let mut file = std::fs::File::create(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(metrics.render().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        MetricsError::Textfile { path: path.to_path_buf(), source }
    })
}
