//! The HTTP side: routes of the SageMaker contract (`/ping`,
//! `/invocations`, the multi-model `/models` API), of the Open Inference
//! Protocol (`/v2/...`) and `/metrics`; one error type that maps to status
//! codes. Handlers parse and write bytes; tensors stay on the workers.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::codec::{self, BadInput, Expect, Format};
use super::metrics::Metrics;
use super::registry::{Registry, RegistryError};
use super::v2;
use super::worker::{Worker, WorkerError};

/// SageMaker's header naming the model of a multi-model endpoint.
pub const TARGET_MODEL: &str = "x-amzn-sagemaker-target-model";
/// SageMaker's opaque per-request attributes, echoed back.
pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";
/// Length of the JSON part of an Open Inference Protocol binary body.
pub const INFERENCE_HEADER: &str = "inference-header-content-length";

/// Bodies above this are parsed off the async threads.
const BLOCKING_PARSE_BYTES: usize = 256 * 1024;

/// The models a server answers for.
pub enum Models {
    /// One model, loaded at start.
    Single { name: String, worker: Worker },
    /// The `/models` API.
    Multi(Registry),
}

/// Shared state of every handler.
pub struct App {
    pub models: Models,
    pub metrics: Metrics,
    /// Largest request body, bytes.
    pub payload_limit: usize,
}

