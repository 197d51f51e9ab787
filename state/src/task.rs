//! Tasks: one line each of a checklist in a session's worktree. Written by
//! the tasks actor alone (`Owner::Tasks`).

use crate::{Owner, Record};
use bosun_proto::{TaskStatus, TaskView};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    /// The session whose worktree's docs/TASKS.md holds it.
    pub session_id: String,
    pub run_id: Option<String>,
    /// Whether its line has been in the file: a task missing from a file it
    /// was in was removed there; one not written yet was not.
    pub in_file: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for TaskRecord {
    const TREE: &'static str = "tasks";
    const OWNER: Owner = Owner::Tasks;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl TaskRecord {
    pub fn view(&self) -> TaskView {
        TaskView {
            id: self.id.clone(),
            title: self.title.clone(),
            status: self.status,
            session_id: self.session_id.clone().into(),
            run_id: self.run_id.clone().map(Into::into),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}
