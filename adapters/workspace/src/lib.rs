//! Session workspaces: a bare clone per repository in the daemon's data dir,
//! a git worktree per session, and file operations that never leave it.
//!
//! Git runs as a `git` process with a timeout, so a hung fetch cannot hold a
//! request forever. Paths from clients are checked lexically (no `..`, no
//! absolute path, no `.git`, no leftover percent-encoding), then resolved by
//! the kernel: the worktree is opened once per request and every path is
//! opened beneath it with `openat2(RESOLVE_BENEATH)`, which fails as soon as
//! a step (symlinks included) would leave it. Checking a path and then using
//! it by name would let an agent in the worktree swap a directory for a
//! symlink in between; an opened descriptor cannot be swapped. Symlinks that
//! stay in the worktree work, except absolute ones, which the kernel refuses
//! even when they point inside. This needs Linux 5.6 or later; without
//! `openat2` the file API refuses to work.

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

mod merge;
pub use merge::{
    changed_files, check_merge, head, is_merged, merge, start_merge, with_markers, MergeCheck, MAX_HUNKS_BYTES,
};

/// Largest file the file API reads or writes.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Most results a search returns.
pub const MAX_SEARCH_RESULTS: usize = 1000;
/// How long a clone or fetch may take; local git commands get less.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The client's request is wrong: a path leaving the worktree, say.
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    NotFound(String),
    #[error("file is {size} bytes; the limit is {limit}")]
    TooLarge { size: u64, limit: usize },
    #[error("{0} is not UTF-8 text")]
    NotText(String),
    /// A state that forbids the request (nothing to commit).
    #[error("{0}")]
    Conflict(String),
    #[error("git {command}: {message}")]
    Git { command: String, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkspaceError {
    let context = context.into();
    move |source| WorkspaceError::Io { context, source }
}

/// Where a session's workspace lives and what it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub repo: String,
    pub branch: String,
    pub worktree: PathBuf,
    /// The commit the session branch started from.
    pub base: String,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub path: String,
    pub line: u64,
    pub text: String,
}

/// What every session branch starts with.
pub const SESSION_BRANCH_PREFIX: &str = "bosun/";

/// The branch a session's worktree is on.
pub fn session_branch(session_id: &str) -> String {
    format!("{SESSION_BRANCH_PREFIX}{session_id}")
}

/// The bare clone of `repo` under `data_dir`, named by a hash of the repo so
/// any URL maps to a safe directory name.
pub fn bare_path(data_dir: &Path, repo: &str) -> PathBuf {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in repo.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    data_dir.join("repos").join(format!("{hash:016x}.git"))
}

pub fn worktree_path(data_dir: &Path, session_id: &str) -> PathBuf {
    data_dir.join("worktrees").join(session_id)
}

/// Runs git with `args` in `cwd`; returns stdout, or an error carrying stderr.
/// `ok_codes` lists exit codes that are not failures (git grep exits 1 on no match).
async fn git(cwd: &Path, args: &[&str], timeout: Duration, ok_codes: &[i32]) -> Result<String, WorkspaceError> {
    git_with_env(cwd, args, timeout, ok_codes, &[]).await
}