/// A refusal or failure, with the status code it maps to. Messages say
/// what to fix; internal failures are logged, not shown.
#[derive(Debug)]
pub enum ApiError {
    TooLarge(usize),
    MediaType(String),
    NotAcceptable(String),
    Bad(String),
    NotFound(String),
    Conflict(String),
    NoMemory(String),
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Bad(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NoMemory(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `kind` label of `errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::MediaType(_) => "unsupported_media_type",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::Bad(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::NoMemory(_) => "insufficient_memory",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            ApiError::TooLarge(limit) => {
                format!("the request body is larger than the limit of {limit} bytes")
            }
            ApiError::Internal(_) => "internal error: see the server's log".into(),
            ApiError::MediaType(m)
            | ApiError::NotAcceptable(m)
            | ApiError::Bad(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::NoMemory(m)
            | ApiError::Unavailable(m) => m.clone(),
        }
    }
}

impl From<BadInput> for ApiError {
    fn from(e: BadInput) -> Self {
        ApiError::Bad(e.0)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => ApiError::NotFound(m),
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            RegistryError::TooLarge(m) => ApiError::NoMemory(m),
            RegistryError::BadModel(m) => ApiError::Bad(m),
        }
    }
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Gone => ApiError::Unavailable("the model was unloaded; retry".into()),
            WorkerError::Failed(m) => ApiError::Internal(m),
        }
    }
}

type Reply = Result<Response, ApiError>;

/// Counts the request and turns an error into its JSON response.
fn finish(app: &App, route: &'static str, start: Instant, reply: Reply) -> Response {
    let response = match reply {
        Ok(r) => r,
        Err(e) => {
            app.metrics.error(e.kind());
            if let ApiError::Internal(detail) = &e {
                tracing::error!(route, error = %detail, "request failed");
            } else {
                tracing::debug!(route, error = %e.message(), "request refused");
            }
            let body = json!({ "error": e.message() }).to_string();
            (
                e.status(),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
    };
    app.metrics
        .request(route, response.status().as_u16(), start.elapsed());
    response
}

/// The router; tests call it without a socket.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .route("/models", get(list_models).post(load_model))
        .route("/models/{name}", get(get_model).delete(unload_model))
        .route("/models/{name}/invoke", post(invoke_model))
        .route("/metrics", get(metrics))
        .route("/v2", get(v2_server))
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(v2_ready))
        .route("/v2/models/{name}", get(v2_model))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2_model_version),
        )
        .route("/v2/models/{name}/ready", get(v2_model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2_model_version_ready),
        )
        .route("/v2/models/{name}/infer", post(v2_infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(v2_infer_version),
        )
        .fallback(not_found)
        .with_state(app)
}

async fn not_found(State(app): State<Arc<App>>) -> Response {
    finish(
        &app,
        "other",
        Instant::now(),
        Err(ApiError::NotFound("no such route".into())),
    )
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn ping(State(app): State<Arc<App>>) -> Response {
    let start = Instant::now();
    finish(&app, "ping", start, Ok(StatusCode::OK.into_response()))
}

/// The worker of model `name` (any name in single-model mode when `name`
/// is `None`).
pub(crate) async fn worker(app: &App, name: Option<&str>) -> Result<Worker, ApiError> {
    match (&app.models, name) {
        (Models::Single { worker, .. }, None) => Ok(worker.clone()),
        (Models::Single { name: own, worker }, Some(n)) if n == own => Ok(worker.clone()),
        (Models::Single { .. }, Some(n)) => Err(ApiError::NotFound(format!("no model named {n:?}"))),
        (Models::Multi(r), Some(n)) => Ok(r.get(n).await?),
        (Models::Multi(_), None) => Err(ApiError::NotFound(
            "multi-model mode: name the model in the X-Amzn-SageMaker-Target-Model header or call /models/{name}/invoke".into(),
        )),
    }
}

fn registry(app: &App) -> Result<&Registry, ApiError> {
    match &app.models {
        Models::Multi(r) => Ok(r),
        Models::Single { .. } => Err(ApiError::NotFound(
            "the /models API needs multi-model mode (--multi-model)".into(),
        )),
    }
}

/// The body, refused with 413 past the limit (by `Content-Length` before
/// reading, or while reading a chunked one).
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.payload_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::TooLarge(limit);
            }
            source = s.source();
        }
        ApiError::Bad(format!("the request body could not be read: {e}"))
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Runs `parse` on the body, off the async threads when it is large.
async fn parse_off_thread<T: Send + 'static>(
    body: Bytes,
    parse: impl FnOnce(&[u8]) -> Result<T, BadInput> + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() < BLOCKING_PARSE_BYTES {
        return Ok(parse(&body)?);
    }
    tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|e| ApiError::Internal(format!("parsing task: {e}")))?
        .map_err(ApiError::from)
}

// The hot handlers take the request whole: the `HeaderMap` extractor
// would copy the headers.
async fn invocations(State(app): State<Arc<App>>, request: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let target = header_str(headers, TARGET_MODEL);
    let reply = invoke(&app, target, headers, body).await;
    finish(&app, "invocations", start, reply)
}

async fn invoke_model(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let reply = match registry(&app) {
        Ok(_) => invoke(&app, Some(&name), &headers, body).await,
        Err(e) => Err(e),
    };
    finish(&app, "models_invoke", start, reply)
}

/// `POST /invocations`: Content-Type in, Accept out.
async fn invoke(app: &App, name: Option<&str>, headers: &HeaderMap, body: Body) -> Reply {
    let content_type = header_str(headers, "content-type").unwrap_or("");
    let input_format = Format::from_content_type(content_type).ok_or_else(|| {
        ApiError::MediaType(format!(
            "Content-Type {content_type:?} is not supported: use text/csv, application/json or application/jsonlines"
        ))
    })?;
    let accept = header_str(headers, "accept").unwrap_or("");
    let output_format = Format::from_accept(accept).ok_or_else(|| {
        ApiError::NotAcceptable(format!(
            "Accept {accept:?}: the server writes text/csv, application/json or application/jsonlines"
        ))
    })?;
    let worker = worker(app, name).await?;
    let bytes = read_body(app, headers, body).await?;
    let expect = worker.info.expect;
    let input = parse_off_thread(bytes, move |b| codec::parse(input_format, b, expect)).await?;
    let predictions = worker.predict(input).await?;
    let mut response = Response::new(Body::from(codec::write(output_format, &predictions)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(output_format.mime()),
    );
    if let Some(attrs) = headers.get(CUSTOM_ATTRIBUTES) {
        h.insert(CUSTOM_ATTRIBUTES, attrs.clone());
    }
    Ok(response)
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn model_json(l: &super::registry::Listed) -> Value {
    json!({ "modelName": l.name, "modelUrl": l.url, "loaded": l.loaded })
}

/// `GET /models?max_results=N&next_page_token=T`.
async fn list_models(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    let start = Instant::now();
    let reply = registry(&app).and_then(|r| {
        let mut max = usize::MAX;
        let mut from = 0usize;
        for pair in uri.query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("max_results", v)) => {
                    max = v
                        .parse()
                        .map_err(|_| ApiError::Bad("max_results must be a number".into()))?
                }
                Some(("next_page_token", v)) => {
                    from = v
                        .parse()
                        .map_err(|_| ApiError::Bad("bad next_page_token".into()))?
                }
                _ => {}
            }
        }
        let all = r.list();
        let page: Vec<Value> = all.iter().skip(from).take(max).map(model_json).collect();
        let mut v = json!({ "models": page });
        if from.saturating_add(max) < all.len() {
            v["nextPageToken"] = (from + max).to_string().into();
        }
        Ok(json_response(StatusCode::OK, &v))
    });
    finish(&app, "models_list", start, reply)
}

/// `POST /models` with `{"model_name": ..., "url": ...}`.
async fn load_model(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let reply = async {
        let r = registry(&app)?;
        let bytes = read_body(&app, &headers, body).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Bad(format!("the body is not valid JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::Bad(format!("{k:?} (a string) is required")))
        };
        let (name, url) = (field("model_name")?, field("url")?);
        if name.len() > 256 || name.contains('/') {
            return Err(ApiError::Bad(
                "model_name must be at most 256 characters, without '/'".into(),
            ));
        }
        r.load(name, url).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "modelName": name, "modelUrl": url, "loaded": true }),
        ))
    }
    .await;
    finish(&app, "models_load", start, reply)
}

async fn get_model(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let reply = registry(&app).and_then(|r| {
        r.describe(&name)
            .map(|l| json_response(StatusCode::OK, &model_json(&l)))
            .ok_or_else(|| ApiError::NotFound(format!("no model named {name:?}")))
    });
    finish(&app, "models_get", start, reply)
}

async fn unload_model(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let reply = registry(&app).and_then(|r| {
        r.unload(&name)?;
        Ok(StatusCode::OK.into_response())
    });
    finish(&app, "models_unload", start, reply)
}

// ---- Open Inference Protocol ----

async fn v2_server(State(app): State<Arc<App>>) -> Response {
    let start = Instant::now();
    let v = json!({
        "name": "kiln",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "sagemaker"],
    });
    finish(
        &app,
        "v2_metadata",
        start,
        Ok(json_response(StatusCode::OK, &v)),
    )
}

async fn v2_live(State(app): State<Arc<App>>) -> Response {
    finish(
        &app,
        "v2_health",
        Instant::now(),
        Ok(StatusCode::OK.into_response()),
    )
}

async fn v2_ready(State(app): State<Arc<App>>) -> Response {
    finish(
        &app,
        "v2_health",
        Instant::now(),
        Ok(StatusCode::OK.into_response()),
    )
}

pub(crate) fn check_version(version: Option<&str>) -> Result<(), ApiError> {
    match version {
        None | Some(v2::MODEL_VERSION) => Ok(()),
        Some(v) => Err(ApiError::NotFound(format!(
            "version {v:?} is not served: models have version {}",
            v2::MODEL_VERSION
        ))),
    }
}

async fn v2_model_reply(app: &App, name: &str, version: Option<&str>) -> Reply {
    check_version(version)?;
    let w = worker(app, Some(name)).await?;
    let i = &w.info;
    let v = v2::model_metadata(name, &i.algorithm, i.expect, i.shape, i.width);
    Ok(json_response(StatusCode::OK, &v))
}

async fn v2_model(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let reply = v2_model_reply(&app, &name, None).await;
    finish(&app, "v2_model", start, reply)
}

async fn v2_model_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let start = Instant::now();
    let reply = v2_model_reply(&app, &name, Some(&version)).await;
    finish(&app, "v2_model", start, reply)
}

impl App {
    /// Whether `name` is a served (or, in multi-model mode, registered) model.
    pub(crate) fn knows(&self, name: &str) -> bool {
        match &self.models {
            Models::Single { name: own, .. } => own == name,
            Models::Multi(r) => r.describe(name).is_some(),
        }
    }
}

fn v2_ready_reply(app: &App, name: &str, version: Option<&str>) -> Reply {
    check_version(version)?;
    if app.knows(name) {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::NotFound(format!("no model named {name:?}")))
    }
}

async fn v2_model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let reply = v2_ready_reply(&app, &name, None);
    finish(&app, "v2_model_ready", start, reply)
}

async fn v2_model_version_ready(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let start = Instant::now();
    let reply = v2_ready_reply(&app, &name, Some(&version));
    finish(&app, "v2_model_ready", start, reply)
}

async fn v2_infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let (parts, body) = request.into_parts();
    let reply = v2_infer_reply(&app, &name, None, &parts.headers, body).await;
    finish(&app, "v2_infer", start, reply)
}

async fn v2_infer_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let reply = v2_infer_reply(&app, &name, Some(&version), &headers, body).await;
    finish(&app, "v2_infer", start, reply)
}

async fn v2_infer_reply(
    app: &App,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Reply {
    check_version(version)?;
    let json_len = match header_str(headers, INFERENCE_HEADER) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<usize>()
                .map_err(|_| ApiError::Bad(format!("{INFERENCE_HEADER} {v:?} is not a length")))?,
        ),
    };
    if json_len.is_none() {
        let content_type = header_str(headers, "content-type").unwrap_or("application/json");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.is_empty() && !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::MediaType(format!(
                "Content-Type {content_type:?}: an inference request is application/json"
            )));
        }
    }
    let worker = worker(app, Some(name)).await?;
    let bytes = read_body(app, headers, body).await?;
    let expect: Expect = worker.info.expect;
    let request = parse_off_thread(bytes, move |b| v2::parse_infer(b, json_len, expect)).await?;
    let predictions = worker.predict(request.input).await?;
    let out = v2::write_infer(
        name,
        request.id.as_deref(),
        &predictions,
        &request.outputs,
        request.binary_default,
    )?;
    let mut response = Response::new(Body::from(out.body));
    let h = response.headers_mut();
    match out.json_len {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(INFERENCE_HEADER, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(response)
}
