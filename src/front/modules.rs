//! `/api/v1/modules/...`: installing a signed provider module and rolling
//! one back (docs/MODULES.md), for the admin credential only. Verifying
//! and unpacking run on a blocking task, one install at a time; the
//! providers actor then registers the provider and announces it.

use super::api::{json_reply, not_allowed, query, Request};
use super::error::ApiError;
use bosun_actors::{Context, DaemonError};
use bosun_modules::Layout;
use bosun_proto::{InstallModuleQuery, ModuleSwitched, NoQuery};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// The largest module body: the module format's own limit.
pub const MAX_BODY_BYTES: usize = bosun_modules::MAX_MODULE_BYTES as usize;

/// Whether `path` is one of the admin-only module endpoints.
pub fn admin_only(path: &str) -> bool {
    path == "/api/v1/modules" || path.starts_with("/api/v1/modules/")
}

/// One install or rollback at a time: two at once could each find the
/// other's version current.
static SWITCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn route(ctx: &Context, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (rest, req.method.clone()) {
        (["install"], Method::POST) => install(ctx, req).await,
        (["install"], _) => Err(not_allowed(req, "POST")),
        ([name, "rollback"], Method::POST) => rollback(ctx, req, name).await,
        ([_, "rollback"], _) => Err(not_allowed(req, "POST")),
        _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
    }
}

async fn install(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    let q: InstallModuleQuery = query(req)?;
    if req.body.is_empty() {
        return Err(ApiError::BadRequest("the body must be the module file (bosun module pack)".into()));
    }
    let _one_at_a_time = SWITCHING.lock().await;
    let layout = Layout::new(&ctx.settings.data_dir);
    let trust = ctx.settings.module_trust.clone();
    let registry = ctx.providers.clone();
    let body = req.body.clone();
    let (switched, spec, key_id) = tokio::task::spawn_blocking(move || {
        crate::modules::install(&layout, &trust, crate::modules::registry_check(&registry), &body, q.allow_downgrade)
    })
    .await
    .map_err(|e| DaemonError::Internal(format!("the install task failed: {e}")))??;
    announce(switched, spec, key_id).await
}

async fn rollback(ctx: &Context, req: &Request, name: &str) -> Result<Response, ApiError> {
    query::<NoQuery>(req)?;
    bosun_modules::check_name(name).map_err(crate::modules::InstallError::from)?;
    let _one_at_a_time = SWITCHING.lock().await;
    let layout = Layout::new(&ctx.settings.data_dir);
    let registry = ctx.providers.clone();
    let name = name.to_string();
    let (switched, spec, key_id) = tokio::task::spawn_blocking(move || {
        crate::modules::rollback(&layout, &name, crate::modules::registry_check(&registry))
    })
    .await
    .map_err(|e| DaemonError::Internal(format!("the rollback task failed: {e}")))??;
    announce(switched, spec, key_id).await
}

/// Registers the now-current version and answers once that is announced.
async fn announce(
    switched: bosun_modules::Switched,
    spec: bosun_driver::ProviderSpec,
    key_id: String,
) -> Result<Response, ApiError> {
    bosun_actors::providers::module_switched(spec, switched.version.clone(), switched.replaced.clone()).await?;
    let answer = ModuleSwitched { name: switched.name, version: switched.version, replaced: switched.replaced, key_id };
    Ok(json_reply(StatusCode::OK, &answer))
}
