//! The data directory as a capability, and the one way SOTP replaces a file.
//!
//! Everything SOTP opens itself under `--data-dir` (components, compiled artifacts, keys,
//! tokens, flow state, component scratch space) is opened relative to a `cap_std` directory
//! handle: a path built from a name — a tenant id, a component, a content hash — cannot leave
//! its directory, whatever the name holds (`..`, `/`, a symlink planted inside). The embedded
//! databases (SQLite, DuckDB) and Git take fixed file names under the root instead.
//!
//! Directories are created 0700 and files written here 0600: the data dir holds secrets
//! (sealed, but with their key possibly beside them), tokens and tenants' data.
//!
//! [`write_atomic`] is the only way a file is replaced: written to a temporary name in the
//! same directory, synced, renamed over the old one, and the directory synced — so after a
//! crash the file is either the old one or the new one, and the rename itself is durable.

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of directories SOTP creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files SOTP writes.
pub const FILE_MODE: u32 = 0o600;

/// The open data directory.
pub struct DataDir {
    path: PathBuf,
    dir: Dir,
}

impl DataDir {
    /// Open `path`, creating it (and its parents) 0700 if missing. An existing directory
    /// that others can read is tightened to 0700 when SOTP owns it, else reported.
    pub fn open(path: &Path) -> std::io::Result<DataDir> {
        if !path.exists() {
            let mut builder = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
            builder.recursive(true).create(path)?;
        }
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o077 != 0 {
            let ours = std::os::unix::fs::MetadataExt::uid(&meta) == unsafe { libc::geteuid() };
            if ours {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
                tracing::warn!(path = %path.display(), "the data dir was readable by others; set it to 0700");
            } else {
                tracing::warn!(path = %path.display(), "the data dir is readable by others and not owned by this user; restrict it (chmod 700)");
            }
        }
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Ok(DataDir {
            path: path.to_path_buf(),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The sub-directory `name` (created 0700 if missing).
    pub fn subdir(&self, name: &str) -> std::io::Result<Dir> {
        subdir(&self.dir, name)
    }
}

/// The sub-directory `name` of `dir` (one path component; created 0700 if missing).
pub fn subdir(dir: &Dir, name: &str) -> std::io::Result<Dir> {
    check_name(name)?;
    let mut builder = DirBuilder::new();
    cap_std::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    match dir.create_dir_with(name, &builder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    dir.open_dir(name)
}

/// Names of files and directories SOTP builds from ids are single path components.
fn check_name(name: &str) -> std::io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{name}` is not a file name"),
        ));
    }
    Ok(())
}

/// Replace `name` in `dir` with `bytes`, atomically and durably (see the module doc); the
/// file is created with `mode`.
pub fn write_atomic(dir: &Dir, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    check_name(name)?;
    let tmp = format!(
        ".{name}.tmp{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    cap_std::fs::OpenOptionsExt::mode(&mut options, mode);
    let written = (|| {
        let mut file = dir.open_with(&tmp, &options)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        dir.rename(&tmp, dir, name)
    })();
    if let Err(e) = written {
        let _ = dir.remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Make renames and removals in `dir` durable.
pub fn sync_dir(dir: &Dir) -> std::io::Result<()> {
    dir.open(".")?.sync_all()
}

/// Read `name` in `dir`; `Ok(None)` if it does not exist.
pub fn read_optional(dir: &Dir, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    check_name(name)?;
    match dir.read(name) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Move a damaged file aside as `<name>.damaged-<ms>` (kept for the operator), so a start
/// can go on without it. Returns the new name.
pub fn quarantine(dir: &Dir, name: &str) -> std::io::Result<String> {
    check_name(name)?;
    let aside = format!("{name}.damaged-{}", crate::now_ms());
    dir.rename(name, dir, &aside)?;
    sync_dir(dir)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_and_names_cannot_escape() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let data = DataDir::open(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let wasm = data.subdir("wasm").unwrap();
        write_atomic(&wasm, "a.wasm", b"bytes", FILE_MODE).unwrap();
        let meta = std::fs::metadata(root.join("wasm/a.wasm")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(read_optional(&wasm, "a.wasm").unwrap().unwrap(), b"bytes");
        assert!(read_optional(&wasm, "b.wasm").unwrap().is_none());
        // Names with separators or dots are refused; a symlink out is not followed.
        assert!(write_atomic(&wasm, "../escape", b"x", FILE_MODE).is_err());
        assert!(data.subdir("..").is_err());
        std::os::unix::fs::symlink(tmp.path(), root.join("wasm/out")).unwrap();
        assert!(wasm.open("out/../../escape").is_err());
        assert!(wasm.create_dir("out/x").is_err());
        assert!(!tmp.path().join("x").exists());
        // No temporary file stays behind.
        let names: Vec<String> = std::fs::read_dir(root.join("wasm"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }

    #[test]
    fn an_open_data_dir_readable_by_others_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        DataDir::open(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
