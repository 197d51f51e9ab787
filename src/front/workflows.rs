//! `/api/v1/workflows/runs/...`: runs are read from the store and changed
//! through their run actor (or, to start one, the workflows supervisor).

use super::api::{json_body, json_reply, no_query, not_allowed, query, valid_id, Request};
use super::error::ApiError;
use bosun_actors::workflow::RunMsg;
use bosun_actors::workflows::WorkflowsMsg;
use bosun_actors::{names, route, Context, DaemonError};
use bosun_proto::*;
use bosun_state::{GateRecord, WorkflowRunRecord};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// `rest` is the path after `/api/v1/workflows/runs`.
pub(super) async fn route(ctx: &Context, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    let m = req.method.clone();
    match (rest, m) {
        ([], Method::GET) => list(ctx, req),
        ([], Method::POST) => start(req).await,
        ([], _) => Err(not_allowed(req, "GET, POST")),
        ([id], Method::GET) => {
            no_query(req)?;
            Ok(json_reply(StatusCode::OK, &load(ctx, id)?.view()))
        }
        ([id], Method::PATCH) => {
            no_query(req)?;
            let body: PatchRunRequest = json_body(req)?;
            call(ctx, id, |reply| RunMsg::Patch { budget: body.budget, reply }).await
        }
        ([_], _) => Err(not_allowed(req, "GET, PATCH")),
        ([id, "cancel"], Method::POST) => {
            no_query(req)?;
            call(ctx, id, RunMsg::Cancel).await
        }
        ([id, "resume"], Method::POST) => {
            no_query(req)?;
            call(ctx, id, RunMsg::Resume).await
        }
        ([_, "cancel" | "resume"], _) => Err(not_allowed(req, "POST")),
        ([id, "steps", step, "decide"], Method::POST) => {
            no_query(req)?;
            let body: StepDecisionRequest = json_body(req)?;
            let step = step.to_string();
            call(ctx, id, |reply| RunMsg::Decide { step_id: step, index: body.index, decision: body.decision, reply })
                .await
        }
        ([_, "steps", _, "decide"], _) => Err(not_allowed(req, "POST")),
        _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
    }
}

fn list(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    let q: ListRunsQuery = query(req)?;
    let mut runs: Vec<RunView> = ctx
        .store
        .scan::<WorkflowRunRecord>()?
        .iter()
        .filter(|r| q.state.is_none_or(|s| r.state == s))
        .map(WorkflowRunRecord::view)
        .collect();
    runs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(json_reply(StatusCode::OK, &RunList { runs }))
}

async fn start(req: &Request) -> Result<Response, ApiError> {
    no_query(req)?;
    let body: StartRunRequest = json_body(req)?;
    let view = route::call::<WorkflowsMsg, _, _>(names::WORKFLOWS, |r| WorkflowsMsg::Start(body, r)).await??;
    Ok(json_reply(StatusCode::CREATED, &view))
}

fn load(ctx: &Context, id: &str) -> Result<WorkflowRunRecord, ApiError> {
    let missing = || ApiError::NotFound(format!("workflow run {id:?} not found"));
    if !valid_id(id) {
        return Err(missing());
    }
    ctx.store.get::<WorkflowRunRecord>(id)?.ok_or_else(missing)
}

/// Asks the run's actor; a run that has ended has none, and takes no change.
async fn call<F>(ctx: &Context, id: &str, build: F) -> Result<Response, ApiError>
where
    F: FnOnce(ractor::RpcReplyPort<Result<RunView, DaemonError>>) -> RunMsg,
{
    let record = load(ctx, id)?;
    if record.state.is_final() {
        return Err(DaemonError::Conflict(format!("workflow run {id} is {}", record.state)).into());
    }
    let view = route::call::<RunMsg, _, _>(&names::workflow(id), build).await??;
    Ok(json_reply(StatusCode::OK, &view))
}

/// `POST /api/v1/approvals/{id}` for a gate: its run decides it.
pub(super) async fn decide_gate(ctx: &Context, gate: GateRecord, decision: Decision) -> Result<Response, ApiError> {
    let run = load(ctx, &gate.run_id)?;
    if run.state.is_final() || gate.status != ApprovalStatus::Pending {
        // Nothing is waiting on it: the same decision again is answered as
        // it was, another is a conflict.
        if gate.status == decision.resulting_status() {
            return Ok(json_reply(StatusCode::OK, &gate.view()));
        }
        return Err(DaemonError::Conflict(format!("gate {} is already {}", gate.id, gate.status)).into());
    }
    let approval_id = gate.id.clone();
    let view = route::call::<RunMsg, _, _>(&names::workflow(&gate.run_id), |reply| RunMsg::DecideGate {
        approval_id,
        decision,
        reply,
    })
    .await??;
    Ok(json_reply(StatusCode::OK, &view))
}
