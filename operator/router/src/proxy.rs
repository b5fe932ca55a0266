//! The proxy: every request, whatever its method and path, goes to one
//! production variant, and a sampled copy to each shadow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, request, response};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kiln_api::router::{
    CaptureConfig, INVOKED_VARIANT_HEADER, SAGEMAKER_TARGET_VARIANT_HEADER, TARGET_VARIANT_HEADER,
};

use crate::App;
use crate::capture::{self, Capture, Event, Record};
use crate::choose::{self, NoVariant};
use crate::config::{Routes, Upstream};
use crate::metrics::NO_VARIANT;

/// The pooled (keep-alive) client to variants and shadows.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A request body read past the limit is still drained up to this many
/// bytes, so that the caller (still sending) reads the 413 rather than a
/// reset connection.
const DRAIN_LIMIT: u64 = 64 << 20;

/// SageMaker's header carrying a caller's own id of a request, recorded as
/// `inferenceId`.
const INFERENCE_ID_HEADER: &str = "x-amzn-sagemaker-inference-id";

/// Headers of one connection, never forwarded (RFC 9110, section 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// `headers` without the hop-by-hop ones (and those `Connection` names).
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for value in headers.get_all(CONNECTION) {
        for name in value.to_str().unwrap_or_default().split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                out.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    out
}

/// The variant a request names, by either header.
fn target_variant(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TARGET_VARIANT_HEADER)
        .or_else(|| headers.get(SAGEMAKER_TARGET_VARIANT_HEADER))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
}

/// A JSON error answer of the router itself.
fn refuse(
    status: StatusCode,
    message: &str,
    variants: Option<&Routes>,
    invoked: Option<&Upstream>,
) -> Response {
    let mut body = serde_json::json!({ "error": message });
    if let Some(routes) = variants {
        body["variants"] = routes
            .config
            .variants
            .iter()
            .map(|v| v.name.clone())
            .collect();
    }
    let mut response = (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(upstream) = invoked {
        response
            .headers_mut()
            .insert(INVOKED_VARIANT_HEADER, upstream.invoked.clone());
    }
    response
}

/// An error with its causes, e.g. `client error (Connect): tcp connect
/// error: Connection refused (os error 111)`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Reads the whole request body, up to `limit` bytes.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the router's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64)
        && (headers.contains_key(EXPECT) || declared.is_some_and(|n| n > DRAIN_LIMIT))
    {
        // Refused before the body is sent (`Expect: 100-continue`), or too
        // large to drain.
        return Err(too_large());
    }
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {}", chain(&e)),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit as u64 {
                chunks.clear();
                if total > DRAIN_LIMIT {
                    break;
                }
            } else {
                chunks.push(data);
            }
        }
    }
    if total > limit as u64 {
        return Err(too_large());
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(total as usize);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    })
}

