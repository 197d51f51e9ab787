//! Which commands codex runs without asking under `approvalPolicy:
//! "untrusted"`: read-only ones on its known-safe list. Bosun keeps its own
//! account of that list so that, in a plan-only session, such a command is
//! recorded as `"approval":"agent-safe-list"` and anything else codex ran
//! without asking is a policy violation.
//!
//! The rules follow codex's documented behaviour (codex-rs `command_safety`):
//! a command is safe when it is a plain invocation of a read-only program,
//! or a shell script (`bash -lc '...'`) made only of such invocations joined
//! by `&&`, `||`, `;` or `|`, with no redirection, substitution or
//! expansion. When in doubt this says "not safe": a false "not safe" stops a
//! turn, a false "safe" would let a command through unnoticed.

/// Programs that only read, whatever their arguments.
const READ_ONLY: &[&str] = &[
    "cat", "cd", "cut", "echo", "expr", "false", "grep", "head", "id", "ls", "nl", "paste", "pwd", "rev", "seq",
    "stat", "tail", "tr", "true", "uname", "uniq", "wc", "which", "whoami", "numfmt", "tac",
];

/// Whether codex counts `command` (a command line, as its items and
/// codex-acp's tool calls show it) as known to be safe.
pub fn is_known_safe(command: &str) -> bool {
    match plain_commands(command) {
        Some(commands) if !commands.is_empty() => commands.iter().all(|argv| {
            // A wrapped script (`bash -lc '...'`) is judged by its content.
            match shell_script(argv) {
                Some(script) => plain_commands(script)
                    .is_some_and(|inner| !inner.is_empty() && inner.iter().all(|argv| is_safe_invocation(argv))),
                None => is_safe_invocation(argv),
            }
        }),
        _ => false,
    }
}

/// `bash -lc SCRIPT` and the like: the script.
fn shell_script(argv: &[String]) -> Option<&str> {
    let [shell, flag, script] = argv else { return None };
    let name = shell.rsplit('/').next().unwrap_or(shell);
    (matches!(name, "bash" | "sh" | "zsh") && matches!(flag.as_str(), "-c" | "-lc")).then_some(script.as_str())
}

/// The commands of a script made only of words joined by `&&`, `||`, `;`,
/// `|` (or newlines); `None` when it holds anything else (a redirection, a
/// substitution, an expansion, a subshell, a background job).
fn plain_commands(script: &str) -> Option<Vec<Vec<String>>> {
    let mut commands = Vec::new();
    let mut argv: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = script.chars().peekable();
    let end_command = |argv: &mut Vec<String>, commands: &mut Vec<Vec<String>>| -> Option<()> {
        if argv.is_empty() {
            // `&& ls`, `ls ;;`: an operator with no command before it.
            return None;
        }
        commands.push(std::mem::take(argv));
        Some(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        other => word.push(other),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            escaped @ ('"' | '\\') => word.push(escaped),
                            _ => return None,
                        },
                        '$' | '`' => return None,
                        other => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            ' ' | '\t' => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\n' | ';' | '|' | '&' => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
                match c {
                    // Only `&&`; a lone `&` starts a background job.
                    '&' if chars.next() != Some('&') => return None,
                    '|' => {
                        chars.next_if_eq(&'|');
                    }
                    _ => {}
                }
                if c == '\n' && argv.is_empty() {
                    continue;
                }
                end_command(&mut argv, &mut commands)?;
            }
            '>' | '<' | '$' | '`' | '(' | ')' | '{' | '}' => return None,
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        argv.push(word);
    }
    if !argv.is_empty() {
        commands.push(argv);
    } else if script.trim_end().ends_with(['&', '|']) {
        return None;
    }
    Some(commands)
}

