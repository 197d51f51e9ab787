//! Session workspaces: a bare clone per repository in the daemon's data dir,
//! a git worktree per session, and file operations that never leave it.
//!
//! Git runs as a `git` process with a timeout, so a hung fetch cannot hold a
//! request forever. Paths from clients are checked twice: lexically (no `..`,
//! no absolute path, no `.git`, no leftover percent-encoding) and after
//! resolving symlinks (the real path must stay under the worktree).

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Largest file the file API reads or writes.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Most results a search returns.
pub const MAX_SEARCH_RESULTS: usize = 1000;
/// How long a clone or fetch may take; local git commands get less.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(300);
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

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

/// The branch a session's worktree is on.
pub fn session_branch(session_id: &str) -> String {
    format!("bosun/{session_id}")
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
    let what = args.first().copied().unwrap_or("").to_string();
    let mut cmd = Command::new("git");
    cmd.args(args)
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
fn check_ref_input(what: &str, value: &str) -> Result<(), WorkspaceError> {
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
    if bare.exists() {
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

/// Resolves `rel` under `root` and checks the real path stays inside it.
/// For a path that does not exist yet, the nearest existing ancestor is
/// resolved instead: the rest are plain names, which cannot escape.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, WorkspaceError> {
    let parts = components(rel)?;
    let root = root.canonicalize().map_err(io_err("resolving the worktree"))?;
    let mut path = root.clone();
    for p in &parts {
        path.push(p);
    }
    let mut existing = path.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let real = existing
        .canonicalize()
        .map_err(|_| WorkspaceError::BadPath(format!("path {rel:?} points to something that does not exist")))?;
    if !real.starts_with(&root) || real.starts_with(root.join(".git")) {
        return Err(WorkspaceError::BadPath(format!("path {rel:?} leaves the worktree")));
    }
    let mut full = real;
    for name in rest.into_iter().rev() {
        full.push(name);
    }
    Ok(full)
}

pub async fn list(root: &Path, rel: &str) -> Result<Vec<Entry>, WorkspaceError> {
    let dir = resolve(root, rel)?;
    let mut rd = tokio::fs::read_dir(&dir).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WorkspaceError::NotFound(format!("{rel:?} does not exist")),
        std::io::ErrorKind::NotADirectory => WorkspaceError::BadPath(format!("{rel:?} is not a directory")),
        _ => WorkspaceError::Io { context: format!("listing {rel:?}"), source: e },
    })?;
    let mut entries = Vec::new();
    while let Some(e) = rd.next_entry().await.map_err(io_err(format!("listing {rel:?}")))? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let meta = tokio::fs::symlink_metadata(e.path()).await.map_err(io_err(format!("reading {name:?}")))?;
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
    let path = resolve(root, rel)?;
    let meta =
        tokio::fs::metadata(&path).await.map_err(|_| WorkspaceError::NotFound(format!("{rel:?} does not exist")))?;
    if !meta.is_file() {
        return Err(WorkspaceError::BadPath(format!("{rel:?} is not a file")));
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(WorkspaceError::TooLarge { size: meta.len(), limit: MAX_FILE_BYTES });
    }
    let bytes = tokio::fs::read(&path).await.map_err(io_err(format!("reading {rel:?}")))?;
    String::from_utf8(bytes).map_err(|_| WorkspaceError::NotText(rel.to_string()))
}

/// Writes `content` to `rel`, creating parent directories. Returns the bytes written.
pub async fn write(root: &Path, rel: &str, content: &str) -> Result<u64, WorkspaceError> {
    if content.len() > MAX_FILE_BYTES {
        return Err(WorkspaceError::TooLarge { size: content.len() as u64, limit: MAX_FILE_BYTES });
    }
    let path = resolve(root, rel)?;
    if path == root.canonicalize().map_err(io_err("resolving the worktree"))? {
        return Err(WorkspaceError::BadPath("give a file path, not the worktree itself".into()));
    }
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        return Err(WorkspaceError::BadPath(format!("{rel:?} is a directory")));
    }
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_err(format!("creating the parents of {rel:?}")))?;
    }
    tokio::fs::write(&path, content.as_bytes()).await.map_err(io_err(format!("writing {rel:?}")))?;
    Ok(content.len() as u64)
}

