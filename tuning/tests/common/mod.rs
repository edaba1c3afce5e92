//! Fixture roots for the tests: a copy of a tree under `tests/fixtures/` in a temporary
//! directory that the test may change, removed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use multipoint_tuning::{audit, Host, Item, Needs, Rlimit};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The checked-in fixture tree `name`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A writable copy of a fixture tree.
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// A copy of `tests/fixtures/<name>`.
    pub fn copy_of(name: &str) -> Root {
        let dir = std::env::temp_dir().join(format!(
            "multipoint-tuning-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        copy_tree(&fixture_dir(name), &dir);
        Root { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` (and a newline) to `rel`, creating directories.
    pub fn set(&self, rel: &str, text: &str) -> &Root {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{text}\n")).unwrap();
        self
    }

    /// Removes file or directory `rel`.
    pub fn remove(&self, rel: &str) -> &Root {
        let p = self.dir.join(rel);
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
        self
    }

    /// Makes `rel` a symlink to `target`.
    pub fn link(&self, rel: &str, target: &str) -> &Root {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    /// A host on this root whose io_uring works and whose memlock limit is 8 MiB.
    pub fn host(&self) -> Host {
        Host::at(&self.dir)
            .with_io_uring(Ok(()))
            .with_memlock(Some(Rlimit::new(8 << 20, 8 << 20)))
            .with_page_size(4096)
    }

    /// Every file under the root with its contents.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(&self.dir, &mut |p| {
            out.insert(p.to_owned(), fs::read(p).unwrap());
        });
        out
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The item called `name`.
pub fn item<'a>(items: &'a [Item], name: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no item {name}"))
}

/// Audits `host` with the data plane's default needs and returns item `name`.
pub fn check(host: &Host, name: &str) -> Item {
    check_with(host, &Needs::default(), name)
}

/// Audits `host` with `needs` and returns item `name`.
pub fn check_with(host: &Host, needs: &Needs, name: &str) -> Item {
    item(&audit(host, needs), name).clone()
}
