//! Merging one session's branch into another's worktree: checked first with
//! `git merge-tree --write-tree` (which touches neither the worktree nor
//! any ref), then made as a merge commit only when it is clean.

use crate::{check_ref_input, identity_args, WorkspaceError, WorktreeGit, LOCAL_TIMEOUT};
use std::path::Path;

/// The most conflict text a check returns: enough for a person or a
/// resolver to see what collides, not a whole file set.
pub const MAX_HUNKS_BYTES: usize = 64 * 1024;

/// What merging a branch into the worktree's branch would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeCheck {
    Clean,
    /// The files that conflict, and their conflicting hunks with git's markers.
    Conflicts {
        files: Vec<String>,
        hunks: String,
    },
}

/// Whether `branch` is already in the worktree's history: merged before
/// (by a run that was cut after the merge, say).
pub async fn is_merged(root: &Path, branch: &str) -> Result<bool, WorkspaceError> {
    check_ref_input("branch", branch)?;
    let git = WorktreeGit::open(root).await?;
    // Nothing on the branch that HEAD lacks.
    let ahead = git.run(&["rev-list", "--count", &format!("HEAD..{branch}")], LOCAL_TIMEOUT, &[]).await?;
    Ok(ahead.trim() == "0")
}

/// What merging `branch` into the worktree's HEAD would give, without
/// making it.
pub async fn check_merge(root: &Path, branch: &str) -> Result<MergeCheck, WorkspaceError> {
    check_ref_input("branch", branch)?;
    let git = WorktreeGit::open(root).await?;
    // Exit 1: the merge has conflicts; the tree written holds their markers.
    let out = git
        .run(&["merge-tree", "--write-tree", "--name-only", "--no-messages", "HEAD", branch], LOCAL_TIMEOUT, &[1])
        .await?;
    let mut lines = out.lines();
    let tree = lines.next().unwrap_or("").trim().to_string();
    let files: Vec<String> = lines.map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if files.is_empty() {
        return Ok(MergeCheck::Clean);
    }
    let mut hunks = String::new();
    for file in &files {
        let text =
            git.run(&["cat-file", "-p", &format!("{tree}:{file}")], LOCAL_TIMEOUT, &[128]).await.unwrap_or_default();
        let regions = conflict_regions(&text);
        hunks.push_str(&format!("--- {file}\n"));
        if regions.is_empty() {
            // Not a text conflict (a delete against a change, a binary file).
            hunks.push_str("(no text hunks: a change against a deletion, or a binary file)\n");
        }
        for region in regions {
            hunks.push_str(&region);
        }
        if hunks.len() > MAX_HUNKS_BYTES {
            let mut cut = MAX_HUNKS_BYTES;
            while !hunks.is_char_boundary(cut) {
                cut -= 1;
            }
            hunks.truncate(cut);
            hunks.push_str("\n… (cut)\n");
            break;
        }
    }
    Ok(MergeCheck::Conflicts { files, hunks })
}

/// Merges `branch` into the worktree's branch as a merge commit (even when
/// it could fast-forward, so the history shows each branch taken). Check
/// first: a conflict here leaves the worktree mid-merge and is undone.
pub async fn merge(root: &Path, branch: &str, message: &str) -> Result<String, WorkspaceError> {
    check_ref_input("branch", branch)?;
    let git = WorktreeGit::open(root).await?;
    let mut args = identity_args(&git).await?;
    args.extend(["merge", "--no-ff", "--no-edit", "--quiet", "-m", message, branch]);
    if let Err(e) = git.run(&args, LOCAL_TIMEOUT, &[]).await {
        let _ = git.run(&["merge", "--abort"], LOCAL_TIMEOUT, &[128]).await;
        return Err(e);
    }
    head(root).await
}

/// Starts merging `branch` and leaves its conflicts in the worktree, with
/// git's markers, for someone to resolve (a merge already under way is
/// left as it is). The merge is concluded by committing the worktree.
pub async fn start_merge(root: &Path, branch: &str, message: &str) -> Result<Vec<String>, WorkspaceError> {
    check_ref_input("branch", branch)?;
    let git = WorktreeGit::open(root).await?;
    let under_way = git.run(&["rev-parse", "-q", "--verify", "MERGE_HEAD"], LOCAL_TIMEOUT, &[1]).await?;
    if under_way.trim().is_empty() {
        let mut args = identity_args(&git).await?;
        args.extend(["merge", "--no-ff", "--no-commit", "--quiet", "-m", message, branch]);
        // Exit 1: it conflicts, which is what this is for.
        git.run(&args, LOCAL_TIMEOUT, &[1]).await?;
    }
    let out = git.run(&["diff", "--name-only", "--diff-filter=U"], LOCAL_TIMEOUT, &[]).await?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// Which of `files` still hold conflict markers.
pub async fn with_markers(root: &Path, files: &[String]) -> Result<Vec<String>, WorkspaceError> {
    let mut left = Vec::new();
    for file in files {
        let text = crate::read(root, file).await.unwrap_or_default();
        if !conflict_regions(&text).is_empty() {
            left.push(file.clone());
        }
    }
    Ok(left)
}

pub async fn head(root: &Path) -> Result<String, WorkspaceError> {
    let git = WorktreeGit::open(root).await?;
    Ok(git.run(&["rev-parse", "HEAD"], LOCAL_TIMEOUT, &[]).await?.trim().to_string())
}

/// The files that differ between two commits.
pub async fn changed_files(root: &Path, from: &str, to: &str) -> Result<Vec<String>, WorkspaceError> {
    check_ref_input("commit", from)?;
    check_ref_input("commit", to)?;
    let git = WorktreeGit::open(root).await?;
    let out = git.run(&["diff", "--name-only", from, to, "--"], LOCAL_TIMEOUT, &[]).await?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// The `<<<<<<<` … `>>>>>>>` regions of a conflicted file.
fn conflict_regions(text: &str) -> Vec<String> {
    let mut regions = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split_inclusive('\n') {
        if line.starts_with("<<<<<<< ") || line.trim_end() == "<<<<<<<" {
            current = Some(String::new());
        }
        if let Some(region) = current.as_mut() {
            region.push_str(line);
            if line.starts_with(">>>>>>> ") || line.trim_end() == ">>>>>>>" {
                regions.extend(current.take());
            }
        }
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_cut_at_the_markers() {
        let text = "a\n<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> other\nb\n";
        assert_eq!(conflict_regions(text), vec!["<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> other\n"]);
        assert!(conflict_regions("no conflict\n").is_empty());
    }
}