/// Deletes the file `rel`. Returns its size.
pub async fn delete(root: &Path, rel: &str) -> Result<u64, WorkspaceError> {
    let path = resolve(root, rel)?;
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(|_| WorkspaceError::NotFound(format!("{rel:?} does not exist")))?;
    if meta.is_dir() {
        return Err(WorkspaceError::BadPath(format!("{rel:?} is a directory; only files are deleted")));
    }
    tokio::fs::remove_file(&path).await.map_err(io_err(format!("deleting {rel:?}")))?;
    Ok(meta.len())
}

/// Fixed-string search over tracked and untracked files, skipping what
/// .gitignore excludes and binary files.
pub async fn search(root: &Path, q: &str) -> Result<Vec<Hit>, WorkspaceError> {
    if q.is_empty() {
        return Err(WorkspaceError::BadPath("q must not be empty".into()));
    }
    let out = git(
        root,
        &["grep", "-n", "-I", "--untracked", "--no-color", "--full-name", "-F", "-e", q],
        LOCAL_TIMEOUT,
        &[1],
    )
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
    let mut text = git(root, &["diff", "--no-color", base, "--"], LOCAL_TIMEOUT, &[]).await?;
    let untracked = git(root, &["ls-files", "--others", "--exclude-standard", "-z"], LOCAL_TIMEOUT, &[]).await?;
    for file in untracked.split('\0').filter(|f| !f.is_empty()) {
        // --no-index exits 1 when the files differ, which they always do here.
        let d = git(root, &["diff", "--no-color", "--no-index", "--", "/dev/null", file], LOCAL_TIMEOUT, &[1]).await?;
        text.push_str(&d);
    }
    Ok(text)
}

/// Commits everything in the worktree; returns the new commit's sha.
pub async fn commit(root: &Path, message: &str) -> Result<String, WorkspaceError> {
    if message.trim().is_empty() {
        return Err(WorkspaceError::BadPath("message must not be empty".into()));
    }
    git(root, &["add", "-A"], LOCAL_TIMEOUT, &[]).await?;
    let staged = git(root, &["diff", "--cached", "--name-only"], LOCAL_TIMEOUT, &[]).await?;
    if staged.trim().is_empty() {
        return Err(WorkspaceError::Conflict("nothing to commit".into()));
    }
    // A daemon may run where no git identity is configured; fall back to one.
    let has_identity = !git(root, &["config", "user.email"], LOCAL_TIMEOUT, &[1]).await?.trim().is_empty();
    let mut args = vec![];
    if !has_identity {
        args.extend(["-c", "user.name=Bosun", "-c", "user.email=bosun@localhost"]);
    }
    args.extend(["commit", "--quiet", "--no-verify", "-m", message]);
    git(root, &args, LOCAL_TIMEOUT, &[]).await?;
    Ok(git(root, &["rev-parse", "HEAD"], LOCAL_TIMEOUT, &[]).await?.trim().to_string())
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

    #[test]
    fn credentials_in_urls_are_refused() {
        assert!(check_no_credentials("https://user:tok@example.com/r.git").is_err());
        assert!(check_no_credentials("https://example.com/r.git").is_ok());
        assert!(check_no_credentials("ssh://git@example.com/r.git").is_ok());
        assert!(check_no_credentials("/srv/a:b@c").is_ok());
    }

    #[test]
    fn symlink_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        assert!(resolve(dir.path(), "etc/passwd").is_err());
        assert!(resolve(dir.path(), "etc").is_err());
        assert!(resolve(dir.path(), "new/dir/file.txt").is_ok());
    }
}
