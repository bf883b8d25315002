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

use super::Event;
use super::desired::{self, Desired};
use super::status::StatusBoard;
use crate::reconcile::Reconciler;
use crate::roles::{self, Peer, route};
use crate::sync::SyncError;

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
            (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({
                    "error": "forbidden",
                    "reason": why,
                    "certificate": {"subject": peer.subject, "serial": peer.serial},
                })),
            )
                .into_response()
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
            [("x-mailctl-generation", d.generation.to_string())],
            d.text.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no desired state yet\n").into_response(),
    }
}

/// Hand over a new desired state. The body is validated off the event loop
/// (nothing is stored when it is invalid), then the event loop — which owns
/// the ledger, so concurrent PUTs and edits of the watched files never
/// interleave — stores it as the next generation. The answer names it.
async fn put_desired(State(s): State<ApiState>, body: String) -> Response {
    let host = s.host.clone();
    let checked =
        tokio::task::spawn_blocking(move || desired::read_body(body, host.as_deref())).await;
    let candidate = match checked {
        Ok(Ok(candidate)) => candidate,
        Ok(Err(e)) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response();
        }
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "validation task failed\n",
            )
                .into_response();
        }
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
        return (StatusCode::SERVICE_UNAVAILABLE, "agent is stopping\n").into_response();
    }
    match answer.await {
        Ok(Ok(generation)) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "generation": generation })),
        )
            .into_response(),
        Ok(Err(why)) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{why}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "agent is stopping\n").into_response(),
    }
}

async fn confirm(State(s): State<ApiState>, Path(generation): Path<u64>) -> Response {
    let (reply, answer) = oneshot::channel();
    if s.events
        .send(Event::Confirm { generation, reply })
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "agent is stopping\n").into_response();
    }
    match answer.await {
        Ok(Ok(())) => (
            StatusCode::OK,
            format!("generation {generation} confirmed\n"),
        )
            .into_response(),
        Ok(Err(why)) => (StatusCode::CONFLICT, format!("{why}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "agent is stopping\n").into_response(),
    }
}

async fn plan(State(s): State<ApiState>) -> Response {
    let current = s.desired.borrow().clone();
    let Some(d) = current else {
        return (StatusCode::NOT_FOUND, "no desired state yet\n").into_response();
    };
    let plans = s.reconciler.plan(&d.spec).await;
    let text: Vec<String> = plans.iter().map(ToString::to_string).collect();
    (StatusCode::OK, text.join("\n") + "\n").into_response()
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
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("sync job {job} has not run yet\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
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
        return (
            StatusCode::NOT_FOUND,
            format!("this host declares no sync job {job}\n"),
        )
            .into_response();
    };
    match super::sync::start(&s.sync, &declared).await {
        Ok(run) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"job": job, "run": run})),
        )
            .into_response(),
        Err(e @ (SyncError::Busy { .. } | SyncError::DeleteRefused { .. })) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The controller says new mail now lands here: deleting syncs are refused from now on.
async fn point_of_no_return(State(s): State<ApiState>) -> Response {
    match s.sync.set_point_of_no_return(true) {
        Ok(()) => (StatusCode::OK, "point of no return recorded\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
