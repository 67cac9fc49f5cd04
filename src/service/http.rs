//! HTTP: `/metrics` (Prometheus text format), `/healthz` (the consumer
//! loop runs), `/readyz` (every assigned partition restored), `/api/teams`
//! (a JSON scorecard per team, for tools that do not speak PromQL), and
//! the same scorecard as HTML pages for people: `/` and `/teams/<team>`
//! (see [`super::scorecard`]).

use super::health::Health;
use crate::metrics::Metrics;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Health flags.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/teams", get(teams))
        .route("/", get(scorecard_page))
        .route("/teams/{team}", get(team_page))
        .with_state(state)
}

/// Serves until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("http server stopped: {e}");
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn teams(State(s): State<AppState>) -> impl IntoResponse {
    axum::Json(s.metrics.scorecard())
}

async fn scorecard_page(State(s): State<AppState>) -> Html<String> {
    Html(s.metrics.with_scorecard(super::scorecard::index))
}

async fn team_page(State(s): State<AppState>, Path(team): Path<String>) -> impl IntoResponse {
    match s
        .metrics
        .with_scorecard(|card| super::scorecard::team(card, &team))
    {
        Some(page) => (StatusCode::OK, Html(page)),
        None => (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>custody: no such team</title></head>\
                 <body><p>No team {} on this instance's scorecard. <a href=\"/\">All teams</a></p></body></html>\n",
                super::scorecard::escape(&team)
            )),
        ),
    }
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "consumer loop not running\n".to_string(),
        )
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
