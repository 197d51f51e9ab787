//! `/api/v1/secrets`: the admin credential only. Values go in, masked
//! values come out; each change is announced by a durable
//! `settings:changed` event that names the secret, never its value.

use super::api::{json_body, json_reply, no_query, not_allowed, Request};
use super::error::ApiError;
use crate::auth::Access;
use crate::secrets::{SecretStore, SecretsError};
use bosun_actors::{Context, DaemonError};
use bosun_proto::events::SettingsChanged;
use bosun_proto::{EventData, SecretList, SecretRemoved, SecretView, SetSecretRequest, Topic};
use bosun_state::Batch;
use std::sync::Arc;
use warp::http::{Method, StatusCode};
use warp::reply::Response;

pub async fn route(
    ctx: &Context,
    secrets: &Arc<SecretStore>,
    req: &Request,
    rest: &[&str],
) -> Result<Response, ApiError> {
    if req.access != Some(Access::Admin) {
        return Err(ApiError::Forbidden(
            "only the admin credential (the data dir's admin.token) may read or change secrets".into(),
        ));
    }
    match (rest, req.method.clone()) {
        ([], Method::GET) => {
            no_query(req)?;
            let list = blocking(secrets, |s| s.list()).await?;
            let secrets = list.into_iter().map(view).collect();
            Ok(json_reply(StatusCode::OK, &SecretList { secrets }))
        }
        ([], _) => Err(not_allowed(req, "GET")),
        ([name], Method::PUT) => {
            no_query(req)?;
            let body: SetSecretRequest = json_body(req)?;
            let name = name.to_string();
            let (info, _created) = {
                let name = name.clone();
                blocking(secrets, move |s| s.set(&name, &body.value)).await?
            };
            announce(ctx, &name, "set").await?;
            tracing::info!(secret = %name, "secret set through the API");
            Ok(json_reply(StatusCode::OK, &view(info)))
        }
        ([name], Method::DELETE) => {
            no_query(req)?;
            let name = name.to_string();
            let removed = {
                let name = name.clone();
                blocking(secrets, move |s| s.remove(&name)).await?
            };
            if !removed {
                return Err(ApiError::NotFound(format!("there is no secret {name:?}")));
            }
            announce(ctx, &name, "removed").await?;
            tracing::info!(secret = %name, "secret removed through the API");
            Ok(json_reply(StatusCode::OK, &SecretRemoved { name, removed: true }))
        }
        ([_], _) => Err(not_allowed(req, "PUT, DELETE")),
        _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
    }
}

fn view(info: crate::secrets::SecretInfo) -> SecretView {
    SecretView { name: info.name, masked: info.masked, updated_at: info.updated_at }
}

/// Runs a store operation off the async workers: it reads and writes files,
/// and may wait on the OS keyring.
async fn blocking<T: Send + 'static>(
    secrets: &Arc<SecretStore>,
    op: impl FnOnce(&SecretStore) -> Result<T, SecretsError> + Send + 'static,
) -> Result<T, ApiError> {
    let secrets = secrets.clone();
    match tokio::task::spawn_blocking(move || op(&secrets)).await {
        Ok(result) => result.map_err(api_error),
        Err(e) => Err(ApiError::Daemon(DaemonError::Internal(format!("the secrets task failed: {e}")))),
    }
}

fn api_error(e: SecretsError) -> ApiError {
    match e {
        SecretsError::BadName(_) | SecretsError::BadValue(_) => ApiError::BadRequest(e.to_string()),
        // The values on file do not open with the key at hand: nothing can
        // be read or sealed until the right key is back.
        SecretsError::Sealed(_) => ApiError::Conflict(e.to_string()),
        SecretsError::Io { .. } | SecretsError::Corrupt { .. } | SecretsError::Key(_) => {
            ApiError::Daemon(DaemonError::Internal(e.to_string()))
        }
    }
}

async fn announce(ctx: &Context, name: &str, change: &str) -> Result<(), ApiError> {
    let mut batch = Batch::new();
    let data = SettingsChanged { setting: "secret".into(), name: name.to_string(), change: change.into() };
    batch.event(EventData::SettingsChanged(data).into_event(Topic::system()));
    ctx.store.commit(batch).await?;
    Ok(())
}