/// The request for `upstream`: the caller's method, path, query and
/// end-to-end headers, with `Host` naming the upstream.
fn upstream_request(
    parts: &request::Parts,
    upstream: &Upstream,
    peer: SocketAddr,
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let uri = upstream.uri(parts.uri.path_and_query())?;
    let mut headers = end_to_end(&parts.headers);
    headers.remove(HOST);
    // Hyper sets the length of the (whole) body; the body is already here,
    // so there is nothing to wait for.
    headers.remove(CONTENT_LENGTH);
    headers.remove(EXPECT);
    upstream.set_host(&mut headers);
    let forwarded = match parts.headers.get("x-forwarded-for") {
        Some(v) => format!("{}, {}", String::from_utf8_lossy(v.as_bytes()), peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", v);
    }
    let mut request = hyper::Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// What a request's capture records share: the request, once.
struct Captured {
    config: Arc<CaptureConfig>,
    endpoint: String,
    event_id: String,
    inference_id: Option<String>,
    at: SystemTime,
    content_type: String,
    input: Bytes,
}

impl Captured {
    /// Queues the record of `variant`'s answer (`output`, when captured).
    fn record(&self, capture: &Capture, variant: &str, output: Option<(&str, &[u8])>) {
        let c = &self.config;
        if !c.capture_input && !c.capture_output {
            return;
        }
        let line = capture::line(&Event {
            event_id: &self.event_id,
            inference_id: self.inference_id.as_deref(),
            at: self.at,
            variant,
            input: c.capture_input.then(|| capture::Body {
                content_type: &self.content_type,
                data: &self.input,
            }),
            output: output
                .filter(|_| c.capture_output)
                .map(|(content_type, data)| capture::Body { content_type, data }),
        });
        capture.submit(Record {
            config: self.config.clone(),
            endpoint: self.endpoint.clone(),
            variant: variant.to_string(),
            at: self.at,
            line,
        });
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// Waits between attempts of a request whose connection could not be made
/// (refused, unreachable): nothing was sent, so trying again is safe
/// whatever the method. This covers a variant's new replica that is in its
/// Service but not yet in every node's forwarding rules, and one that just
/// stopped; 775 ms in all, then the caller gets 502.
const CONNECT_RETRY_DELAYS_MS: [u64; 5] = [25, 50, 100, 200, 400];

/// Sends `request`; `Err` says why no answer came.
async fn send(
    client: &HttpClient,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, String> {
    let (parts, body) = request.into_parts();
    let mut delays = CONNECT_RETRY_DELAYS_MS.iter();
    let mut retried_closed = false;
    loop {
        let attempt = hyper::Request::from_parts(parts.clone(), body.clone());
        match client.request(attempt).await {
            Ok(response) => return Ok(response),
            Err(e) if e.is_connect() => match delays.next() {
                Some(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                None => return Err(chain(&e)),
            },
            // A pooled connection the variant closed as the request went out
            // (a replica draining its idle connections): no answer began, so
            // the request goes once more, on a fresh connection.
            Err(e) if !retried_closed && closed_before_answer(&e) => retried_closed = true,
            Err(e) => return Err(chain(&e)),
        }
    }
}

/// Whether the connection closed before any of the answer arrived.
fn closed_before_answer(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled();
        }
        cause = c.source();
    }
    false
}

/// Sends `request` and reads the whole answer.
async fn send_buffered(
    client: &HttpClient,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(response::Parts, Bytes), String> {
    let (parts, body) = send(client, request).await?.into_parts();
    let body = body.collect().await.map_err(|e| chain(&e))?.to_bytes();
    Ok((parts, body))
}

/// The handler of every request on the proxy port.
pub async fn proxy(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let arrived = SystemTime::now();
    let routes = app.routes();
    let endpoint = routes.config.endpoint.as_str();
    let target = target_variant(request.headers());
    let index = match choose::pick_random(&routes.config.variants, target.as_deref()) {
        Ok(i) => i,
        Err(no) => {
            let (status, message) = match no {
                NoVariant::Unknown(name) => (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the target variant {name:?} is not a production variant of endpoint {endpoint:?}"
                    ),
                ),
                NoVariant::NoWeight => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no variant of endpoint {endpoint:?} takes traffic (every weight is 0); \
                         name one in the {TARGET_VARIANT_HEADER} header"
                    ),
                ),
            };
            app.metrics.request(endpoint, NO_VARIANT, status.as_u16());
            return refuse(status, &message, Some(&routes), None);
        }
    };
    let upstream = &routes.variants[index];
    let flight = app.metrics.flight(endpoint, &upstream.name);
    let (parts, body) = request.into_parts();
    let answer = |status: StatusCode, message: &str| {
        app.metrics
            .request(endpoint, &upstream.name, status.as_u16());
        refuse(status, message, None, Some(upstream))
    };
    let body = match tokio::time::timeout(
        routes.timeout,
        read_body(body, &parts.headers, app.max_body),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err((status, message))) => return answer(status, &message),
        Err(_) => {
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s",
                    routes.timeout.as_secs()
                ),
            );
        }
    };

    // Which copies and records this request makes.
    let shadowed: Vec<usize> = (0..routes.shadows.len())
        .filter(|&i| choose::sampled(routes.shadows[i].sampling_percent))
        .collect();
    let capture_this = routes
        .capture
        .as_ref()
        .is_some_and(|c| choose::sampled(c.sampling_percent));
    let captured = routes
        .capture
        .as_ref()
        .filter(|_| capture_this || !shadowed.is_empty())
        .map(|c| {
            Arc::new(Captured {
                config: c.clone(),
                endpoint: endpoint.to_string(),
                event_id: choose::random_id(),
                inference_id: parts
                    .headers
                    .get(INFERENCE_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                at: arrived,
                content_type: content_type(&parts.headers),
                input: body.clone(),
            })
        });
    for i in shadowed {
        shadow(
            &app,
            &routes,
            i,
            &parts,
            peer,
            body.clone(),
            captured.clone(),
        );
    }

    let request = match upstream_request(&parts, upstream, peer, body) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("bad request URI: {e}")),
    };
    let buffer = capture_this && routes.capture.as_ref().is_some_and(|c| c.capture_output);
    let timeout = routes.timeout;
    let exchange = async {
        if buffer {
            send_buffered(&app.client, request)
                .await
                .map(|(parts, bytes)| (parts, Body::new(Full::new(bytes.clone())), Some(bytes)))
        } else {
            send(&app.client, request).await.map(|r| {
                let (parts, body) = r.into_parts();
                (parts, Body::new(body), None)
            })
        }
    };
    let (mut head, body, output) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tracing::warn!(endpoint, variant = %upstream.name, error = %e, "variant unreachable");
            return answer(
                StatusCode::BAD_GATEWAY,
                &format!("variant {:?} did not answer: {e}", upstream.name),
            );
        }
        Err(_) => {
            tracing::warn!(endpoint, variant = %upstream.name, timeout_s = timeout.as_secs(),
                "variant too slow");
            return answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "variant {:?} did not answer within {} s",
                    upstream.name,
                    timeout.as_secs()
                ),
            );
        }
    };
    if capture_this
        && head.status.is_success()
        && let Some(captured) = &captured
    {
        let ct = content_type(&head.headers);
        captured.record(
            &app.capture,
            &upstream.name,
            output.as_ref().map(|b| (ct.as_str(), &b[..])),
        );
    }
    head.headers = end_to_end(&head.headers);
    head.headers
        .insert(INVOKED_VARIANT_HEADER, upstream.invoked.clone());
    app.metrics
        .request(endpoint, &upstream.name, head.status.as_u16());
    // In flight (and timed) until the body has been sent.
    let body = Body::new(body.map_frame(move |frame| {
        let _flight = &flight;
        frame
    }));
    Response::from_parts(head, body)
}

