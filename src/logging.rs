//! Logs through tracing: to stderr (human-readable by default, JSON on
//! request), and to rotated files under `<data_dir>/logs/` that outlive the
//! terminal: `core.log`, and `providers/<name>.log` for what each
//! provider's agent says on stderr and the protocol notes about it.
//!
//! A file line is one JSON object: `ts`, `level`, `subsystem` (auth,
//! network, routing, turn-lifecycle, approval-policy, errors...; from the
//! line's own `subsystem` field, else from where it was logged), `target`,
//! `message`, the line's fields, and those of the spans it is in: the
//! `request_id` of the HTTP request, and the `session_id`, `turn_id` and
//! `run_id` the actors put on their lines. Values under a secret-sounding
//! name, and anything shaped like a Bosun token, are masked before a line
//! is written.

use crate::config::{LogFormat, LogsConfig};
use anyhow::Context as _;
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// The target of a provider's own lines (its agent's stderr, protocol
/// notes): they go to `providers/<provider>.log`, not `core.log`.
pub const PROVIDER_TARGET: &str = bosun_actors::provider::LOG_TARGET;

const DEFAULT_FILTER: &str = "info,sled=warn,warp=warn,hyper=warn";

/// Starts logging. `files`: where the rotated files go and how big they may
/// grow; `None` logs to stderr only.
pub fn init(format: LogFormat, files: Option<(&Path, &LogsConfig)>) -> anyhow::Result<()> {
    let filter = || EnvFilter::try_from_env("BOSUN_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let file_layer = match files {
        Some((data_dir, config)) if config.files() => {
            Some(FileLayer::open(&data_dir.join("logs"), config).context("opening the log files")?)
        }
        _ => None,
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // Provider lines have their own files; on stderr they would drown the daemon's.
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.target() != PROVIDER_TARGET));
    let stderr = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.target() != PROVIDER_TARGET))
            .boxed(),
    };
    let registry = tracing_subscriber::registry()
        .with(stderr.with_filter(filter()))
        .with(file_layer.map(|layer| layer.with_filter(filter())));
    // A second init (tests) keeps the first subscriber.
    drop(registry.try_init());
    Ok(())
}

/// The rotated log files.
struct FileLayer {
    core: Mutex<FileRotate<AppendCount>>,
    providers: Mutex<HashMap<String, FileRotate<AppendCount>>>,
    dir: PathBuf,
    max_bytes: usize,
    keep: usize,
}

impl FileLayer {
    fn open(dir: &Path, config: &LogsConfig) -> anyhow::Result<FileLayer> {
        make_private_dir(&dir.join("providers"))?;
        let (max_bytes, keep) = (config.max_bytes(), config.keep());
        Ok(FileLayer {
            core: Mutex::new(rotating(&dir.join("core.log"), max_bytes, keep)),
            providers: Mutex::new(HashMap::new()),
            dir: dir.to_path_buf(),
            max_bytes,
            keep,
        })
    }

    fn write_line(&self, line: &str, provider: Option<&str>) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        // A log line that cannot be written has nowhere to be reported but
        // stderr, which is what the daemon logs to anyway: dropped.
        match provider {
            None => {
                let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
                let _ = core.write_all(&bytes).and_then(|()| core.flush());
            }
            Some(name) => {
                let mut providers = self.providers.lock().unwrap_or_else(|e| e.into_inner());
                let file = providers.entry(name.to_string()).or_insert_with(|| {
                    let path = self.dir.join("providers").join(format!("{}.log", file_name(name)));
                    rotating(&path, self.max_bytes, self.keep)
                });
                let _ = file.write_all(&bytes).and_then(|()| file.flush());
            }
        }
    }
}

fn rotating(path: &Path, max_bytes: usize, keep: usize) -> FileRotate<AppendCount> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    FileRotate::new(
        path,
        AppendCount::new(keep),
        ContentLimit::BytesSurpassed(max_bytes),
        Compression::None,
        Some(options),
    )
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// A provider's name as a file name: its own characters where they are
/// safe, `_` for the rest, so no name can point outside `providers/`.
fn file_name(provider: &str) -> String {
    let safe: String =
        provider.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if safe.is_empty() {
        "_".to_string()
    } else {
        safe
    }
}

/// The fields a span was made with (and recorded since), for its lines.
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for FileLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.map));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(map)) = extensions.get_mut::<SpanFields>() {
            let mut fields = JsonFields { map: std::mem::take(map), message: None };
            values.record(&mut fields);
            *map = fields.map;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(bosun_proto::now_ts()));
        line.insert("level".into(), Value::String(meta.level().as_str().to_lowercase()));
        // Span fields first, outermost first: the line's own fields win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                    line.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        line.extend(fields.map);
        let subsystem = match line.get("subsystem").and_then(Value::as_str) {
            Some(own) => own.to_string(),
            None => subsystem_of(meta.target(), *meta.level()).to_string(),
        };
        line.insert("subsystem".into(), Value::String(subsystem));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        line.insert("message".into(), Value::String(mask_tokens(&fields.message.unwrap_or_default())));
        let provider = if meta.target() == PROVIDER_TARGET {
            line.get("provider").and_then(Value::as_str).map(str::to_string)
        } else {
            None
        };
        let text = Value::Object(line).to_string();
        self.write_line(&text, provider.as_deref());
    }
}

