//! The admin port: `GET /metrics`, `GET /healthz`, `GET /config`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/config", get(config))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        app.metrics.render(),
    )
        .into_response()
}

/// 200 once a configuration is applied (the router does not start without
/// one), with its endpoint and revision.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let routes = app.routes();
    let body = serde_json::json!({
        "status": "ok",
        "endpoint": routes.config.endpoint,
        "revision": routes.config.revision,
    });
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The applied configuration, as the file gave it (with its revision).
async fn config(State(app): State<Arc<App>>) -> Response {
    let routes = app.routes();
    match serde_json::to_string(&*routes.config) {
        Ok(body) => (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