/// One plain invocation, judged by its program and arguments.
fn is_safe_invocation(argv: &[String]) -> bool {
    let Some(program) = argv.first() else { return false };
    let name = program.rsplit('/').next().unwrap_or(program);
    let args = &argv[1..];
    let any = |unsafe_flag: &dyn Fn(&str) -> bool| args.iter().any(|a| unsafe_flag(a));
    match name {
        _ if READ_ONLY.contains(&name) => true,
        "base64" => !any(&|a| a == "-o" || a == "--output" || a.starts_with("--output=") || a.starts_with("-o")),
        "find" => !any(&|a| {
            matches!(
                a,
                "-exec" | "-execdir" | "-ok" | "-okdir" | "-delete" | "-fls" | "-fprint" | "-fprint0" | "-fprintf"
            )
        }),
        "rg" => !any(&|a| {
            matches!(a, "--search-zip" | "-z" | "--pre" | "--hostname-bin")
                || a.starts_with("--pre=")
                || a.starts_with("--hostname-bin=")
        }),
        "git" => is_safe_git(args),
        // Only the `sed -n 12p` / `sed -n 3,8p` form, on at most one file.
        "sed" => {
            args.len() <= 3
                && args.first().map(String::as_str) == Some("-n")
                && args.get(1).is_some_and(|a| is_line_print(a))
        }
        _ => false,
    }
}

/// `N` or `M,N` followed by `p`.
fn is_line_print(arg: &str) -> bool {
    let Some(range) = arg.strip_suffix('p') else { return false };
    let numbers: Vec<&str> = range.split(',').collect();
    numbers.len() <= 2 && numbers.iter().all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// git's read-only subcommands, without options that write files, run
/// other programs or override config (`-c core.pager=...` runs anything).
fn is_safe_git(args: &[String]) -> bool {
    if args.iter().any(|a| {
        a == "-c" || a == "--config-env" || (a.starts_with("-c") && a.len() > 2) || a.starts_with("--config-env=")
    }) {
        return false;
    }
    // Global options come before the subcommand; some take a value. A
    // pager (`-p`) runs a program of git's config's choosing.
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if matches!(arg, "-p" | "--paginate") {
            return false;
        }
        if matches!(arg, "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path" | "--super-prefix") {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let Some(subcommand) = args.get(i).map(String::as_str) else { return false };
    let rest = &args[i + 1..];
    let read_only = !rest.iter().any(|a| {
        matches!(a.as_str(), "--output" | "--ext-diff" | "--textconv" | "--exec" | "--paginate")
            || a.starts_with("--output=")
            || a.starts_with("--exec=")
    });
    match subcommand {
        "status" | "log" | "diff" | "show" => read_only,
        "branch" => read_only && is_listing_branches(rest),
        _ => false,
    }
}

/// `git branch` that only lists: no arguments, or only listing flags.
fn is_listing_branches(args: &[String]) -> bool {
    args.iter().all(|a| {
        matches!(
            a.as_str(),
            "--list" | "-l" | "--show-current" | "-a" | "--all" | "-r" | "--remotes" | "-v" | "-vv" | "--verbose"
        ) || a.starts_with("--format=")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_programs_and_plain_scripts_of_them_are_safe() {
        for command in [
            "ls",
            "ls -la src",
            "cat Cargo.toml",
            "/bin/bash -lc 'ls -la'",
            "bash -lc \"grep -n foo src/main.rs | head -5\"",
            "zsh -lc 'pwd && ls'",
            "rg -n TODO",
            "find . -name '*.rs'",
            "git status",
            "git -C . log -n 3 --oneline",
            "git branch --show-current",
            "sed -n 1,20p src/lib.rs",
            "wc -l a.txt; head -3 a.txt",
            "echo \"hi there\"",
        ] {
            assert!(is_known_safe(command), "{command}");
        }
    }

    #[test]
    fn anything_that_writes_runs_or_expands_is_not() {
        for command in [
            "touch x",
            "echo hi > out.txt",
            "cat < /etc/passwd",
            "ls; rm -rf /",
            "ls && touch x",
            "echo $(rm x)",
            "echo `id`",
            "echo $HOME",
            "echo \"$HOME\"",
            "ls &",
            "(ls)",
            "find . -delete",
            "find . -name x -exec rm {} ;",
            "rg --pre ./evil x",
            "rg --pre=./evil x",
            "base64 -o out.bin in",
            "git checkout status",
            "git branch new-branch",
            "git -c core.pager=evil log",
            "git -p log",
            "git log --output=/tmp/x",
            "git fetch",
            "sed -i s/a/b/ f",
            "sed -n 1,5p a b c",
            "cargo check",
            "bash -lc 'echo hi > x'",
            "python3 -c 'print(1)'",
            "",
            "&& ls",
            "ls ||",
            "echo 'unterminated",
        ] {
            assert!(!is_known_safe(command), "{command}");
        }
    }
}