/// Where a line was logged from, in the operator's words.
fn subsystem_of(target: &str, level: Level) -> &'static str {
    if level == Level::ERROR {
        return "errors";
    }
    const BY_TARGET: &[(&str, &str)] = &[
        ("bosun::provider_log", "provider"),
        ("bosun::auth", "auth"),
        ("bosun::front::auth", "auth"),
        ("bosun::front::server", "network"),
        ("bosun::front::connections", "network"),
        ("bosun::front::authority", "network"),
        ("bosun::front::cross_site", "network"),
        ("bosun::proxy", "network"),
        ("bosun::front", "routing"),
        ("bosun_actors::providers", "approval-policy"),
        ("bosun_actors::turn", "turn-lifecycle"),
        ("bosun_actors::session", "turn-lifecycle"),
        ("bosun_actors::provider", "turn-lifecycle"),
        ("bosun_driver", "turn-lifecycle"),
        ("bosun_acp", "turn-lifecycle"),
        ("bosun_codex", "turn-lifecycle"),
        ("bosun_builtin", "turn-lifecycle"),
        ("bosun_actors::workflow", "workflow"),
        ("bosun_workflow", "workflow"),
        ("bosun_actors::terminals", "terminal"),
        ("bosun_termbridge", "terminal"),
        ("bosun_pty", "terminal"),
        ("bosun_isolation", "isolation"),
        ("bosun_workspace", "workspace"),
        ("bosun_state", "store"),
        ("bosun_supervision", "supervision"),
    ];
    BY_TARGET
        .iter()
        .find(|(prefix, _)| target == *prefix || target.strip_prefix(prefix).is_some_and(|rest| rest.starts_with("::")))
        .map_or("core", |(_, subsystem)| subsystem)
}

/// Whether a field's name says it holds a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password", "passwd", "authorization", "api_key", "apikey", "credential", "cookie"]
        .iter()
        .any(|word| name.contains(word))
}

/// `bsn_` followed by a token's hex becomes `bsn_…`: a token pasted into a
/// message (an error echoing a header, say) is not written out.
fn mask_tokens(text: &str) -> String {
    const PREFIX: &str = "bsn_";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at + PREFIX.len()]);
        let after = &rest[at + PREFIX.len()..];
        let secret_len = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        if secret_len >= 16 {
            out.push('…');
        } else {
            out.push_str(&after[..secret_len]);
        }
        rest = &after[secret_len..];
    }
    out.push_str(rest);
    out
}

/// A line's (or span's) fields as JSON, secrets masked; the `message`
/// field apart.
#[derive(Default)]
struct JsonFields {
    map: Map<String, Value>,
    message: Option<String>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        let value = if is_secret_name(field.name()) { Value::String("[redacted]".into()) } else { value };
        self.map.insert(field.name().to_string(), value);
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.put(field, Value::String(mask_tokens(value)));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.put(field, Value::String(mask_tokens(&text)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsystems_come_from_the_target_and_errors_are_errors() {
        assert_eq!(subsystem_of("bosun::auth::owner", Level::INFO), "auth");
        assert_eq!(subsystem_of("bosun::front::connections", Level::WARN), "network");
        assert_eq!(subsystem_of("bosun::front::api", Level::INFO), "routing");
        assert_eq!(subsystem_of("bosun_actors::turn", Level::INFO), "turn-lifecycle");
        assert_eq!(subsystem_of("bosun_actors::providers", Level::INFO), "approval-policy");
        assert_eq!(subsystem_of("bosun_actors::turn", Level::ERROR), "errors");
        // A prefix is a whole path segment: `bosun_state` is not `bosun_statefoo`.
        assert_eq!(subsystem_of("bosun_statefoo", Level::INFO), "core");
        assert_eq!(subsystem_of("bosun::daemon", Level::INFO), "core");
    }

    #[test]
    fn secrets_are_masked_by_name_and_tokens_by_shape() {
        assert!(is_secret_name("admin_token") && is_secret_name("OPENAI_API_KEY") && !is_secret_name("session_id"));
        let token = format!("bsn_{}", "ab12".repeat(16));
        assert_eq!(mask_tokens(&format!("bad token {token}, again {token}.")), "bad token bsn_…, again bsn_….");
        assert_eq!(mask_tokens("bsn_guess is short"), "bsn_guess is short");
        assert_eq!(mask_tokens("nothing here"), "nothing here");
    }

    #[test]
    fn provider_names_cannot_leave_their_directory() {
        assert_eq!(file_name("codex-acp"), "codex-acp");
        assert_eq!(file_name("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_name(""), "_");
    }
}
