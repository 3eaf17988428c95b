//! Files root writes (the audit trail, its anchor, the observed-ages state, torn-tail
//! evidence): opened relative to a directory fd, never through a symlink, in a directory
//! nobody else can write — the way sshd's StrictModes treats `~/.ssh`.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, Mode};

/// A directory opened once (`O_DIRECTORY|O_NOFOLLOW`): every file below is opened relative
/// to it, so a directory swapped for a symlink after the check cannot redirect a write.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Why a file root writes was refused, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub struct FileError {
    pub path: PathBuf,
    pub problem: String,
    pub fix: String,
    #[source]
    pub source: Option<io::Error>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.path.display(), self.problem, self.fix)
    }
}

impl FileError {
    fn new(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> FileError {
        FileError {
            path: path.to_path_buf(),
            problem: problem.into(),
            fix: fix.into(),
            source: None,
        }
    }

    /// The errno behind the refusal, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl SafeDir {
    /// Open `path` as a directory that must already exist and must not be a symlink.
    pub fn open(path: &Path) -> Result<SafeDir, FileError> {
        let shown = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        match nix::fcntl::open(shown, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(SafeDir {
                fd,
                path: shown.to_path_buf(),
            }),
            Err(errno) => {
                let e = io::Error::from(errno);
                let (problem, fix) = match errno {
                    nix::errno::Errno::ENOENT => (
                        "the directory does not exist".to_string(),
                        format!(
                            "create it (`install -d -m 0750 {}`) or point the path elsewhere; a mistyped path is not created",
                            shown.display()
                        ),
                    ),
                    nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR if is_symlink(shown) => (
                        "is a symbolic link".to_string(),
                        "use the real directory: files root writes are never opened through a link".to_string(),
                    ),
                    nix::errno::Errno::ENOTDIR => (
                        "is not a directory (or a link to one)".to_string(),
                        "point the path at a directory".to_string(),
                    ),
                    _ => (format!("cannot open the directory: {e}"), "check the path and its permissions".to_string()),
                };
                Err(FileError {
                    source: Some(e),
                    ..FileError::new(shown, problem, fix)
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, for messages.
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Refuse a directory that someone other than root (or this user) owns or can write:
    /// whoever can write it can replace or rewrite the files in it.
    pub fn check_private(&self) -> Result<(), FileError> {
        let st = fstat(&self.fd).map_err(|e| FileError {
            source: Some(e.into()),
            ..FileError::new(
                &self.path,
                "cannot stat the directory",
                "check its permissions",
            )
        })?;
        check_owner_and_mode(&self.path, st.st_uid, st.st_mode, "directory")
    }

    /// Open (creating with `mode`) `name` for reading and appending, without following a
    /// symlink; refuse anything but a regular file owned by root (or this user) that no one
    /// else can write.
    pub fn open_append(&self, name: &OsStr, mode: u32) -> Result<File, FileError> {
        let flags = OFlag::O_RDWR
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        self.open_checked(name, flags, mode)
    }

    /// Open an existing `name` for reading, without following a symlink.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    fn open_checked(&self, name: &OsStr, flags: OFlag, mode: u32) -> Result<File, FileError> {
        let path = self.join(name);
        let fd = openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(mode)).map_err(
            |errno| {
                let e = io::Error::from(errno);
                let (problem, fix) = if errno == nix::errno::Errno::ELOOP {
                    (
                        "is a symbolic link".to_string(),
                        "remove the link: files root writes are never opened through one"
                            .to_string(),
                    )
                } else {
                    (format!("cannot open: {e}"), hint_for(&e).to_string())
                };
                FileError {
                    source: Some(e),
                    ..FileError::new(&path, problem, fix)
                }
            },
        )?;
        let st = fstat(&fd).map_err(|e| FileError {
            source: Some(e.into()),
            ..FileError::new(&path, "cannot stat", "check its permissions")
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FileError::new(
                &path,
                "is not a regular file",
                "remove it: only a regular file is written here",
            ));
        }
        if st.st_nlink > 1 {
            return Err(FileError::new(
                &path,
                format!("has {} hard links", st.st_nlink),
                "a file root writes must have one name: remove the other links",
            ));
        }
        check_owner_and_mode(&path, st.st_uid, st.st_mode, "file")?;
        Ok(File::from(fd))
    }

    /// Create `name` exclusively (it must not exist), without following links.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(mode))?;
        Ok(File::from(fd))
    }

    /// Replace `name` with `bytes` atomically and durably: a new temporary file (created
    /// exclusively), written and fsynced, renamed over `name`, then the directory fsynced.
    /// A reader sees the old content or the new, never a mix.
    pub fn replace(&self, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        // A temporary file left by a crash of this pid long ago: ours to remove.
        let _ = nix::unistd::unlinkat(
            self.fd.as_fd(),
            tmp_name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        let result = (|| {
            let mut file = self.create_new(&tmp_name, mode)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            renameat(self.fd.as_fd(), tmp_name.as_os_str(), self.fd.as_fd(), name)?;
            self.sync()
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(
                self.fd.as_fd(),
                tmp_name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }

    /// Rename within this directory; with `no_replace`, never over an existing name.
    pub fn rename(&self, from: &OsStr, to: &OsStr, no_replace: bool) -> io::Result<()> {
        let flags = if no_replace {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        } else {
            nix::fcntl::RenameFlags::empty()
        };
        nix::fcntl::renameat2(self.fd.as_fd(), from, self.fd.as_fd(), to, flags)?;
        Ok(())
    }

    /// Remove `name` (a file) from this directory.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        nix::unistd::unlinkat(
            self.fd.as_fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?;
        Ok(())
    }

    /// Make renames and creations in this directory durable.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(self.fd.as_fd())?;
        Ok(())
    }

    /// The names of the entries of this directory.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        let mut dir = nix::dir::Dir::openat(self.fd.as_fd(), ".", DIR_FLAGS, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Split `path` into its directory (`.` when none) and file name.
pub fn split(path: &Path) -> Result<(&Path, &OsStr), FileError> {
    let name = path.file_name().ok_or_else(|| {
        FileError::new(
            path,
            "has no file name",
            "give the path of a file, not a directory",
        )
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// Owned by root or by us, and writable by no one else (group or others).
fn check_owner_and_mode(path: &Path, uid: u32, mode: u32, what: &str) -> Result<(), FileError> {
    let me = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Err(FileError::new(
            path,
            format!("the {what} is owned by uid {uid}, not root"),
            format!(
                "`chown root:root {}`: whoever owns it can rewrite what root records there",
                path.display()
            ),
        ));
    }
    if mode & 0o022 != 0 {
        return Err(FileError::new(
            path,
            format!(
                "the {what} is writable by {} (mode {:04o})",
                if mode & 0o002 != 0 { "others" } else { "its group" },
                mode & 0o7777
            ),
            format!(
                "`chmod go-w {}`: whoever can write it can rewrite or replace what root records there",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn hint_for(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "free space or point the path elsewhere",
        Some(libc::EACCES) | Some(libc::EPERM) => "run as root, or fix the permissions",
        Some(libc::EROFS) => "the filesystem is read-only: point the path at a writable one",
        _ => "check the path and its permissions",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_directory_is_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nonexistent/dir");
        let err = SafeDir::open(&missing).expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("install -d"), "{err}");
        assert!(!missing.exists());
    }

    #[test]
    fn symlinks_are_refused_for_the_directory_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let err = SafeDir::open(&link).expect_err("dir link");
        assert!(err.to_string().contains("symbolic link"), "{err}");

        // A dangling symlink where the file should be: nothing is created at its target.
        let safe = SafeDir::open(&real).expect("open");
        let target = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, real.join("audit.jsonl")).expect("symlink");
        let err = safe
            .open_append(OsStr::new("audit.jsonl"), 0o640)
            .expect_err("file link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!target.exists(), "the link's target was created");
    }

    #[test]
    fn a_directory_or_file_others_can_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let safe = SafeDir::open(dir.path()).expect("open");
        safe.check_private().expect("a fresh tempdir is private");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = safe.check_private().expect_err("world-writable");
        assert!(err.to_string().contains("writable by others"), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750))
            .expect("chmod");

        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        let err = safe
            .open_append(OsStr::new("f"), 0o640)
            .expect_err("group-writable file");
        assert!(err.to_string().contains("writable by its group"), "{err}");
    }

    #[test]
    fn replace_is_whole_or_nothing_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let safe = SafeDir::open(dir.path()).expect("open");
        safe.replace(OsStr::new("a"), b"one", 0o640)
            .expect("replace");
        safe.replace(OsStr::new("a"), b"two", 0o640)
            .expect("replace");
        assert_eq!(std::fs::read(dir.path().join("a")).expect("read"), b"two");
        let names = safe.names().expect("names");
        assert_eq!(names, [OsStr::new("a")], "{names:?}");
    }
}
