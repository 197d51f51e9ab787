//! The session-bus plumbing Konsole and Tilix share: a connection (to a
//! configured bus or the session's) and method calls bounded in time.

use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use zbus::zvariant::DynamicType;

use crate::error::{Result, TermError};

pub(crate) struct Bus {
    address: Option<String>,
    timeout: Duration,
    connection: OnceCell<zbus::Connection>,
    terminal: &'static str,
}

impl Bus {
    pub(crate) fn new(terminal: &'static str, address: Option<String>, timeout: Duration) -> Self {
        Bus { address, timeout, connection: OnceCell::new(), terminal }
    }

    async fn connection(&self) -> Result<&zbus::Connection> {
        self.connection
            .get_or_try_init(|| async {
                let connect = async {
                    match &self.address {
                        Some(address) => zbus::connection::Builder::address(address.as_str())?.build().await,
                        None => zbus::Connection::session().await,
                    }
                };
                match tokio::time::timeout(self.timeout, connect).await {
                    Ok(Ok(connection)) => Ok(connection),
                    Ok(Err(e)) => Err(TermError::not_supported(self.terminal, format!("the D-Bus session bus ({e})"))),
                    Err(_) => Err(TermError::Timeout {
                        what: "connecting to the session bus".into(),
                        after: self.timeout,
                        attempts: 1,
                    }),
                }
            })
            .await
    }

    /// Calls `method` and decodes its reply body.
    pub(crate) async fn call<B, R>(
        &self,
        destination: &str,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        let connection = self.connection().await?;
        let call = connection.call_method(Some(destination), path, Some(interface), method, body);
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(zbus::Error::MethodError(name, message, _))) => {
                let message = message.unwrap_or_default();
                return Err(if name.as_str().ends_with("UnknownObject") || name.as_str().ends_with("ServiceUnknown") {
                    TermError::PaneGone
                } else {
                    TermError::Ipc(format!("{interface}.{method}: {name}: {message}"))
                });
            }
            Ok(Err(e)) => return Err(TermError::Ipc(format!("{interface}.{method}: {e}"))),
            Err(_) => {
                return Err(TermError::Timeout {
                    what: format!("{interface}.{method}"),
                    after: self.timeout,
                    attempts: 1,
                })
            }
        };
        reply.body().deserialize::<R>().map_err(|e| TermError::Ipc(format!("{interface}.{method} replied: {e}")))
    }

    /// The bus names that start with `prefix`.
    pub(crate) async fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames", &())
            .await?;
        Ok(names.into_iter().filter(|n| n.starts_with(prefix)).collect())
    }
}

/// A POSIX shell word: single-quoted, with `'` written as `'\''`.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}
