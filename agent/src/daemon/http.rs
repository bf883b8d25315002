//! The agent API routes (served over mutual TLS by `api::serve`).
//!
//! There is deliberately no route that runs an arbitrary command: the
//! controller can only hand over a desired state, confirm it, and read.
//!
//! Every request passes [`authorize`] first: the peer's role (from its
//! certificate, put on the request by `api::serve`) against the one
//! permission table, [`roles::PERMISSIONS`]. A refusal is a 403 with a JSON
//! body saying why, and a log line naming the certificate.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use mailctl_api::{
    ApiError, ErrorKind, GENERATION_HEADER, Generation, Plan, PlannedChange, PlannedResource,
    PointOfNoReturn, SyncStarted, route,
};

use super::Event;
use super::desired::{self, Desired};
use super::status::StatusBoard;
use crate::reconcile::{Reconciler, error_chain};
use crate::roles::{self, Peer};
use crate::sync::SyncError;

/// An error answer: the status its kind maps to, `{"kind", "message"}`.
fn error(kind: ErrorKind, message: impl std::fmt::Display) -> Response {
    let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(ApiError::new(kind, message))).into_response()
}

fn stopping() -> Response {
    error(ErrorKind::Unavailable, "the agent is stopping")
}

fn no_desired_state() -> Response {
    error(
        ErrorKind::NotFound,
        "this agent has no desired state yet (none in its desired_state file, none sent)",
    )
}

#[derive(Clone)]
pub struct ApiState {
    pub sync: Arc<crate::sync::SyncRunner>,
    pub board: Arc<StatusBoard>,
    pub events: mpsc::Sender<Event>,
    pub desired: tokio::sync::watch::Receiver<Option<Arc<Desired>>>,
    pub reconciler: Arc<Reconciler>,
    pub host: Option<String>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(route::HEALTH, get(|| async { "ok" }))
        .route(route::STATUS, get(status))
        .route(route::DESIRED, get(get_desired).put(put_desired))
        .route(route::CONFIRM, post(confirm))
        .route(route::PLAN, get(plan))
        .route(route::SYNC, get(sync_status).post(sync_run))
        .route(route::POINT_OF_NO_RETURN, post(point_of_no_return))
        .route(route::METRICS, get(metrics))
        .fallback(|request: Request| async move {
            error(
                ErrorKind::NotFound,
                format!("no route {} {}", request.method(), request.uri().path()),
            )
        })
        .with_state(state)
        .layer(middleware::from_fn(authorize))
}

/// Lets the request through when the peer's role may send it.
async fn authorize(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let peer = request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_else(Peer::anonymous);
    let method = request.method().clone();
    match roles::authorize(&peer, method.as_str(), route.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            tracing::warn!(
                subject = %peer.subject,
                serial = %peer.serial,
                role = %peer.role.as_ref().map_or("none".to_owned(), ToString::to_string),
                %method,
                path = %request.uri().path(),
                "refused an API request: {why}"
            );
            error(
                ErrorKind::Forbidden,
                format!(
                    "{why} (certificate CN={} serial {})",
                    peer.subject, peer.serial
                ),
            )
        }
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    axum::Json(s.board.snapshot()).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.board.metrics(),
    )
        .into_response()
}

async fn get_desired(State(s): State<ApiState>) -> Response {
    let current = s.desired.borrow().clone();
    match current {
        Some(d) => (
            [(header::CONTENT_TYPE, "application/yaml")],
            [(GENERATION_HEADER, d.generation.to_string())],
            d.text.clone(),
        )
            .into_response(),
        None => no_desired_state(),
    }
}

/// Hand over a new desired state. The body is validated off the event loop
/// (nothing is stored when it is invalid), then the event loop — which owns
/// the ledger, so concurrent PUTs and edits of the watched files never
/// interleave — stores it as the next generation. The answer names it.
/// The largest desired state a PUT may carry (axum's default, kept).
const MAX_DESIRED: usize = 2 * 1024 * 1024;

async fn put_desired(State(s): State<ApiState>, body: axum::body::Body) -> Response {
    let body = match mailctl_server::read_body(body, MAX_DESIRED).await {
        Ok(body) => body,
        Err(e) => return error(ErrorKind::Invalid, e),
    };
    let host = s.host.clone();
    let checked =
        tokio::task::spawn_blocking(move || desired::read_body(body, host.as_deref())).await;
    let candidate = match checked {
        Ok(Ok(candidate)) => candidate,
        Ok(Err(e)) => return error(ErrorKind::Invalid, e),
        Err(_) => return error(ErrorKind::Internal, "the validation task failed"),
    };
    let (reply, answer) = oneshot::channel();
    if s.events
        .send(Event::Put {
            candidate: Box::new(candidate),
            reply,
        })
        .await
        .is_err()
    {
        return stopping();
    }
    match answer.await {
        Ok(Ok(generation)) => {
            (StatusCode::ACCEPTED, axum::Json(Generation { generation })).into_response()
        }
        Ok(Err(why)) => error(ErrorKind::Invalid, why),
        Err(_) => stopping(),
    }
}

