//! `/api/v1/tasks/...`: tasks are read from the store and changed through
//! the tasks actor.

use super::api::{json_body, json_reply, no_query, not_allowed, query, valid_id, Request};
use super::error::ApiError;
use bosun_actors::tasks::TasksMsg;
use bosun_actors::{names, route, Context};
use bosun_proto::*;
use bosun_state::TaskRecord;
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// `rest` is the path after `/api/v1/tasks`.
pub(super) async fn route(ctx: &Context, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (rest, req.method.clone()) {
        ([], Method::GET) => {
            let q: TasksQuery = query(req)?;
            let mut tasks: Vec<TaskView> = ctx
                .store
                .scan::<TaskRecord>()?
                .iter()
                .filter(|t| q.session.as_deref().is_none_or(|s| t.session_id == s))
                .map(TaskRecord::view)
                .collect();
            tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(json_reply(StatusCode::OK, &TaskList { tasks }))
        }
        ([], Method::POST) => {
            no_query(req)?;
            let body: CreateTaskRequest = json_body(req)?;
            let task = route::call::<TasksMsg, _, _>(names::TASKS, |r| TasksMsg::Create(body, r)).await??;
            Ok(json_reply(StatusCode::CREATED, &task))
        }
        ([], _) => Err(not_allowed(req, "GET, POST")),
        ([id], Method::GET) => {
            no_query(req)?;
            Ok(json_reply(StatusCode::OK, &load(ctx, id)?.view()))
        }
        ([id], Method::PATCH) => {
            no_query(req)?;
            let body: PatchTaskRequest = json_body(req)?;
            load(ctx, id)?;
            let id = id.to_string();
            let task = route::call::<TasksMsg, _, _>(names::TASKS, |r| TasksMsg::Patch(id, body, r)).await??;
            Ok(json_reply(StatusCode::OK, &task))
        }
        ([id], Method::DELETE) => {
            no_query(req)?;
            load(ctx, id)?;
            let task = id.to_string();
            route::call::<TasksMsg, _, _>(names::TASKS, |r| TasksMsg::Delete(task, r)).await??;
            Ok(json_reply(StatusCode::OK, &TaskDeleted { id: id.to_string(), deleted: true }))
        }
        ([_], _) => Err(not_allowed(req, "GET, PATCH, DELETE")),
        ([id, "run"], Method::POST) => {
            no_query(req)?;
            let body: RunTaskRequest = json_body(req)?;
            load(ctx, id)?;
            let task = id.to_string();
            let view = route::call::<TasksMsg, _, _>(names::TASKS, |r| TasksMsg::Run(task, body, r)).await??;
            Ok(json_reply(StatusCode::OK, &view))
        }
        ([_, "run"], _) => Err(not_allowed(req, "POST")),
        _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
    }
}

fn load(ctx: &Context, id: &str) -> Result<TaskRecord, ApiError> {
    let missing = || ApiError::NotFound(format!("task {id:?} not found"));
    if !valid_id(id) {
        return Err(missing());
    }
    ctx.store.get::<TaskRecord>(id)?.ok_or_else(missing)
}
