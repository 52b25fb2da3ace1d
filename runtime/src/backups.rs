//! Configuration backups in Git, Oxidized-style: one bare repository per tenant in the data
//! dir, one file per device (`<device>.cfg`), a commit only when the configuration changed.
//!
//! Lines matching the tenant's volatile patterns (timestamps, counters that change on every
//! `show running-config`) are dropped before comparing and storing, so an unchanged device
//! never makes a commit and diffs show only real changes. libgit2 (through `git2`) writes
//! the objects directly: no working tree, no `git` binary needed.

use git2::{ObjectType, Oid, Repository, Signature, Sort};
use parking_lot::Mutex;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Volatile lines dropped unless the tenant sets its own list (Cisco IOS/IOS XE, FRR).
pub const DEFAULT_IGNORE: &[&str] = &[
    r"^Building configuration",
    r"^Current configuration\s*:",
    r"^! Last configuration change",
    r"^! NVRAM config last updated",
    r"^! No configuration change since last restart",
    r"^ntp clock-period",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Regular expressions; a configuration line matching any of them is dropped.
    pub ignore: Vec<String>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            ignore: DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl BackupSettings {
    pub fn compile(&self) -> Result<Vec<Regex>, String> {
        self.ignore
            .iter()
            .enumerate()
            .map(|(i, p)| Regex::new(p).map_err(|e| format!("ignore[{i}]: {e}")))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup of device `{0}`")]
    NoBackup(String),
    #[error("no revision `{0}`")]
    NoRevision(String),
    #[error("backup repository: {0}")]
    Git(#[from] git2::Error),
    #[error("backup repository: {0}")]
    Io(#[from] std::io::Error),
}

/// The largest configuration a backup may be (from a component or the API).
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, Serialize)]
pub struct Saved {
    pub changed: bool,
    pub commit: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Revision {
    pub commit: String,
    pub at_ms: i64,
    pub author: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceBackup {
    pub device: String,
    pub latest: Revision,
    pub revisions: usize,
}

pub struct Backups {
    root: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Held while a repository is created (see `repo`).
    creating: Mutex<()>,
}

impl Backups {
    pub fn new(root: PathBuf) -> Self {
        Backups {
            root,
            locks: Mutex::new(HashMap::new()),
            creating: Mutex::new(()),
        }
    }

    fn lock(&self, tenant: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// Delete a tenant's repository (the tenant was deleted).
    pub fn remove_tenant(&self, tenant: &str) -> std::io::Result<()> {
        let lock = self.lock(tenant);
        let _guard = lock.lock();
        let root = cap_std::fs::Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())?;
        match root.remove_dir_all(format!("{tenant}.git")) {
            Ok(()) => crate::datadir::sync_dir(&root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The tenant's repository, created on first use. It is made under a temporary name and
    /// renamed into place, so whoever opens it (a reader racing the first backup, or SOTP
    /// after a crash) finds all of it or nothing.
    fn repo(&self, tenant: &str) -> Result<Repository, BackupError> {
        let name = format!("{tenant}.git");
        let path = self.root.join(&name);
        if !path.exists() {
            let _creating = self.creating.lock();
            if !path.exists() {
                let partial = self.root.join(format!(".{name}.partial"));
                match std::fs::remove_dir_all(&partial) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                Repository::init_bare(&partial)?;
                std::fs::rename(&partial, &path)?;
                let root =
                    cap_std::fs::Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())?;
                crate::datadir::sync_dir(&root)?;
            }
        }
        Ok(Repository::open_bare(&path)?)
    }

    /// Store a device's configuration; commit if it differs from the latest one.
    pub fn store(
        &self,
        tenant: &str,
        device: &str,
        author: &str,
        text: &str,
        ignore: &[Regex],
    ) -> Result<Saved, BackupError> {
        let lock = self.lock(tenant);
        let _guard = lock.lock();
        let repo = self.repo(tenant)?;
        let content = normalize(text, ignore);
        let path = file_name(device);
        let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        if let Some(head) = &head
            && let Ok(entry) = head.tree()?.get_path(std::path::Path::new(&path))
            && repo.find_blob(entry.id())?.content() == content.as_bytes()
        {
            return Ok(Saved {
                changed: false,
                commit: head.id().to_string(),
            });
        }
        let blob = repo.blob(content.as_bytes())?;
        let base = head.as_ref().map(|h| h.tree()).transpose()?;
        let mut builder = repo.treebuilder(base.as_ref())?;
        builder.insert(&path, blob, 0o100644)?;
        let tree = repo.find_tree(builder.write()?)?;
        let signature = Signature::now(
            author,
            &format!("{}@{tenant}.sotp.invalid", author.replace(' ', "-")),
        )?;
        let verb = if head.as_ref().is_some_and(|h| {
            h.tree()
                .ok()
                .and_then(|t| t.get_path(std::path::Path::new(&path)).ok())
                .is_some()
        }) {
            "changed"
        } else {
            "first backup"
        };
        let message = format!("{device}: {verb}\n\nStored by {author}.\n");
        let parents: Vec<&git2::Commit> = head.iter().collect();
        let commit = repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            &message,
            &tree,
            &parents,
        )?;
        Ok(Saved {
            changed: true,
            commit: commit.to_string(),
        })
    }

    /// Commits that changed a device's file, newest first.
    pub fn history(&self, tenant: &str, device: &str) -> Result<Vec<Revision>, BackupError> {
        let repo = self.repo(tenant)?;
        let path = file_name(device);
        let Ok(head) = repo.head() else {
            return Ok(Vec::new());
        };
        let mut walk = repo.revwalk()?;
        walk.push(head.peel_to_commit()?.id())?;
        walk.set_sorting(Sort::TIME | Sort::TOPOLOGICAL)?;
        let mut out = Vec::new();
        for id in walk {
            let commit = repo.find_commit(id?)?;
            let now = blob_at(&commit, &path);
            let before = commit.parent(0).ok().and_then(|p| blob_at(&p, &path));
            if now.is_some() && now != before {
                out.push(revision(&commit));
            }
        }
        Ok(out)
    }

    /// Every device with a backup and its latest revision. One walk of the history for all
    /// devices (each commit diffed with its parent), not one per device: a tenant with
    /// 10,000 devices and as many commits would otherwise cost their product.
    pub fn list(&self, tenant: &str) -> Result<Vec<DeviceBackup>, BackupError> {
        let repo = self.repo(tenant)?;
        let Ok(head) = repo.head() else {
            return Ok(Vec::new());
        };
        let mut walk = repo.revwalk()?;
        walk.push(head.peel_to_commit()?.id())?;
        walk.set_sorting(Sort::TIME | Sort::TOPOLOGICAL)?;
        // Device → its newest revision and how many commits changed it.
        let mut found: HashMap<String, (Revision, usize)> = HashMap::new();
        for id in walk {
            let commit = repo.find_commit(id?)?;
            let tree = commit.tree()?;
            let parent = match commit.parent(0) {
                Ok(p) => Some(p.tree()?),
                Err(_) => None,
            };
            let diff = repo.diff_tree_to_tree(parent.as_ref(), Some(&tree), None)?;
            for delta in diff.deltas() {
                if delta.status() == git2::Delta::Deleted {
                    continue;
                }
                let Some(name) = delta
                    .new_file()
                    .path()
                    .and_then(|p| p.to_str())
                    .and_then(|p| p.strip_suffix(".cfg"))
                else {
                    continue;
                };
                found
                    .entry(name.to_string())
                    .or_insert_with(|| (revision(&commit), 0))
                    .1 += 1;
            }
        }
        let tree = head.peel_to_tree()?;
        Ok(tree
            .iter()
            .filter_map(|entry| {
                let name = entry.name()?.strip_suffix(".cfg")?;
                let (latest, revisions) = found.remove(name)?;
                Some(DeviceBackup {
                    device: name.to_string(),
                    latest,
                    revisions,
                })
            })
            .collect())
    }

    /// The newest commit of the tenant's repository, if any.
    pub fn head(&self, tenant: &str) -> Result<Option<String>, BackupError> {
        let repo = self.repo(tenant)?;
        Ok(repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .map(|c| c.id().to_string()))
    }

    /// A device's configuration at a revision (default: the latest).
    pub fn text(
        &self,
        tenant: &str,
        device: &str,
        at: Option<&str>,
    ) -> Result<String, BackupError> {
        let repo = self.repo(tenant)?;
        let commit = match at {
            Some(rev) => find_commit(&repo, rev)?,
            None => repo
                .head()
                .and_then(|h| h.peel_to_commit())
                .map_err(|_| BackupError::NoBackup(device.to_string()))?,
        };
        let id = blob_at(&commit, &file_name(device))
            .ok_or_else(|| BackupError::NoBackup(device.to_string()))?;
        Ok(String::from_utf8_lossy(repo.find_blob(id)?.content()).into_owned())
    }

    /// A unified diff of a device's configuration between two revisions (default: the two
    /// latest changes).
    pub fn diff(
        &self,
        tenant: &str,
        device: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<String, BackupError> {
        let repo = self.repo(tenant)?;
        let path = file_name(device);
        let history = self.history(tenant, device)?;
        let pick = |given: Option<&str>,
                    default: Option<&Revision>|
         -> Result<Option<git2::Commit<'_>>, BackupError> {
            match (given, default) {
                (Some(rev), _) => find_commit(&repo, rev).map(Some),
                (None, Some(r)) => find_commit(&repo, &r.commit).map(Some),
                (None, None) => Ok(None),
            }
        };
        let to_commit =
            pick(to, history.first())?.ok_or_else(|| BackupError::NoBackup(device.to_string()))?;
        let from_commit = pick(from, history.get(1))?;
        let new = blob_at(&to_commit, &path)
            .map(|id| repo.find_blob(id))
            .transpose()?;
        let old = from_commit
            .as_ref()
            .and_then(|c| blob_at(c, &path))
            .map(|id| repo.find_blob(id))
            .transpose()?;
        let (old_bytes, new_bytes) = (
            old.as_ref().map(|b| b.content()).unwrap_or_default(),
            new.as_ref().map(|b| b.content()).unwrap_or_default(),
        );
        let file = std::path::Path::new(&path);
        let mut patch =
            git2::Patch::from_buffers(old_bytes, Some(file), new_bytes, Some(file), None)?;
        let buf = patch.to_buf()?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

fn file_name(device: &str) -> String {
    format!("{device}.cfg")
}

fn blob_at(commit: &git2::Commit, path: &str) -> Option<Oid> {
    let entry = commit
        .tree()
        .ok()?
        .get_path(std::path::Path::new(path))
        .ok()?;
    (entry.kind() == Some(ObjectType::Blob)).then(|| entry.id())
}

fn find_commit<'r>(repo: &'r Repository, rev: &str) -> Result<git2::Commit<'r>, BackupError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| BackupError::NoRevision(rev.to_string()))
}

fn revision(commit: &git2::Commit) -> Revision {
    Revision {
        commit: commit.id().to_string(),
        at_ms: commit.time().seconds() * 1000,
        author: commit.author().name().unwrap_or("").to_string(),
        message: commit.summary().unwrap_or("").to_string(),
    }
}

/// Drop volatile lines and normalise line endings; always end with a newline.
pub fn normalize(text: &str, ignore: &[Regex]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if ignore.iter().any(|re| re.is_match(line)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_racing_the_first_backup_never_sees_half_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(Backups::new(dir.path().to_path_buf()));
        let ignore = BackupSettings::default().compile().unwrap();
        for i in 0..30 {
            let tenant = format!("t{i}");
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let (b, tenant, done) = (b.clone(), tenant.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        b.list(&tenant)
                            .expect("listing while the repository is created");
                    }
                })
            };
            b.store(&tenant, "r1", "test", "hostname r1\n", &ignore)
                .unwrap();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
            assert_eq!(b.list(&tenant).unwrap().len(), 1);
        }
    }

    #[test]
    fn commits_only_on_change_and_diffs() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backups::new(dir.path().to_path_buf());
        let ignore = BackupSettings::default().compile().unwrap();
        let v1 = "Building configuration...\r\nhostname r1\n!\ninterface eth0\n";
        let s1 = b
            .store("acme", "r1", "ssh-config-backup", v1, &ignore)
            .unwrap();
        assert!(s1.changed);
        let again = "Building configuration... (later)\nhostname r1\n!\ninterface eth0\n";
        let s2 = b
            .store("acme", "r1", "ssh-config-backup", again, &ignore)
            .unwrap();
        assert!(!s2.changed, "only a volatile line differs");
        assert_eq!(s2.commit, s1.commit);
        b.store("acme", "r2", "x", "hostname r2\n", &ignore)
            .unwrap();
        let s3 = b
            .store(
                "acme",
                "r1",
                "x",
                "hostname r1-new\n!\ninterface eth0\n",
                &ignore,
            )
            .unwrap();
        assert!(s3.changed);
        let history = b.history("acme", "r1").unwrap();
        assert_eq!(history.len(), 2, "r2's commit is not in r1's history");
        let diff = b.diff("acme", "r1", None, None).unwrap();
        assert!(
            diff.contains("-hostname r1\n") && diff.contains("+hostname r1-new\n"),
            "{diff}"
        );
        assert_eq!(
            b.text("acme", "r1", Some(&s1.commit)).unwrap(),
            "hostname r1\n!\ninterface eth0\n"
        );
        assert_eq!(b.list("acme").unwrap().len(), 2);
        assert!(matches!(
            b.text("acme", "r9", None),
            Err(BackupError::NoBackup(_))
        ));
    }
}