/// [`git`] with more environment for the child (and only for it).
async fn git_with_env(
    cwd: &Path,
    args: &[&str],
    timeout: Duration,
    ok_codes: &[i32],
    env: &[(&str, &str)],
) -> Result<String, WorkspaceError> {
    let what = args.iter().copied().find(|a| !a.starts_with('-') && !a.contains('=')).unwrap_or("").to_string();
    let mut cmd = Command::new("git");
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        // Never ask a human for credentials: there is none on a daemon's terminal.
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(io_err("starting git"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(io_err(format!("running git {what}")))?,
        Err(_) => return Err(WorkspaceError::Git { command: what, message: format!("timed out after {timeout:?}") }),
    };
    let code = out.status.code().unwrap_or(-1);
    if code != 0 && !ok_codes.contains(&code) {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(WorkspaceError::Git { command: what, message });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Refuses repo and branch values git could take as options.
pub(crate) fn check_ref_input(what: &str, value: &str) -> Result<(), WorkspaceError> {
    if value.is_empty() || value.starts_with('-') || value.contains('\0') {
        return Err(WorkspaceError::BadPath(format!("{what} {value:?} is not valid")));
    }
    Ok(())
}

/// Refuses a URL carrying a password or token: the repo is stored in the
/// session record and shown to clients, and credentials must never be
/// written to disk. Git's credential helpers are the way to give them.
fn check_no_credentials(repo: &str) -> Result<(), WorkspaceError> {
    if let Some((_, rest)) = repo.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Err(WorkspaceError::BadPath(
                    "the repo URL carries a password or token; configure a git credential helper instead".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Clones (or fetches) `repo` and adds a worktree for `session_id` on a new
/// branch `bosun/<session_id>` from `branch`.
pub async fn prepare(data_dir: &Path, repo: &str, branch: &str, session_id: &str) -> Result<Prepared, WorkspaceError> {
    check_ref_input("repo", repo)?;
    check_ref_input("branch", branch)?;
    check_no_credentials(repo)?;
    let bare = bare_path(data_dir, repo);
    let repos = data_dir.join("repos");
    tokio::fs::create_dir_all(&repos).await.map_err(io_err("creating the repos dir"))?;
    tokio::fs::create_dir_all(data_dir.join("worktrees")).await.map_err(io_err("creating the worktrees dir"))?;
    let bare_str = bare.to_string_lossy().into_owned();
    if bare.exists() && branch.starts_with(SESSION_BRANCH_PREFIX) {
        // Another session's branch (a workflow step branching from an
        // earlier one's): it lives only in the bare clone, never on the origin.
    } else if bare.exists() {
        // Branches in the bare clone mirror the origin's; session branches are
        // local and never on the origin, so they are not touched by this refspec.
        let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        git(&bare, &["fetch", "--quiet", "origin", &refspec], NETWORK_TIMEOUT, &[]).await?;
    } else {
        git(&repos, &["clone", "--quiet", "--bare", "--", repo, &bare_str], NETWORK_TIMEOUT, &[]).await?;
    }
    let base = git(&bare, &["rev-parse", "--verify", &format!("refs/heads/{branch}^{{commit}}")], LOCAL_TIMEOUT, &[])
        .await
        .map_err(|_| WorkspaceError::BadPath(format!("branch {branch:?} does not exist in {repo}")))?
        .trim()
        .to_string();
    let worktree = worktree_path(data_dir, session_id);
    let wt_str = worktree.to_string_lossy().into_owned();
    let new_branch = session_branch(session_id);
    git(&bare, &["worktree", "add", "--quiet", "-b", &new_branch, &wt_str, &base], LOCAL_TIMEOUT, &[]).await?;
    Ok(Prepared { repo: repo.to_string(), branch: branch.to_string(), worktree, base })
}

/// Removes a session's worktree and its branch.
pub async fn remove(data_dir: &Path, repo: &str, session_id: &str) -> Result<(), WorkspaceError> {
    let bare = bare_path(data_dir, repo);
    let worktree = worktree_path(data_dir, session_id);
    let wt_str = worktree.to_string_lossy().into_owned();
    if worktree.exists() {
        git(&bare, &["worktree", "remove", "--force", &wt_str], LOCAL_TIMEOUT, &[]).await?;
    }
    git(&bare, &["worktree", "prune"], LOCAL_TIMEOUT, &[]).await?;
    let branch = session_branch(session_id);
    // The branch may already be gone (a delete that failed half-way and was retried).
    let exists =
        git(&bare, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")], LOCAL_TIMEOUT, &[1]).await?;
    if !exists.trim().is_empty() {
        git(&bare, &["branch", "-D", &branch], LOCAL_TIMEOUT, &[]).await?;
    }
    Ok(())
}

/// Checks a client path lexically and returns its normal components.
/// `%` followed by two hex digits is refused: the query was decoded once, so
/// what remains is a second encoding meant to slip `..` past a check.
fn components(rel: &str) -> Result<Vec<String>, WorkspaceError> {
    let bad = |why: &str| WorkspaceError::BadPath(format!("path {rel:?} {why}"));
    if rel.contains('\0') || rel.contains('\\') {
        return Err(bad("contains a NUL or a backslash"));
    }
    let bytes = rel.as_bytes();
    if bytes.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()) {
        return Err(bad("is percent-encoded twice"));
    }
    if Path::new(rel).is_absolute() {
        return Err(bad("is absolute; give a path relative to the worktree"));
    }
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(s) => {
                let s = s.to_string_lossy().into_owned();
                if s == ".git" {
                    return Err(bad("is inside .git"));
                }
                parts.push(s);
            }
            Component::CurDir => {}
            _ => return Err(bad("leaves the worktree")),
        }
    }
    Ok(parts)
}

/// How often an `openat2` that the kernel could not finish safely (EAGAIN:
/// a rename elsewhere in the tree during a `..` step; or EINTR) is retried,
/// and how often a write retries a file that appeared or vanished while it
/// was being opened.
const OPEN_ATTEMPTS: usize = 8;

/// `openat2(2)` of `path` beneath `dir`: the kernel refuses with EXDEV any
/// step that would leave `dir` (`..`, an absolute path, a symlink, absolute
/// or relative), checked as it walks, so a tree changing meanwhile cannot
/// lead it out; /proc magic links are not followed either.
fn open_beneath(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data (three u64); all zeros is a valid value,
    // and the one the kernel wants in fields it may grow later.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_* flags are non-negative, so widening keeps the bits.
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    let mut attempts = 0;
    loop {
        // SAFETY: `dir` is an open descriptor for the whole call, `path` is
        // NUL-terminated, and `how` is an open_how whose exact size is passed;
        // the kernel only reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("openat2 returned an invalid descriptor"))?;
            // SAFETY: the kernel has just given us this descriptor; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        attempts += 1;
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) if attempts < OPEN_ATTEMPTS => continue,
            _ => return Err(err),
        }
    }
}

/// `mkdirat(2)` of the single name `name` in `dir`.
fn make_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` NUL-terminated for the whole call.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `unlinkat(2)` of the single name `name` in `dir` (not a directory).
fn unlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` NUL-terminated for the whole call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The path the kernel has for an open descriptor: where that very file or
/// directory is now, whatever path led to it.
fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Checked components as one relative path for the kernel; `.` for none.
fn kernel_path(parts: &[String]) -> Result<CString, WorkspaceError> {
    let joined = if parts.is_empty() { ".".to_string() } else { parts.join("/") };
    CString::new(joined).map_err(|_| WorkspaceError::BadPath("a path contains a NUL".into()))
}

/// What a failed open (or mkdir, unlink) of `rel` means for the client.
fn open_error(rel: &str, e: io::Error) -> WorkspaceError {
    match e.raw_os_error() {
        Some(libc::EXDEV) => WorkspaceError::BadPath(format!("path {rel:?} leaves the worktree")),
        Some(libc::ENOENT | libc::ENOTDIR) => WorkspaceError::NotFound(format!("{rel:?} does not exist")),
        Some(libc::ELOOP) => WorkspaceError::BadPath(format!("path {rel:?} has too many levels of symlinks")),
        Some(libc::EISDIR) => WorkspaceError::BadPath(format!("{rel:?} is a directory")),
        Some(libc::ENXIO) => WorkspaceError::BadPath(format!("{rel:?} is not a regular file")),
        Some(libc::ENAMETOOLONG) => WorkspaceError::BadPath(format!("path {rel:?} is too long")),
        // Falling back to resolving paths ourselves would bring back the
        // race this exists to close: refuse instead.
        Some(libc::ENOSYS) => WorkspaceError::Io {
            context: "the file API needs openat2(2) (Linux 5.6 or later) to keep paths inside the worktree, \
                      and this kernel does not have it"
                .into(),
            source: e,
        },
        _ => WorkspaceError::Io { context: format!("opening {rel:?}"), source: e },
    }
}

/// A worktree opened for one request. Every client path is resolved by the
/// kernel beneath this descriptor, never by name from `/`.
struct Tree {
    fd: OwnedFd,
    /// Where the worktree really is, to see where an opened descriptor landed.
    real: PathBuf,
}

impl Tree {
    fn open(root: &Path) -> Result<Tree, WorkspaceError> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)
            .map_err(io_err("opening the worktree"))?;
        let fd = OwnedFd::from(dir);
        let real = fd_path(fd.as_fd()).map_err(io_err("finding where the worktree is"))?;
        Ok(Tree { fd, real })
    }

    fn open_at(&self, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        open_beneath(self.fd.as_fd(), path, flags, 0)
    }

    /// Refuses a descriptor that is, or is inside, the worktree's `.git`: the
    /// lexical check stops `.git` in the path, this stops a symlink to it.
    /// Also refuses one that is no longer in the worktree at all (moved out
    /// after it was opened, which takes write access outside).
    fn check_inside(&self, fd: BorrowedFd<'_>, rel: &str) -> Result<(), WorkspaceError> {
        let real = fd_path(fd).map_err(io_err(format!("finding where {rel:?} is")))?;
        let inside = real
            .strip_prefix(&self.real)
            .map_err(|_| WorkspaceError::BadPath(format!("path {rel:?} leaves the worktree")))?;
        if inside.components().next() == Some(Component::Normal(OsStr::new(".git"))) {
            return Err(WorkspaceError::BadPath(format!("path {rel:?} is inside .git")));
        }
        Ok(())
    }

    /// Opens the directory that holds `rel`'s last component, `parents`,
    /// creating what is missing one directory at a time: each `mkdirat` goes
    /// in a directory already opened beneath the worktree, and what it made
    /// is opened again beneath the worktree, so a swap in between fails.
    fn make_parents(&self, rel: &str, parents: &[String]) -> Result<OwnedFd, WorkspaceError> {
        let mut dir = self.fd.try_clone().map_err(io_err("duplicating the worktree's descriptor"))?;
        for depth in 1..=parents.len() {
            let prefix = kernel_path(&parents[..depth])?;
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            let opened = match self.open_at(&prefix, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = kernel_path(&parents[depth - 1..depth])?;
                    match make_dir_at(dir.as_fd(), &name) {
                        // EEXIST: made meanwhile, or a symlink to nothing (which the open below reports).
                        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                            return Err(open_error(rel, e));
                        }
                        _ => {}
                    }
                    self.open_at(&prefix, flags)
                }
                other => other,
            };
            let opened = opened.map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => WorkspaceError::BadPath(format!(
                    "path {rel:?} goes through a symlink to something that does not exist"
                )),
                Some(libc::ENOTDIR) => {
                    WorkspaceError::BadPath(format!("path {rel:?} goes through something that is not a directory"))
                }
                _ => open_error(rel, e),
            })?;
            self.check_inside(opened.as_fd(), rel)?;
            dir = opened;
        }
        Ok(dir)
    }

    /// Opens `rel` for writing, creating it in `parent` when it does not
    /// exist. An existing file is reached through symlinks as long as they
    /// stay in the worktree; a new one is made with O_EXCL, which never
    /// follows a symlink, so a dangling one cannot make its target appear.
    fn open_for_write(&self, rel: &str, parts: &[String], parent: BorrowedFd<'_>) -> Result<OwnedFd, WorkspaceError> {
        let path = kernel_path(parts)?;
        let name = kernel_path(&parts[parts.len().saturating_sub(1)..])?;
        // No O_TRUNC: the file is emptied only once it passed `check_inside`.
        // O_NONBLOCK: a FIFO left in the tree must not hold the thread.
        let existing = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let new = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY;
        for _ in 0..OPEN_ATTEMPTS {
            match self.open_at(&path, existing) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => return other.map_err(|e| open_error(rel, e)),
            }
            match open_beneath(parent, &name, new, 0o666) {
                // Created by someone else meanwhile, or a symlink to nothing: look again.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                other => return other.map_err(|e| open_error(rel, e)),
            }
        }
        Err(WorkspaceError::BadPath(format!("path {rel:?} is a symlink to something that does not exist")))
    }
}

