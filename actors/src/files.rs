//! Changes to a session's worktree through the file API (write, delete,
//! commit, push). The session actor makes them, so they take turns with the
//! session's turns: a change is refused while a turn runs (the worktree is
//! its agent's then), and a turn does not start while a change is under
//! way. Each write and delete is recorded on the session's topic before it
//! is acknowledged.
//!
//! Reads (list, read, search, diff) change nothing and stay in the front.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosun_proto::{events, EventData, Topic};
use bosun_state::{Batch, SessionRecord};
use bosun_workspace::{self as workspace, WorkspaceError};
use ractor::RpcReplyPort;

use crate::context::Context;
use crate::error::DaemonError;

/// A change to a session's worktree.
#[derive(Debug, Clone)]
pub enum FileChange {
    Write {
        path: String,
        content: String,
    },
    Delete {
        path: String,
    },
    /// Commits everything on the session branch; pushes it too with `push`.
    Commit {
        message: String,
        push: bool,
    },
    /// Commits whatever a finished workflow step left in its worktree, so
    /// the steps branching from it see it; nothing to commit is no error.
    Snapshot {
        message: String,
    },
    /// Merges another session's branch into this one's, if it merges
    /// cleanly (checked first); a branch already merged is left as it is.
    Merge {
        branch: String,
        message: String,
    },
    /// Starts merging a branch and leaves its conflicts in the worktree, for
    /// a resolver; committing the worktree concludes it.
    StartMerge {
        branch: String,
        message: String,
    },
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChanged {
    Written {
        bytes: u64,
    },
    Deleted {
        bytes: u64,
    },
    Committed {
        sha: String,
        pushed: bool,
        push_error: Option<String>,
    },
    /// The worktree's head after a snapshot (a new commit, or the old head
    /// when there was nothing to commit).
    Snapshot {
        head: String,
        committed: bool,
    },
    Merged(MergeOutcome),
}

/// What a [`FileChange::Merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    Merged {
        commit: String,
    },
    /// In the history already: nothing done.
    AlreadyMerged {
        head: String,
    },
    /// Not merged: it conflicts.
    Conflicts {
        files: Vec<String>,
        hunks: String,
    },
    /// Under way, with these files in conflict (`StartMerge`).
    Started {
        conflicted: Vec<String>,
    },
}

/// Why a change was not made: the daemon's (no workspace, a turn running)
/// or the worktree's (a bad path, nothing to commit...).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

pub type FilesResult = Result<FileChanged, FilesError>;

/// The worktree of `record`, or a conflict saying it has none.
pub fn worktree(record: &SessionRecord) -> Result<PathBuf, DaemonError> {
    match &record.workspace {
        Some(ws) => Ok(PathBuf::from(&ws.worktree)),
        None => Err(DaemonError::Conflict(format!(
            "session {} has no workspace; create it with \"workspace\":{{\"repo\":..}} to use the file API",
            record.id
        ))),
    }
}

/// Makes `change` in the worktree of `record`, whose actor calls this with
/// no turn running. A commit's push, which may take minutes on the network,
/// goes on behind the actor: `reply` is answered when it is done, and
/// `pushes` keeps the session's pushes one at a time.
pub async fn change(
    ctx: &Context,
    record: &SessionRecord,
    change: FileChange,
    pushes: &Arc<tokio::sync::Mutex<()>>,
    reply: RpcReplyPort<FilesResult>,
) {
    let root = match worktree(record) {
        Ok(root) => root,
        Err(e) => return drop(reply.send(Err(e.into()))),
    };
    let topic = Topic::session(&record.id);
    let result = match change {
        FileChange::Write { path, content } => match workspace::write(&root, &path, &content).await {
            Ok(bytes) => audit(ctx, topic, EventData::FileWritten(events::FileTouched { path, bytes }))
                .await
                .map(|()| FileChanged::Written { bytes }),
            Err(e) => Err(e.into()),
        },
        FileChange::Delete { path } => match workspace::delete(&root, &path).await {
            Ok(bytes) => audit(ctx, topic, EventData::FileDeleted(events::FileTouched { path, bytes }))
                .await
                .map(|()| FileChanged::Deleted { bytes }),
            Err(e) => Err(e.into()),
        },
        FileChange::Commit { message, push } => match workspace::commit(&root, &message).await {
            Ok(sha) if push => {
                tokio::spawn(push_then_reply(ctx.clone(), record.id.clone(), root, sha, pushes.clone(), reply));
                return;
            }
            Ok(sha) => Ok(FileChanged::Committed { sha, pushed: false, push_error: None }),
            Err(e) => Err(e.into()),
        },
        FileChange::Snapshot { message } => snapshot(&root, &message).await,
        FileChange::Merge { branch, message } => merge(&root, &branch, &message).await,
        FileChange::StartMerge { branch, message } => match workspace::start_merge(&root, &branch, &message).await {
            Ok(conflicted) => Ok(FileChanged::Merged(MergeOutcome::Started { conflicted })),
            Err(e) => Err(e.into()),
        },
    };
    let _ = reply.send(result);
}

async fn snapshot(root: &Path, message: &str) -> FilesResult {
    match workspace::commit(root, message).await {
        Ok(head) => Ok(FileChanged::Snapshot { head, committed: true }),
        Err(WorkspaceError::Conflict(_)) => {
            Ok(FileChanged::Snapshot { head: workspace::head(root).await?, committed: false })
        }
        Err(e) => Err(e.into()),
    }
}

async fn merge(root: &Path, branch: &str, message: &str) -> FilesResult {
    if workspace::is_merged(root, branch).await? {
        return Ok(FileChanged::Merged(MergeOutcome::AlreadyMerged { head: workspace::head(root).await? }));
    }
    let outcome = match workspace::check_merge(root, branch).await? {
        workspace::MergeCheck::Clean => MergeOutcome::Merged { commit: workspace::merge(root, branch, message).await? },
        workspace::MergeCheck::Conflicts { files, hunks } => MergeOutcome::Conflicts { files, hunks },
    };
    Ok(FileChanged::Merged(outcome))
}

/// The write happened: the event is its audit trail, committed before the
/// client hears it is done.
async fn audit(ctx: &Context, topic: Topic, event: EventData) -> Result<(), FilesError> {
    let mut batch = Batch::new();
    batch.event(event.into_event(topic));
    ctx.store.commit(batch).await.map_err(|e| FilesError::Daemon(e.into()))?;
    Ok(())
}

async fn push_then_reply(
    ctx: Context,
    session_id: String,
    root: PathBuf,
    sha: String,
    pushes: Arc<tokio::sync::Mutex<()>>,
    reply: RpcReplyPort<FilesResult>,
) {
    let _one_at_a_time = pushes.lock().await;
    let (pushed, push_error) = match push(&ctx, &session_id, &root).await {
        Ok(()) => (true, None),
        Err(e) => {
            tracing::warn!(session_id = %session_id, error = %e, "push failed");
            (false, Some(e.to_string()))
        }
    };
    let _ = reply.send(Ok(FileChanged::Committed { sha, pushed, push_error }));
}

async fn push(ctx: &Context, session_id: &str, root: &Path) -> Result<(), WorkspaceError> {
    let credentials = ctx.settings.git.credentials();
    workspace::push(&ctx.settings.data_dir, root, session_id, credentials.as_ref()).await
}