/// Sends a copy to shadow `i` in the background, unless its limit of copies
/// in flight is reached.
fn shadow(
    app: &Arc<App>,
    routes: &Routes,
    i: usize,
    parts: &request::Parts,
    peer: SocketAddr,
    body: Bytes,
    captured: Option<Arc<Captured>>,
) {
    let shadow = &routes.shadows[i];
    let endpoint = routes.config.endpoint.clone();
    let name = shadow.upstream.name.clone();
    let Ok(permit) = shadow.slots.clone().try_acquire_owned() else {
        app.metrics.shadow(&endpoint, &name, "dropped");
        return;
    };
    let request = match upstream_request(parts, &shadow.upstream, peer, body) {
        Ok(r) => r,
        Err(_) => return, // the production request is refused for it too
    };
    app.metrics.shadow(&endpoint, &name, "sent");
    let timeout = routes.timeout;
    let task_app = app.clone();
    app.shadows.spawn(async move {
        let _permit = permit;
        let app = task_app;
        match tokio::time::timeout(timeout, send_buffered(&app.client, request)).await {
            Ok(Ok((head, bytes))) => {
                if head.status.is_server_error() {
                    app.metrics.shadow(&endpoint, &name, "error");
                }
                if head.status.is_success()
                    && let Some(captured) = captured
                {
                    let ct = content_type(&head.headers);
                    captured.record(&app.capture, &name, Some((&ct, &bytes)));
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(endpoint, shadow = %name, error = %e, "shadow unreachable");
                app.metrics.shadow(&endpoint, &name, "error");
            }
            Err(_) => {
                tracing::debug!(endpoint, shadow = %name, "shadow too slow");
                app.metrics.shadow(&endpoint, &name, "error");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "text/csv".parse().unwrap());
        h.insert("x-kiln-target-variant", "a".parse().unwrap());
        let out = end_to_end(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-kiln-target-variant"]);
    }

    #[test]
    fn names_the_target_by_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(target_variant(&h), None);
        h.insert(SAGEMAKER_TARGET_VARIANT_HEADER, "b".parse().unwrap());
        assert_eq!(target_variant(&h).as_deref(), Some("b"));
        h.insert(TARGET_VARIANT_HEADER, " a ".parse().unwrap());
        assert_eq!(target_variant(&h).as_deref(), Some("a"));
    }
}
