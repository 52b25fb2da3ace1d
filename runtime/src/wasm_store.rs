//! Uploaded component binaries: `wasm/<tenant>/<sha256>.wasm`, content-addressed within a
//! tenant and never shared between tenants.
//!
//! Sharing identical bytes across tenants would save little disk and cost two things: an
//! upload that finds its bytes already stored (or compiled) learns that another tenant runs
//! the same component, and deleting one tenant's component could remove a file another
//! tenant's version still points to. Within a tenant, storing a version's file and recording
//! the version happen under one lock, as do the check "no version uses it" and the removal,
//! so a deletion never removes a file an upload has just deduplicated onto.

use crate::datadir::{self, DataDir, FILE_MODE};
use cap_std::fs::Dir;
use parking_lot::{Mutex, MutexGuard};

pub struct WasmStore {
    root: Dir,
    lock: Mutex<()>,
}

impl WasmStore {
    pub fn open(data: &DataDir) -> std::io::Result<WasmStore> {
        Ok(WasmStore {
            root: data.subdir("wasm")?,
            lock: Mutex::new(()),
        })
    }

    /// Held while a version's file and its row change together (see the module doc).
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock()
    }

    /// Store `bytes` as `sha256` of `tenant` (nothing to do if already there).
    pub fn put(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = datadir::subdir(&self.root, tenant)?;
        let name = file_name(sha256);
        if dir.exists(&name) {
            return Ok(());
        }
        datadir::write_atomic(&dir, &name, bytes, FILE_MODE)
    }

    pub fn read(&self, tenant: &str, sha256: &str) -> std::io::Result<Vec<u8>> {
        datadir::subdir(&self.root, tenant)?.read(file_name(sha256))
    }

    /// Remove a file no version of the tenant refers to any more.
    pub fn remove(&self, tenant: &str, sha256: &str) -> std::io::Result<()> {
        let dir = datadir::subdir(&self.root, tenant)?;
        match dir.remove_file(file_name(sha256)) {
            Ok(()) => datadir::sync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remove everything a tenant uploaded.
    pub fn remove_tenant(&self, tenant: &str) -> std::io::Result<()> {
        match self.root.remove_dir_all(tenant) {
            Ok(()) => datadir::sync_dir(&self.root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Move files of the old flat layout (`wasm/<sha>.wasm`, shared by every tenant) into
    /// each tenant's directory, given which tenants' versions use which hash; then remove
    /// the flat files.
    pub fn migrate_flat_layout(&self, uses: &[(String, String)]) -> std::io::Result<usize> {
        let _guard = self.lock();
        let mut moved = 0;
        for (tenant, sha) in uses {
            let name = file_name(sha);
            let Some(bytes) = datadir::read_optional(&self.root, &name)? else {
                continue;
            };
            self.put(tenant, sha, &bytes)?;
            moved += 1;
        }
        for entry in self.root.entries()? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && name.ends_with(".wasm") {
                self.root.remove_file(&name)?;
            }
        }
        datadir::sync_dir(&self.root)?;
        Ok(moved)
    }
}

fn file_name(sha256: &str) -> String {
    format!("{sha256}.wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_have_separate_files_and_the_flat_layout_migrates() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        std::fs::create_dir_all(tmp.path().join("wasm")).unwrap();
        std::fs::write(tmp.path().join("wasm/abc.wasm"), b"shared").unwrap();
        let store = WasmStore::open(&data).unwrap();
        let uses = [
            ("acme".to_string(), "abc".to_string()),
            ("globex".into(), "abc".into()),
        ];
        assert_eq!(store.migrate_flat_layout(&uses).unwrap(), 2);
        assert!(!tmp.path().join("wasm/abc.wasm").exists());
        assert_eq!(store.read("acme", "abc").unwrap(), b"shared");
        // Removing acme's copy leaves globex's.
        store.remove("acme", "abc").unwrap();
        assert!(store.read("acme", "abc").is_err());
        assert_eq!(store.read("globex", "abc").unwrap(), b"shared");
        store.remove_tenant("globex").unwrap();
        assert!(!tmp.path().join("wasm/globex").exists());
    }
}
