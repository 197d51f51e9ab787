//! `docs/TASKS.md` as a Markdown checklist: read into tasks, and written
//! back with every line it does not understand kept as it was.
//!
//! A task is a list item with a checkbox; Bosun adds its id in an HTML
//! comment at the end, which renderers do not show:
//!
//! ```markdown
//! - [ ] Add a --json flag <!-- bosun:k_1a2b3c4d5e6f -->
//! - [ ] Parse the config <!-- bosun:k_2b3c4d5e6f7a in_progress -->
//! - [x] Write the docs <!-- bosun:k_3c4d5e6f7a8b -->
//! ```
//!
//! A person may add a line (`- [ ] something`, no comment: a new task),
//! tick or untick a box, edit a title or delete a line; everything else in
//! the file (headings, prose, other lists) is left alone.

use bosun_proto::TaskStatus;

pub const PATH: &str = "docs/TASKS.md";

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Task(TaskLine),
    /// Anything else, kept byte for byte.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLine {
    /// What comes before the checkbox (`- `, `  * `...), kept.
    pub lead: String,
    pub title: String,
    pub status: TaskStatus,
    /// `None` for a line a person added.
    pub id: Option<String>,
}

pub fn parse(text: &str) -> Vec<Line> {
    text.lines().map(|l| parse_line(l).map(Line::Task).unwrap_or_else(|| Line::Other(l.to_string()))).collect()
}

fn parse_line(line: &str) -> Option<TaskLine> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let bullet = trimmed.chars().next().filter(|c| matches!(c, '-' | '*' | '+'))?;
    let rest = trimmed[1..].strip_prefix(' ')?;
    let (checked, rest) = if let Some(r) = rest.strip_prefix("[ ] ") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix("[x] ").or_else(|| rest.strip_prefix("[X] ")) {
        (true, r)
    } else {
        return None;
    };
    let (title, id, marked) = match rest.rfind("<!-- bosun:") {
        Some(at) if rest.trim_end().ends_with("-->") => {
            let comment = rest[at + "<!-- bosun:".len()..].trim_end().trim_end_matches("-->").trim();
            let mut words = comment.split_whitespace();
            let id = words.next().filter(|id| valid_id(id)).map(str::to_string);
            let marked = words.next().map(str::to_string);
            (rest[..at].trim().to_string(), id, marked)
        }
        _ => (rest.trim().to_string(), None, None),
    };
    if title.is_empty() {
        return None;
    }
    let status = match (checked, marked.as_deref()) {
        (true, _) => TaskStatus::Done,
        (false, Some("in_progress")) => TaskStatus::InProgress,
        (false, _) => TaskStatus::Todo,
    };
    Some(TaskLine { lead: format!("{indent}{bullet} "), title, status, id })
}

fn valid_id(id: &str) -> bool {
    id.len() == 14 && id.starts_with("k_") && id[2..].chars().all(|c| c.is_ascii_hexdigit())
}

pub fn render_task(t: &TaskLine) -> String {
    let box_ = if t.status == TaskStatus::Done { "[x]" } else { "[ ]" };
    let mark = if t.status == TaskStatus::InProgress { " in_progress" } else { "" };
    match &t.id {
        Some(id) => format!("{}{box_} {} <!-- bosun:{id}{mark} -->", t.lead, t.title),
        None => format!("{}{box_} {}", t.lead, t.title),
    }
}

/// The file, with each line as given and a new line for each of `added`
/// after the last task line (or under a `# Tasks` heading in a new file).
pub fn render(lines: &[Line], added: &[TaskLine]) -> String {
    let mut out: Vec<String> = Vec::new();
    let last_task = lines.iter().rposition(|l| matches!(l, Line::Task(_)));
    if lines.is_empty() && !added.is_empty() {
        out.push("# Tasks".to_string());
        out.push(String::new());
    }
    for (i, line) in lines.iter().enumerate() {
        out.push(match line {
            Line::Task(t) => render_task(t),
            Line::Other(s) => s.clone(),
        });
        if Some(i) == last_task {
            out.extend(added.iter().map(render_task));
        }
    }
    if last_task.is_none() {
        if !lines.is_empty() && !out.last().is_some_and(|l| l.is_empty()) && !added.is_empty() {
            out.push(String::new());
        }
        out.extend(added.iter().map(render_task));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Tasks\n\nSome prose about the plan.\n\n- [ ] Add a flag <!-- bosun:k_1a2b3c4d5e6f -->\n- [x] Docs <!-- bosun:k_2b3c4d5e6f7a -->\n  * [ ] Nested, added by hand\n- not a task\n- [ ] Running <!-- bosun:k_3c4d5e6f7a8b in_progress -->\n\n## Notes\nkeep me\n";

    #[test]
    fn reads_tasks_and_keeps_every_other_line() {
        let lines = parse(FILE);
        let tasks: Vec<&TaskLine> =
            lines.iter().filter_map(|l| if let Line::Task(t) = l { Some(t) } else { None }).collect();
        assert_eq!(tasks.len(), 4);
        assert_eq!(
            (tasks[0].title.as_str(), tasks[0].status, tasks[0].id.as_deref()),
            ("Add a flag", TaskStatus::Todo, Some("k_1a2b3c4d5e6f"))
        );
        assert_eq!(tasks[1].status, TaskStatus::Done);
        assert_eq!((tasks[2].lead.as_str(), tasks[2].id.as_deref()), ("  * ", None));
        assert_eq!(tasks[3].status, TaskStatus::InProgress);
        // Written back unchanged, byte for byte.
        assert_eq!(render(&lines, &[]), FILE);
    }

    #[test]
    fn new_tasks_go_after_the_last_one_or_under_a_heading() {
        let new = TaskLine {
            lead: "- ".into(),
            title: "New".into(),
            status: TaskStatus::Todo,
            id: Some("k_4d5e6f7a8b9c".into()),
        };
        let text = render(&parse(FILE), std::slice::from_ref(&new));
        assert!(text.contains("in_progress -->\n- [ ] New <!-- bosun:k_4d5e6f7a8b9c -->\n\n## Notes"), "{text}");
        assert_eq!(render(&[], std::slice::from_ref(&new)), "# Tasks\n\n- [ ] New <!-- bosun:k_4d5e6f7a8b9c -->\n");
        let prose = render(&parse("Just prose."), &[new]);
        assert_eq!(prose, "Just prose.\n\n- [ ] New <!-- bosun:k_4d5e6f7a8b9c -->\n");
    }

    #[test]
    fn odd_lines_are_not_tasks() {
        for line in ["- []", "-[ ] x", "- [ ]", "- [y] x", "text - [ ] x"] {
            assert!(parse_line(line).is_none(), "{line}");
        }
        let forged = parse_line("- [ ] x <!-- bosun:../../etc -->").unwrap();
        assert_eq!(forged.id, None);
    }
}
