//! A directory under the system temp dir that removes itself on `Drop`.
//!
//! Tests and the `many_clients` example each need a fresh SQLite file; this
//! avoids a dependency for it (walkdir's test `TempDir` does the same).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty directory, deleted with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/bookrelay-<label>-<pid>-<n>`.
    ///
    /// # Panics
    /// If the directory cannot be created: callers are tests and examples,
    /// for which a broken temp dir is fatal anyway.
    pub fn new(label: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bookrelay-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::TempDir;

    #[test]
    fn temp_dir_is_created_fresh_and_removed_on_drop() {
        let dir = TempDir::new("selftest");
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        std::fs::write(path.join("f"), b"x").expect("write");
        let other = TempDir::new("selftest");
        assert_ne!(other.path(), path);
        drop(dir);
        assert!(!path.exists());
    }
}