async fn confirm(State(s): State<ApiState>, Path(generation): Path<u64>) -> Response {
    let (reply, answer) = oneshot::channel();
    if s.events
        .send(Event::Confirm { generation, reply })
        .await
        .is_err()
    {
        return stopping();
    }
    match answer.await {
        Ok(Ok(())) => axum::Json(Generation { generation }).into_response(),
        Ok(Err(refusal)) => error(refusal.kind, refusal.message),
        Err(_) => stopping(),
    }
}

async fn plan(State(s): State<ApiState>) -> Response {
    let current = s.desired.borrow().clone();
    let Some(d) = current else {
        return no_desired_state();
    };
    let plans = s.reconciler.plan(&d.spec).await;
    let resources = plans
        .iter()
        .map(|plan| match &plan.changes {
            Ok(changes) => PlannedResource {
                resource: plan.resource.to_string(),
                changes: changes
                    .iter()
                    .map(|c| PlannedChange::from_text(&c.to_string()))
                    .collect(),
                error: None,
            },
            Err(e) => PlannedResource {
                resource: plan.resource.to_string(),
                changes: Vec::new(),
                error: Some(error_chain(e)),
            },
        })
        .collect();
    axum::Json(Plan {
        generation: d.generation,
        resources,
    })
    .into_response()
}

/// A job's state: running (with progress), finished (with verification), or failed.
async fn sync_status(State(s): State<ApiState>, Path(job): Path<String>) -> Response {
    match s.sync.status(&job) {
        Ok(Some(status)) => {
            let lag = status.lag_seconds();
            let mut body = serde_json::to_value(&status).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                map.insert("verified".into(), status.verified().into());
                map.insert("lagSeconds".into(), lag.into());
            }
            axum::Json(body).into_response()
        }
        Ok(None) => {
            let declared = s
                .desired
                .borrow()
                .as_ref()
                .is_some_and(|d| d.spec.sync_jobs.iter().any(|j| j.name == job));
            if declared {
                error(
                    ErrorKind::NotFound,
                    format!("sync job {job} has not run yet"),
                )
            } else {
                error(ErrorKind::NotFound, no_such_job(&s, &job))
            }
        }
        Err(e) => error(ErrorKind::Internal, e),
    }
}

/// "declares no sync job X", with the jobs it does declare.
fn no_such_job(s: &ApiState, job: &str) -> String {
    let jobs: Vec<String> = s
        .desired
        .borrow()
        .as_ref()
        .map(|d| d.spec.sync_jobs.iter().map(|j| j.name.clone()).collect())
        .unwrap_or_default();
    if jobs.is_empty() {
        format!("this host declares no sync job {job} (it declares none)")
    } else {
        format!(
            "this host declares no sync job {job} (it declares {})",
            jobs.join(", ")
        )
    }
}

/// Start one run of a declared job (a final sync). The answer, once the run
/// is recorded as running, carries its number (`{"job": .., "run": N}`);
/// GET shows that run's progress and outcome.
async fn sync_run(State(s): State<ApiState>, Path(job): Path<String>) -> Response {
    let current = s.desired.borrow().clone();
    let Some(declared) =
        current.and_then(|d| d.spec.sync_jobs.iter().find(|j| j.name == job).cloned())
    else {
        return error(ErrorKind::NotFound, no_such_job(&s, &job));
    };
    match super::sync::start(&s.sync, &declared).await {
        Ok(run) => (StatusCode::ACCEPTED, axum::Json(SyncStarted { job, run })).into_response(),
        Err(e @ (SyncError::Busy { .. } | SyncError::DeleteRefused { .. })) => {
            error(ErrorKind::Conflict, e)
        }
        Err(e) => error(ErrorKind::Internal, e),
    }
}

/// The controller says new mail now lands here: deleting syncs are refused from now on.
async fn point_of_no_return(State(s): State<ApiState>) -> Response {
    match s.sync.set_point_of_no_return(true) {
        Ok(()) => axum::Json(PointOfNoReturn {
            point_of_no_return: true,
        })
        .into_response(),
        Err(e) => error(ErrorKind::Internal, e),
    }
}