/// Runs a file operation's blocking system calls off the async workers.
async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, WorkspaceError> + Send + 'static,
) -> Result<T, WorkspaceError> {
    tokio::task::spawn_blocking(operation)
        .await
        .map_err(|e| WorkspaceError::Io { context: "running a file operation".into(), source: io::Error::other(e) })?
}

pub async fn list(root: &Path, rel: &str) -> Result<Vec<Entry>, WorkspaceError> {
    let (root, rel) = (root.to_path_buf(), rel.to_string());
    blocking(move || list_blocking(&root, &rel)).await
}

fn list_blocking(root: &Path, rel: &str) -> Result<Vec<Entry>, WorkspaceError> {
    let parts = components(rel)?;
    let tree = Tree::open(root)?;
    let dir = tree.open_at(&kernel_path(&parts)?, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENOTDIR) => WorkspaceError::BadPath(format!("{rel:?} is not a directory")),
            _ => open_error(rel, e),
        }
    })?;
    tree.check_inside(dir.as_fd(), rel)?;
    // Read through the opened directory (its /proc link is that directory,
    // not a path looked up again); entries are stat'ed relative to it.
    let listing =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(io_err(format!("listing {rel:?}")))?;
    let mut entries = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io_err(format!("listing {rel:?}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Deleted since the directory was read: it is not there any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(WorkspaceError::Io { context: format!("reading {name:?}"), source: e }),
        };
        let kind = if meta.file_type().is_symlink() {
            "symlink"
        } else if meta.is_dir() {
            "dir"
        } else {
            "file"
        };
        entries.push(Entry { name, kind, size: meta.len() });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

pub async fn read(root: &Path, rel: &str) -> Result<String, WorkspaceError> {
    let (root, rel) = (root.to_path_buf(), rel.to_string());
    blocking(move || read_blocking(&root, &rel)).await
}

fn read_blocking(root: &Path, rel: &str) -> Result<String, WorkspaceError> {
    let parts = components(rel)?;
    let tree = Tree::open(root)?;
    // O_NONBLOCK: opening a FIFO left in the tree must not hold the thread.
    let fd = tree
        .open_at(&kernel_path(&parts)?, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
        .map_err(|e| open_error(rel, e))?;
    tree.check_inside(fd.as_fd(), rel)?;
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io_err(format!("reading {rel:?}")))?;
    if !meta.is_file() {
        return Err(WorkspaceError::BadPath(format!("{rel:?} is not a file")));
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(WorkspaceError::TooLarge { size: meta.len(), limit: MAX_FILE_BYTES });
    }
    // The file may grow after the fstat: never read past the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file).take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io_err(format!("reading {rel:?}")))?;
    if bytes.len() > MAX_FILE_BYTES {
        let size = file.metadata().map_or(bytes.len() as u64, |m| m.len());
        return Err(WorkspaceError::TooLarge { size, limit: MAX_FILE_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| WorkspaceError::NotText(rel.to_string()))
}

/// Writes `content` to `rel`, creating parent directories. Returns the bytes
/// written. A symlink on the way, last component included, is followed as
/// long as it stays in the worktree (and out of `.git`).
pub async fn write(root: &Path, rel: &str, content: &str) -> Result<u64, WorkspaceError> {
    if content.len() > MAX_FILE_BYTES {
        return Err(WorkspaceError::TooLarge { size: content.len() as u64, limit: MAX_FILE_BYTES });
    }
    let (root, rel, content) = (root.to_path_buf(), rel.to_string(), content.to_string());
    blocking(move || write_blocking(&root, &rel, content.as_bytes())).await
}

fn write_blocking(root: &Path, rel: &str, content: &[u8]) -> Result<u64, WorkspaceError> {
    let parts = components(rel)?;
    let Some((_, parents)) = parts.split_last() else {
        return Err(WorkspaceError::BadPath("give a file path, not the worktree itself".into()));
    };
    let tree = Tree::open(root)?;
    let parent = tree.make_parents(rel, parents)?;
    let fd = tree.open_for_write(rel, &parts, parent.as_fd())?;
    tree.check_inside(fd.as_fd(), rel)?;
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io_err(format!("writing {rel:?}")))?;
    if !meta.is_file() {
        return Err(WorkspaceError::BadPath(format!("{rel:?} is not a regular file")));
    }
    file.set_len(0).map_err(io_err(format!("writing {rel:?}")))?;
    file.write_all(content).map_err(io_err(format!("writing {rel:?}")))?;
    Ok(content.len() as u64)
}

/// Deletes the file `rel`. Returns its size. A symlink is removed itself,
/// not its target; one leading out of the worktree or into `.git` is
/// refused like every other path that does.
pub async fn delete(root: &Path, rel: &str) -> Result<u64, WorkspaceError> {
    let (root, rel) = (root.to_path_buf(), rel.to_string());
    blocking(move || delete_blocking(&root, &rel)).await
}

fn delete_blocking(root: &Path, rel: &str) -> Result<u64, WorkspaceError> {
    let parts = components(rel)?;
    let Some((_, parents)) = parts.split_last() else {
        return Err(WorkspaceError::BadPath("give a file path, not the worktree itself".into()));
    };
    let tree = Tree::open(root)?;
    let parent =
        tree.open_at(&kernel_path(parents)?, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| open_error(rel, e))?;
    tree.check_inside(parent.as_fd(), rel)?;
    let name = kernel_path(&parts[parents.len()..])?;
    let entry =
        open_beneath(parent.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(|e| open_error(rel, e))?;
    let meta = std::fs::File::from(entry).metadata().map_err(io_err(format!("deleting {rel:?}")))?;
    if meta.is_dir() {
        return Err(WorkspaceError::BadPath(format!("{rel:?} is a directory; only files are deleted")));
    }
    if meta.file_type().is_symlink() {
        match tree.open_at(&kernel_path(&parts)?, libc::O_PATH) {
            Ok(target) => tree.check_inside(target.as_fd(), rel)?,
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Err(open_error(rel, e)),
            // Dangling or a loop: only the link goes, and it is in the worktree.
            Err(_) => {}
        }
    }
    unlink_at(parent.as_fd(), &name).map_err(|e| match e.raw_os_error() {
        // Replaced by a directory since the check.
        Some(libc::EISDIR) => WorkspaceError::BadPath(format!("{rel:?} is a directory; only files are deleted")),
        _ => open_error(rel, e),
    })?;
    Ok(meta.len())
}

/// Git on a session's worktree, told where the worktree's git dir is rather
/// than reading it from the worktree's `.git` file: whoever works in the
/// worktree (a jailed agent) can rewrite that file to point at a git dir of
/// its own, whose config (`core.fsmonitor`, say) would run commands as the
/// daemon, outside the jail. The git dir is found in the bare clone, in the
/// data dir, which jails never see.
pub(crate) struct WorktreeGit {
    root: PathBuf,
    git_dir: PathBuf,
}

impl WorktreeGit {
    /// `root` must be a worktree made by [`prepare`]:
    /// `<data_dir>/worktrees/<session>`.
    pub(crate) async fn open(root: &Path) -> Result<WorktreeGit, WorkspaceError> {
        let root = tokio::fs::canonicalize(root).await.map_err(io_err("resolving the worktree"))?;
        let not_ours = || WorkspaceError::Git {
            command: "worktree".into(),
            message: format!("{} is not a worktree of this daemon", root.display()),
        };
        let data_dir = root.parent().and_then(Path::parent).ok_or_else(not_ours)?;
        let dot_git = root.join(".git");
        let mut repos = match tokio::fs::read_dir(data_dir.join("repos")).await {
            Ok(repos) => repos,
            Err(_) => return Err(not_ours()),
        };
        while let Some(bare) = repos.next_entry().await.map_err(io_err("listing the bare clones"))? {
            let Ok(mut admins) = tokio::fs::read_dir(bare.path().join("worktrees")).await else { continue };
            while let Some(admin) = admins.next_entry().await.map_err(io_err("listing a clone's worktrees"))? {
                let Ok(gitdir) = tokio::fs::read_to_string(admin.path().join("gitdir")).await else { continue };
                if Path::new(gitdir.trim()) == dot_git {
                    return Ok(WorktreeGit { root, git_dir: admin.path() });
                }
            }
        }
        Err(not_ours())
    }

    pub(crate) async fn run(
        &self,
        args: &[&str],
        timeout: Duration,
        ok_codes: &[i32],
    ) -> Result<String, WorkspaceError> {
        self.run_with_env(args, timeout, ok_codes, &[]).await
    }

    async fn run_with_env(
        &self,
        args: &[&str],
        timeout: Duration,
        ok_codes: &[i32],
        env: &[(&str, &str)],
    ) -> Result<String, WorkspaceError> {
        let git_dir = format!("--git-dir={}", self.git_dir.display());
        let work_tree = format!("--work-tree={}", self.root.display());
        let mut full: Vec<&str> = vec![&git_dir, &work_tree];
        full.extend_from_slice(args);
        git_with_env(&self.root, &full, timeout, ok_codes, env).await
    }
}

/// Fixed-string search over tracked and untracked files, skipping what
/// .gitignore excludes and binary files.
pub async fn search(root: &Path, q: &str) -> Result<Vec<Hit>, WorkspaceError> {
    if q.is_empty() {
        return Err(WorkspaceError::BadPath("q must not be empty".into()));
    }
    let out = WorktreeGit::open(root)
        .await?
        .run(&["grep", "-n", "-I", "--untracked", "--no-color", "--full-name", "-F", "-e", q], LOCAL_TIMEOUT, &[1])
        .await?;
    let mut hits = Vec::new();
    for line in out.lines().take(MAX_SEARCH_RESULTS) {
        let mut it = line.splitn(3, ':');
        if let (Some(path), Some(n), Some(text)) = (it.next(), it.next(), it.next()) {
            if let Ok(line) = n.parse() {
                hits.push(Hit { path: path.to_string(), line, text: text.to_string() });
            }
        }
    }
    Ok(hits)
}

/// The diff of the worktree against `base`, uncommitted and untracked files included.
pub async fn diff(root: &Path, base: &str) -> Result<String, WorkspaceError> {
    let git = WorktreeGit::open(root).await?;
    let mut text = git.run(&["diff", "--no-color", base, "--"], LOCAL_TIMEOUT, &[]).await?;
    let untracked = git.run(&["ls-files", "--others", "--exclude-standard", "-z"], LOCAL_TIMEOUT, &[]).await?;
    for file in untracked.split('\0').filter(|f| !f.is_empty()) {
        // --no-index exits 1 when the files differ, which they always do here.
        let d = git.run(&["diff", "--no-color", "--no-index", "--", "/dev/null", file], LOCAL_TIMEOUT, &[1]).await?;
        text.push_str(&d);
    }
    Ok(text)
}

/// Commits everything in the worktree; returns the new commit's sha.
pub async fn commit(root: &Path, message: &str) -> Result<String, WorkspaceError> {
    if message.trim().is_empty() {
        return Err(WorkspaceError::BadPath("message must not be empty".into()));
    }
    let git = WorktreeGit::open(root).await?;
    git.run(&["add", "-A"], LOCAL_TIMEOUT, &[]).await?;
    let staged = git.run(&["diff", "--cached", "--name-only"], LOCAL_TIMEOUT, &[]).await?;
    if staged.trim().is_empty() {
        return Err(WorkspaceError::Conflict("nothing to commit".into()));
    }
    let mut args = identity_args(&git).await?;
    args.extend(["commit", "--quiet", "--no-verify", "-m", message]);
    git.run(&args, LOCAL_TIMEOUT, &[]).await?;
    Ok(git.run(&["rev-parse", "HEAD"], LOCAL_TIMEOUT, &[]).await?.trim().to_string())
}

/// `-c user.name=.. -c user.email=..` where no git identity is configured:
/// a daemon may run where nobody set one.
pub(crate) async fn identity_args(git: &WorktreeGit) -> Result<Vec<&'static str>, WorkspaceError> {
    let has_identity = !git.run(&["config", "user.email"], LOCAL_TIMEOUT, &[1]).await?.trim().is_empty();
    Ok(if has_identity { vec![] } else { vec!["-c", "user.name=Bosun", "-c", "user.email=bosun@localhost"] })
}

/// A token for pushing over HTTPS, given to git through `GIT_ASKPASS` in
/// the environment of that one git process: never in a file, an argument,
/// a URL or a log line.
#[derive(Clone)]
pub struct PushCredentials {
    pub username: String,
    pub token: String,
}

impl std::fmt::Debug for PushCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCredentials").field("username", &self.username).field("token", &"<redacted>").finish()
    }
}

/// The askpass program git runs for a username or a password: it answers
/// from its environment, so the file holds no secret.
const ASKPASS_SCRIPT: &str = "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$BOSUN_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$BOSUN_GIT_TOKEN\" ;;\nesac\n";

/// Writes the askpass script into `data_dir` (once; it never changes).
async fn askpass_program(data_dir: &Path) -> Result<PathBuf, WorkspaceError> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join("git-askpass.sh");
    if tokio::fs::read_to_string(&path).await.ok().as_deref() != Some(ASKPASS_SCRIPT) {
        let tmp = data_dir.join(format!("git-askpass.sh.{}", std::process::id()));
        tokio::fs::write(&tmp, ASKPASS_SCRIPT).await.map_err(io_err("writing the git askpass script"))?;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io_err("making the git askpass script executable"))?;
        tokio::fs::rename(&tmp, &path).await.map_err(io_err("installing the git askpass script"))?;
    }
    Ok(path)
}

/// Pushes the session branch of the worktree at `root` to the origin its
/// repository was cloned from. With `credentials`, git asks our askpass
/// program (and no credential helper, which might store them); without, git
/// uses what the host has (an SSH agent, a credential helper) and never
/// prompts.
pub async fn push(
    data_dir: &Path,
    root: &Path,
    session_id: &str,
    credentials: Option<&PushCredentials>,
) -> Result<(), WorkspaceError> {
    let branch = session_branch(session_id);
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let askpass;
    let mut env: Vec<(&str, &str)> = Vec::new();
    let mut args: Vec<&str> = Vec::new();
    if let Some(credentials) = credentials {
        askpass = askpass_program(data_dir).await?;
        let program = askpass.to_str().ok_or_else(|| WorkspaceError::BadPath("the data dir is not UTF-8".into()))?;
        env.extend([
            ("GIT_ASKPASS", program),
            ("BOSUN_GIT_USERNAME", credentials.username.as_str()),
            ("BOSUN_GIT_TOKEN", credentials.token.as_str()),
        ]);
        // An empty helper list: no helper sees (and maybe stores) the token.
        args.extend(["-c", "credential.helper="]);
    }
    args.extend(["push", "--quiet", "--porcelain", "origin", &refspec]);
    WorktreeGit::open(root).await?.run_with_env(&args, NETWORK_TIMEOUT, &[], &env).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_checks() {
        for bad in ["../x", "/etc/passwd", "a/../../x", ".git/config", "a/.git", "%2e%2e/x", "a\\b", "x/.."] {
            assert!(components(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(components("./a/b.txt").unwrap(), vec!["a", "b.txt"]);
        assert!(components("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn push_credentials_reach_git_through_askpass_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let program = askpass_program(dir.path()).await.unwrap();
        let token = "tok-3f9a-secret";
        let env = [
            ("GIT_ASKPASS", program.to_str().unwrap()),
            ("BOSUN_GIT_USERNAME", "x-access-token"),
            ("BOSUN_GIT_TOKEN", token),
        ];
        // What git does before an HTTPS push: ask for a username and password.
        let mut child = Command::new("git")
            .args(["-c", "credential.helper=", "credential", "fill"])
            .envs(env)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"protocol=https\nhost=git.example.com\n\n").await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("username=x-access-token\n"), "{text}");
        assert!(text.contains(&format!("password={token}\n")), "{text}");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let content = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!content.contains(token));
        }
        let shown = format!("{:?}", PushCredentials { username: "u".into(), token: token.into() });
        assert!(!shown.contains(token), "{shown}");
    }

    #[test]
    fn credentials_in_urls_are_refused() {
        assert!(check_no_credentials("https://user:tok@example.com/r.git").is_err());
        assert!(check_no_credentials("https://example.com/r.git").is_ok());
        assert!(check_no_credentials("ssh://git@example.com/r.git").is_ok());
        assert!(check_no_credentials("/srv/a:b@c").is_ok());
    }

    /// Swaps `a` and `b` in one step, so each name always exists.
    fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
        let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: both are NUL-terminated strings that outlive the call.
        let ret =
            unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// An agent swapping `dir` for a symlink to outside the worktree, as
    /// fast as it can, while requests run: none may read, write, delete or
    /// list anything outside.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn swapping_a_directory_for_a_symlink_mid_request_never_reaches_outside() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("dir/f.txt"), "inside\n").unwrap();
        std::fs::write(outside.join("f.txt"), "OUTSIDE\n").unwrap();
        std::fs::write(outside.join("keep.txt"), "OUTSIDE\n").unwrap();
        std::fs::write(outside.join("secret-name"), "").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("parked")).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, dir, parked) = (stop.clone(), root.join("dir"), root.join("parked"));
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                // Stops at an error too: after a failed assertion the tempdir is gone.
                while !stop.load(Ordering::Relaxed) {
                    exchange(&dir, &parked)?;
                    swaps += 1;
                }
                Ok::<u64, std::io::Error>(swaps)
            })
        };
        let outside_untouched = || {
            let mut names: Vec<String> =
                std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            assert_eq!(names, ["f.txt", "keep.txt", "secret-name"], "a file appeared or vanished outside");
            for name in ["f.txt", "keep.txt"] {
                assert_eq!(std::fs::read_to_string(outside.join(name)).unwrap(), "OUTSIDE\n", "{name} was written");
            }
        };
        let refused = |e: &WorkspaceError| matches!(e, WorkspaceError::BadPath(_) | WorkspaceError::NotFound(_));
        let (mut done, mut refusals) = (0u64, 0u64);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut rounds = 0;
        while rounds < 2000 && std::time::Instant::now() < deadline {
            rounds += 1;
            let content = format!("inside {rounds}\n");
            match write(&root, "dir/f.txt", &content).await {
                Ok(_) => done += 1,
                Err(e) => assert!(refused(&e), "{e}"),
            }
            match read(&root, "dir/f.txt").await {
                Ok(text) => {
                    assert!(text.starts_with("inside"), "read {text:?} from outside the worktree");
                    done += 1;
                }
                Err(e) => assert!(refused(&e), "{e}"),
            }
            match write(&root, "dir/keep.txt", "inside\n").await {
                Ok(_) => done += 1,
                Err(e) => assert!(refused(&e), "{e}"),
            }
            match delete(&root, "dir/keep.txt").await {
                Ok(_) => done += 1,
                Err(e) => assert!(refused(&e), "{e}"),
            }
            match list(&root, "dir").await {
                Ok(entries) => {
                    assert!(entries.iter().all(|e| e.name != "secret-name"), "listed the outside directory");
                    done += 1;
                }
                Err(e) => assert!(refused(&e), "{e}"),
            }
            outside_untouched();
            refusals = rounds * 5 - done;
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = flipper.join().unwrap().unwrap();
        outside_untouched();
        // Both outcomes happened: the race was really run.
        assert!(done > 0 && refusals > 0, "{done} done, {refusals} refused, {swaps} swaps in {rounds} rounds");
    }

    /// A worktree `root` and, next to it, `outside` holding `secret.txt`.
    fn tree_and_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
        (base, root, outside)
    }

    fn assert_leaves(result: Result<impl std::fmt::Debug, WorkspaceError>, what: &str) {
        match result {
            Err(WorkspaceError::BadPath(m)) => assert!(m.contains("leaves the worktree"), "{what}: {m}"),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn symlinks_leaving_the_worktree_are_refused() {
        use std::os::unix::fs::symlink;
        let (_base, root, outside) = tree_and_outside();
        symlink(&outside, root.join("abs_dir")).unwrap();
        symlink("../outside", root.join("rel_dir")).unwrap();
        symlink("../../outside", root.join("sub/deep_dir")).unwrap();
        symlink(outside.join("secret.txt"), root.join("abs_file")).unwrap();
        symlink("../outside/secret.txt", root.join("rel_file")).unwrap();
        symlink("../outside/new.txt", root.join("rel_new")).unwrap();
        // Absolute, even to a file inside: the kernel refuses every absolute link.
        std::fs::write(root.join("inside.txt"), "inside\n").unwrap();
        symlink(root.join("inside.txt"), root.join("abs_inside")).unwrap();

        for dir in ["abs_dir", "rel_dir", "sub/deep_dir"] {
            assert_leaves(list(&root, dir).await, dir);
            assert_leaves(read(&root, &format!("{dir}/secret.txt")).await, dir);
            assert_leaves(write(&root, &format!("{dir}/secret.txt"), "pwned").await, dir);
            assert_leaves(write(&root, &format!("{dir}/new.txt"), "pwned").await, dir);
            assert_leaves(write(&root, &format!("{dir}/made/new.txt"), "pwned").await, dir);
            assert_leaves(delete(&root, &format!("{dir}/secret.txt")).await, dir);
        }
        for file in ["abs_file", "rel_file", "rel_new", "abs_inside"] {
            assert_leaves(read(&root, file).await, file);
            assert_leaves(write(&root, file, "pwned").await, file);
            assert_leaves(delete(&root, file).await, file);
            assert!(std::fs::symlink_metadata(root.join(file)).is_ok(), "{file} was deleted");
        }
        let mut names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["secret.txt"]);
        assert_eq!(std::fs::read_to_string(outside.join("secret.txt")).unwrap(), "secret\n");
        assert_eq!(std::fs::read_to_string(root.join("inside.txt")).unwrap(), "inside\n");
    }

    #[tokio::test]
    async fn symlinks_inside_the_worktree_work() {
        use std::os::unix::fs::symlink;
        let (_base, root, _outside) = tree_and_outside();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/a.txt"), "a\n").unwrap();
        symlink("real", root.join("link_dir")).unwrap();
        symlink("../real", root.join("sub/up")).unwrap();
        symlink("real/a.txt", root.join("link_file")).unwrap();

        assert_eq!(read(&root, "link_file").await.unwrap(), "a\n");
        assert_eq!(read(&root, "sub/up/a.txt").await.unwrap(), "a\n");
        let listed = list(&root, "link_dir").await.unwrap();
        assert_eq!(listed, vec![Entry { name: "a.txt".into(), kind: "file", size: 2 }]);
        let top = list(&root, "").await.unwrap();
        let kinds: Vec<(&str, &str)> = top.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(kinds, [("link_dir", "symlink"), ("link_file", "symlink"), ("real", "dir"), ("sub", "dir")]);

        // Writing through a link writes its target; the link stays a link.
        write(&root, "link_file", "through\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(root.join("real/a.txt")).unwrap(), "through\n");
        assert!(std::fs::symlink_metadata(root.join("link_file")).unwrap().file_type().is_symlink());
        write(&root, "sub/up/new/b.txt", "b\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(root.join("real/new/b.txt")).unwrap(), "b\n");

        // Deleting a link removes the link, not its target.
        assert_eq!(delete(&root, "link_file").await.unwrap(), "real/a.txt".len() as u64);
        assert!(std::fs::symlink_metadata(root.join("link_file")).is_err());
        assert!(root.join("real/a.txt").exists());
        // A dangling link inside can be deleted, not written through.
        symlink("real/missing.txt", root.join("dangling")).unwrap();
        assert!(matches!(write(&root, "dangling", "x").await, Err(WorkspaceError::BadPath(_))));
        assert!(!root.join("real/missing.txt").exists());
        delete(&root, "dangling").await.unwrap();
        assert!(std::fs::symlink_metadata(root.join("dangling")).is_err());
    }

    #[tokio::test]
    async fn git_is_refused_through_symlinks() {
        use std::os::unix::fs::symlink;
        let refused_as_git = |result: Result<String, WorkspaceError>, what: &str| match result {
            Err(WorkspaceError::BadPath(m)) => assert!(m.contains(".git"), "{what}: {m}"),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        };
        // A worktree's .git is a file.
        let (_base, root, _outside) = tree_and_outside();
        std::fs::write(root.join(".git"), "gitdir: /somewhere\n").unwrap();
        symlink(".git", root.join("g")).unwrap();
        symlink("../.git", root.join("sub/g")).unwrap();
        for link in ["g", "sub/g"] {
            refused_as_git(read(&root, link).await, link);
            refused_as_git(write(&root, link, "gitdir: /evil\n").await.map(|n| n.to_string()), link);
            refused_as_git(delete(&root, link).await.map(|n| n.to_string()), link);
            assert!(std::fs::symlink_metadata(root.join(link)).is_ok());
        }
        assert_eq!(std::fs::read_to_string(root.join(".git")).unwrap(), "gitdir: /somewhere\n");

        // A plain repository's .git is a directory.
        let (_base, root, _outside) = tree_and_outside();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
        symlink(".git", root.join("g")).unwrap();
        refused_as_git(list(&root, "g").await.map(|e| format!("{e:?}")), "list");
        refused_as_git(read(&root, "g/config").await, "read");
        refused_as_git(write(&root, "g/config", "[core]\nfsmonitor = evil\n").await.map(|n| n.to_string()), "write");
        refused_as_git(write(&root, "g/hooks/pre-commit", "evil").await.map(|n| n.to_string()), "write new");
        refused_as_git(delete(&root, "g/config").await.map(|n| n.to_string()), "delete");
        assert_eq!(std::fs::read_to_string(root.join(".git/config")).unwrap(), "[core]\n");
        assert!(!root.join(".git/hooks").exists());
        let names: Vec<String> = list(&root, "").await.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["g", "sub"], ".git is never listed");
    }

    #[tokio::test]
    async fn writes_create_parents_and_every_operation_keeps_its_errors() {
        let (_base, root, _outside) = tree_and_outside();
        assert_eq!(write(&root, "a/b/c.txt", "long content\n").await.unwrap(), 13);
        assert_eq!(write(&root, "a/b/c.txt", "short\n").await.unwrap(), 6);
        assert_eq!(std::fs::read_to_string(root.join("a/b/c.txt")).unwrap(), "short\n", "truncated");
        assert!(matches!(write(&root, "a/b", "x").await, Err(WorkspaceError::BadPath(_))), "a directory");
        assert!(matches!(write(&root, "", "x").await, Err(WorkspaceError::BadPath(_))), "the worktree");
        assert!(matches!(write(&root, "a/b/c.txt/d", "x").await, Err(WorkspaceError::BadPath(_))));
        let big = "a".repeat(MAX_FILE_BYTES + 1);
        assert!(matches!(write(&root, "big.txt", &big).await, Err(WorkspaceError::TooLarge { .. })));
        assert!(!root.join("big.txt").exists());

        std::fs::write(root.join("big.txt"), &big).unwrap();
        assert!(matches!(read(&root, "big.txt").await, Err(WorkspaceError::TooLarge { .. })));
        std::fs::write(root.join("bin.dat"), [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(read(&root, "bin.dat").await, Err(WorkspaceError::NotText(_))));
        assert!(matches!(read(&root, "a").await, Err(WorkspaceError::BadPath(_))), "a directory");
        assert!(matches!(read(&root, "missing").await, Err(WorkspaceError::NotFound(_))));
        assert!(matches!(read(&root, "bin.dat/x").await, Err(WorkspaceError::NotFound(_))));
        assert!(matches!(list(&root, "bin.dat").await, Err(WorkspaceError::BadPath(_))), "a file");
        assert!(matches!(list(&root, "missing").await, Err(WorkspaceError::NotFound(_))));
        assert!(matches!(delete(&root, "missing").await, Err(WorkspaceError::NotFound(_))));
        assert!(matches!(delete(&root, "a/b").await, Err(WorkspaceError::BadPath(_))), "a directory");
        assert!(matches!(delete(&root, "").await, Err(WorkspaceError::BadPath(_))));
        assert_eq!(delete(&root, "a/b/c.txt").await.unwrap(), 6);
        assert!(!root.join("a/b/c.txt").exists());

        // A FIFO is neither read nor written, and does not hang either.
        let status = std::process::Command::new("mkfifo").arg(root.join("fifo")).status().unwrap();
        assert!(status.success());
        let fifo = tokio::time::timeout(Duration::from_secs(5), async {
            (read(&root, "fifo").await, write(&root, "fifo", "x").await)
        })
        .await
        .expect("a FIFO held the request");
        assert!(matches!(fifo.0, Err(WorkspaceError::BadPath(_))), "{:?}", fifo.0);
        assert!(matches!(fifo.1, Err(WorkspaceError::BadPath(_))), "{:?}", fifo.1);
    }

    #[test]
    fn a_kernel_without_openat2_is_a_clear_refusal() {
        let e = open_error("a.txt", io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(matches!(&e, WorkspaceError::Io { .. }) && e.to_string().contains("openat2"), "{e}");
        let e = open_error("a.txt", io::Error::from_raw_os_error(libc::EXDEV));
        assert!(matches!(&e, WorkspaceError::BadPath(m) if m.contains("leaves the worktree")), "{e}");
    }
}
