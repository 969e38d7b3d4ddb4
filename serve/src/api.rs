//! The HTTP API.
//!
//! The routes, who may call each and what it does are listed in
//! docs/serve.md; [`router`] is where they are defined.
//!
//! Authorization comes first, before the body is read: no token or an
//! unknown one is 401; a tenant's token on another tenant's path is 404,
//! exactly as for a tenant that does not exist, so nothing about other
//! tenants can be learnt; the admin token is for the admin endpoints only
//! (403 elsewhere), a tenant token there is 403. Every error body is
//! `{"error": "…"}`.

use crate::audit::{AuditAction, AuditEntry, AuditResult};
use crate::metrics;
use crate::names::check_tenant_id;
use crate::service::{AlertsError, Principal, ReloadError, Service};
use crate::tenant::{StoreError, Tenant};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use dac_engine::CancelOnDrop;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The whole API over `service`.
pub fn router(service: Arc<Service>) -> Router {
    let tenant_routes = Router::new()
        .route("/v1/tenants/{tenant}/rules", get(list_rules))
        .route("/v1/tenants/{tenant}/rules/{name}", get(get_rule).put(put_rule).delete(delete_rule))
        .route("/v1/tenants/{tenant}/rules/{name}/dry-run", post(dry_run_rule))
        .route("/v1/tenants/{tenant}/rules/{name}/disable", post(disable_rule))
        .route("/v1/tenants/{tenant}/rules/{name}/enable", post(enable_rule))
        .route("/v1/tenants/{tenant}/dry-run", post(dry_run_all))
        .route("/v1/tenants/{tenant}/alerts", get(recent_alerts))
        .route("/v1/tenants/{tenant}/metrics", get(tenant_metrics))
        .route("/v1/tenants/{tenant}/audit", get(tenant_audit))
        .route_layer(middleware::from_fn_with_state(service.clone(), announced_size))
        .route_layer(middleware::from_fn_with_state(service.clone(), tenant_auth));
    let admin_routes = Router::new()
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/tenants/reload", post(reload_tenants))
        .route("/v1/audit", get(audit_log))
        .route("/metrics", get(all_metrics))
        .route_layer(middleware::from_fn_with_state(service.clone(), announced_size))
        .route_layer(middleware::from_fn_with_state(service.clone(), admin_auth));
    // For orchestrators' probes: no token, nothing about any tenant.
    let probe_routes = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    let limit = service.config().max_request_bytes;
    Router::new()
        .merge(probe_routes)
        .merge(tenant_routes)
        .merge(admin_routes)
        .fallback(|| async { not_found() })
        // Which methods a path takes is the same for every tenant: no leak.
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(service.clone(), request_timeout))
        .with_state(service)
}

/// Serves the API on `listener` until `shutdown` completes, within the
/// configuration's [`crate::HttpLimits`]: at most `max_connections` at
/// once (more are closed as they arrive), `header_timeout_ms` for each
/// request's headers, `request_timeout_ms` for each request; then the
/// requests in progress get `shutdown_grace_ms` to finish.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let http = service.config().http.clone();
    let app = router(service.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of file descriptors, mostly: wait for some to close.
                        tracing::warn!("accepting a connection: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    service.http_counters().connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let app = app.clone();
                let mut closed = closed.clone();
                let header_timeout = Duration::from_millis(http.header_timeout_ms);
                connections.spawn(async move {
                    let _slot = slot;
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
                    let mut connection = std::pin::pin!(connection);
                    let mut asked = false;
                    loop {
                        tokio::select! {
                            _ = connection.as_mut() => break,
                            _ = closed.changed(), if !asked => {
                                asked = true;
                                connection.as_mut().graceful_shutdown();
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    let grace = Duration::from_millis(http.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("{} connections still busy after {grace:?} of shutdown; closing them", connections.len());
        connections.abort_all();
    }
    Ok(())
}

/// Answers 408 to a request that takes longer than `request_timeout_ms`
/// (a body sent byte by byte, mostly).
async fn request_timeout(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let timeout = Duration::from_millis(service.config().http.request_timeout_ms);
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            error(StatusCode::REQUEST_TIMEOUT, format!("the request took longer than {} ms", timeout.as_millis()))
        }
    }
}

/// Answers 413 at once to a request that announces a body over
/// `max_request_bytes`, before reading any of it (after authorization, so
/// a caller without a token learns nothing but 401).
async fn announced_size(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let limit = service.config().max_request_bytes;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over this server's limit of {limit} bytes"));
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The principal of the request's `Authorization: Bearer …` header.
fn principal(service: &Service, request: &Request) -> Option<Principal> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    service.authenticate(token.trim())
}

/// The tenant a request is about, as the handlers receive it.
#[derive(Clone)]
struct Caller {
    principal: Principal,
    tenant: Arc<Tenant>,
}

async fn tenant_auth(
    State(service): State<Arc<Service>>,
    path: Result<Path<HashMap<String, String>>, axum::extract::rejection::PathRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(principal) = principal(&service, &request) else { return unauthorized() };
    let Ok(Path(params)) = path else { return not_found() };
    let wanted = params.get("tenant").map(String::as_str).unwrap_or_default();
    match &principal {
        Principal::Tenant(id) if id == wanted => {}
        // Another tenant's path looks exactly like one that does not exist.
        Principal::Tenant(_) => return not_found(),
        Principal::Admin => {
            return error(StatusCode::FORBIDDEN, "the admin token manages tenants; a tenant's rules need its own token")
        }
    }
    let Some(tenant) = service.tenant(wanted) else { return not_found() };
    let Some(_slot) = tenant.request_slot() else {
        let limit = tenant.config.limits.max_concurrent_requests;
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this tenant already has {limit} requests in progress, its limit; try again when one has finished"),
        );
    };
    request.extensions_mut().insert(Caller { principal, tenant: tenant.clone() });
    next.run(request).await
}

async fn admin_auth(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    match principal(&service, &request) {
        None => unauthorized(),
        Some(Principal::Admin) => next.run(request).await,
        Some(Principal::Tenant(_)) => error(StatusCode::FORBIDDEN, "this endpoint needs the admin token"),
    }
}

fn store_error(err: StoreError) -> Response {
    let status = match &err {
        StoreError::InvalidName(_) => StatusCode::BAD_REQUEST,
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::TooManyRules { .. } => StatusCode::CONFLICT,
        StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::Conflict(_) | StoreError::Retired => StatusCode::CONFLICT,
        StoreError::DryRunLimit(_) => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
        StoreError::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Io { .. } | StoreError::Compiler(_) => {
            // The path is the server's business, not the client's.
            tracing::error!("{err}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server's log");
        }
    };
    error(status, err.to_string())
}

/// Runs a tenant's heavy work (compiling, dry runs, reloading) on the
/// background threads, below the streams' priority (`background.rs`).
async fn background<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    crate::background::run(work).await.ok_or_else(|| {
        tracing::error!("a request's background work panicked");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server's log")
    })
}

/// Runs blocking work (file I/O, short lookups) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        tracing::error!("a request's work panicked: {err}");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server's log")
    })
}

fn body_error(rejection: BytesRejection) -> Response {
    error(rejection.status(), rejection.body_text())
}

async fn list_rules(Extension(caller): Extension<Caller>) -> Response {
    let tenant = caller.tenant;
    Json(json!({
        "rules": tenant.rules(),
        "not_loaded": tenant.not_loaded(),
        "quarantined": tenant.quarantined(),
        "disabled": tenant.disabled(),
    }))
    .into_response()
}

async fn get_rule(Extension(caller): Extension<Caller>, Path((_, name)): Path<(String, String)>) -> Response {
    let tenant = caller.tenant;
    let got = match blocking(move || tenant.get(&name)).await {
        Ok(got) => got,
        Err(response) => return response,
    };
    match got {
        Ok((summary, bytes)) => {
            let content_type = if summary.kind.is_declarative() { "application/yaml" } else { "application/wasm" };
            let etag = format!("\"{}\"", summary.sha256);
            ([(header::CONTENT_TYPE, content_type.to_owned()), (header::ETAG, etag)], bytes).into_response()
        }
        Err(err) => store_error(err),
    }
}

async fn put_rule(
    Extension(caller): Extension<Caller>,
    Path((_, name)): Path<(String, String)>,
    State(service): State<Arc<Service>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut entry = entry(&caller, AuditAction::RulePut, &name);
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            let response = body_error(rejection);
            entry.result = AuditResult::Refused;
            entry.reason = Some(format!("request body refused ({})", response.status()));
            return audited(&service, entry, response);
        }
    };
    entry.sha256 = Some(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))));
    // Cancelled if this request is dropped (its client went away) or the
    // server stops: a compilation in progress ends then. The outcome is
    // audited by the background job itself, so an upload whose client went
    // away is audited too.
    let cancel = service.stopping().child();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let audit = service.clone();
    let answer = background(move || {
        let response = match caller.tenant.put(&name, &bytes, &cancel) {
            Ok(put) => {
                entry.result = if put.created { AuditResult::Created } else { AuditResult::Replaced };
                let status = if put.created { StatusCode::CREATED } else { StatusCode::OK };
                tracing::info!(
                    "tenant {}: {} rule {} ({})",
                    caller.tenant.id(),
                    entry.result,
                    put.rule.name,
                    put.rule.sha256
                );
                let mut rule = json!(put.rule);
                if let Some(disabled) = put.disabled {
                    // Stored and checked, but it stays out of the engine.
                    rule["disabled"] = json!(disabled);
                }
                (status, Json(rule)).into_response()
            }
            Err(err) => {
                if matches!(err, StoreError::Cancelled) {
                    tracing::info!("tenant {}: upload of rule {name} cancelled while compiling", caller.tenant.id());
                }
                entry.result = AuditResult::Refused;
                entry.reason = Some(err.to_string());
                store_error(err)
            }
        };
        audited(&audit, entry, response)
    });
    answer.await.unwrap_or_else(|response| response)
}

async fn delete_rule(
    Extension(caller): Extension<Caller>,
    Path((_, name)): Path<(String, String)>,
    State(service): State<Arc<Service>>,
) -> Response {
    change_rule(
        service,
        caller,
        AuditAction::RuleDelete,
        name,
        |tenant, name| tenant.delete(name),
        |removed, entry| {
            entry.result = AuditResult::Deleted;
            entry.sha256 = removed.map(|rule| rule.sha256);
            StatusCode::NO_CONTENT.into_response()
        },
    )
    .await
}

async fn disable_rule(
    Extension(caller): Extension<Caller>,
    Path((_, name)): Path<(String, String)>,
    State(service): State<Arc<Service>>,
) -> Response {
    let who = caller.principal.audit_name();
    change_rule(
        service,
        caller,
        AuditAction::RuleDisable,
        name,
        move |tenant, name| tenant.disable(name, &who),
        |switched, entry| {
            entry.result = if switched.changed { AuditResult::Disabled } else { AuditResult::Unchanged };
            entry.sha256 = switched.rule.sha256.clone();
            Json(switched.rule).into_response()
        },
    )
    .await
}

async fn enable_rule(
    Extension(caller): Extension<Caller>,
    Path((_, name)): Path<(String, String)>,
    State(service): State<Arc<Service>>,
) -> Response {
    change_rule(
        service,
        caller,
        AuditAction::RuleEnable,
        name,
        |tenant, name| tenant.enable(name),
        |switched, entry| {
            entry.result = if switched.changed { AuditResult::Enabled } else { AuditResult::Unchanged };
            entry.sha256 = Some(switched.rule.sha256.clone());
            Json(switched.rule).into_response()
        },
    )
    .await
}

/// A change to one of the caller's rules without a body: `change` runs off
/// the async workers; `answer` fills in the audit entry's result and makes
/// the response; a refusal is audited with its reason. Either way the
/// entry is recorded before the response goes out.
async fn change_rule<T: Send + 'static>(
    service: Arc<Service>,
    caller: Caller,
    action: AuditAction,
    name: String,
    change: impl FnOnce(&Tenant, &str) -> Result<T, StoreError> + Send + 'static,
    answer: impl FnOnce(T, &mut AuditEntry) -> Response,
) -> Response {
    let mut entry = entry(&caller, action, &name);
    let tenant = caller.tenant.clone();
    let outcome = match background(move || change(&tenant, &name)).await {
        Ok(outcome) => outcome,
        Err(response) => return response,
    };
    let response = match outcome {
        Ok(done) => {
            let response = answer(done, &mut entry);
            if entry.result != AuditResult::Unchanged {
                tracing::info!("tenant {}: {} rule {}", caller.tenant.id(), entry.result, entry.rule);
            }
            response
        }
        Err(err) => {
            entry.result = AuditResult::Refused;
            entry.reason = Some(err.to_string());
            store_error(err)
        }
    };
    audited(&service, entry, response)
}

async fn dry_run_all(Extension(caller): Extension<Caller>, body: Result<Bytes, BytesRejection>) -> Response {
    dry_run(caller, None, body).await
}

async fn dry_run_rule(
    Extension(caller): Extension<Caller>,
    Path((_, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    dry_run(caller, Some(name), body).await
}

async fn dry_run(caller: Caller, only: Option<String>, body: Result<Bytes, BytesRejection>) -> Response {
    let events = match body {
        Ok(bytes) => bytes.to_vec(),
        Err(rejection) => return body_error(rejection),
    };
    let tenant = caller.tenant;
    match background(move || tenant.dry_run(only.as_deref(), events)).await {
        Ok(Ok(result)) => ([(header::CONTENT_TYPE, "application/json")], result.to_json()).into_response(),
        Ok(Err(err)) => store_error(err),
        Err(response) => response,
    }
}

/// The most alerts one request returns: the endpoint is for a look at the
/// latest, not an export.
const MAX_ALERTS: u32 = 1000;

async fn recent_alerts(
    Extension(caller): Extension<Caller>,
    State(service): State<Arc<Service>>,
    uri: axum::http::Uri,
) -> Response {
    // `limit` is the only parameter: read by hand rather than pulling in a
    // form decoder for one number.
    let mut limit = Some(100);
    for pair in uri.query().unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        limit = match pair.split_once('=') {
            Some(("limit", value)) => value.parse().ok().filter(|n| (1..=MAX_ALERTS).contains(n)),
            _ => None,
        };
        if limit.is_none() {
            break;
        }
    }
    let Some(limit) = limit else {
        return error(StatusCode::BAD_REQUEST, format!("the only parameter is limit, a number from 1 to {MAX_ALERTS}"));
    };
    let tenant = caller.tenant;
    match blocking(move || service.recent_alerts(&tenant, limit)).await {
        Ok(Ok(alerts)) => Json(json!({ "alerts": alerts })).into_response(),
        Ok(Err(err @ AlertsError::NotConnected)) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
        Ok(Err(err)) => {
            // The collection name is the tenant's own; the driver's message
            // may name servers: log it, answer plainly.
            tracing::error!("tenant {}: {err}", caller.principal.audit_name());
            error(StatusCode::BAD_GATEWAY, "the alert store did not answer; see the server's log")
        }
        Err(response) => response,
    }
}

/// Liveness: the server answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: serving (its streams were opened before it listened), and
/// not stopping.
async fn readyz(State(service): State<Arc<Service>>) -> Response {
    if service.stopping().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn all_metrics(State(service): State<Arc<Service>>) -> Response {
    metrics_response(service, None).await
}

async fn tenant_metrics(Extension(caller): Extension<Caller>, State(service): State<Arc<Service>>) -> Response {
    metrics_response(service, Some(caller.tenant.id().to_owned())).await
}

async fn metrics_response(service: Arc<Service>, tenant: Option<String>) -> Response {
    // Off the async workers: a scrape takes every tenant's lock in turn,
    // each held by its stream for at most one event's evaluation.
    let text = blocking(move || {
        let scrape = match &tenant {
            Some(id) => metrics::Scrape::Tenant(id),
            None => metrics::Scrape::Everything,
        };
        metrics::render(&service, scrape)
    });
    match text.await {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(response) => response,
    }
}

async fn list_tenants(State(service): State<Arc<Service>>) -> Response {
    let tenants: Vec<serde_json::Value> = service
        .tenants()
        .into_iter()
        .map(|tenant| {
            json!({
                "id": tenant.id(),
                "scope": tenant.config.scope,
                "alert_collection": tenant.config.alert_collection,
                "limits": tenant.config.limits,
                "rules": tenant.rules().len(),
                "not_loaded": tenant.not_loaded().len(),
                "quarantined": tenant.quarantined().len(),
                "disabled": tenant.disabled().len(),
            })
        })
        .collect();
    Json(json!({ "tenants": tenants })).into_response()
}

async fn reload_tenants(State(service): State<Arc<Service>>) -> Response {
    match background(move || service.reload_file("admin")).await {
        Ok(Ok(changes)) => Json(json!({ "changes": changes })).into_response(),
        Ok(Err(err)) => {
            let status = match &err {
                ReloadError::NoFile | ReloadError::NeedsRestart(_) => StatusCode::CONFLICT,
                ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReloadError::Open(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ReloadError::Streams(_) => StatusCode::BAD_GATEWAY,
            };
            tracing::error!("reloading the tenants file: {err}");
            error(status, err.to_string())
        }
        Err(response) => response,
    }
}

/// Audit entries one request returns by default, and at most.
const AUDIT_PAGE: usize = 100;
const MAX_AUDIT_PAGE: usize = 1000;

/// A page of the audit log: `after` (a sequence number, 0 by default),
/// `limit` and, for the admin, `tenant`.
struct AuditQuery {
    after: u64,
    limit: usize,
    tenant: Option<String>,
}

impl AuditQuery {
    fn parse(query: Option<&str>, tenant_allowed: bool) -> Result<AuditQuery, String> {
        let mut parsed = AuditQuery { after: 0, limit: AUDIT_PAGE, tenant: None };
        let mut seen: Vec<&str> = Vec::new();
        let names = if tenant_allowed { "after, limit and tenant" } else { "after and limit" };
        for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&key) {
                return Err(format!("{key} is given twice"));
            }
            match key {
                "after" => {
                    parsed.after = value
                        .parse()
                        .map_err(|_| "after is a sequence number (seq of an entry, or next of a page)".to_owned())?;
                }
                "limit" => {
                    parsed.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
                        .ok_or_else(|| format!("limit is a number from 1 to {MAX_AUDIT_PAGE}"))?;
                }
                "tenant" if tenant_allowed => {
                    check_tenant_id(value).map_err(|_| "tenant is a tenant id".to_owned())?;
                    parsed.tenant = Some(value.to_owned());
                }
                _ => return Err(format!("the parameters are {names}")),
            }
            seen.push(key);
        }
        Ok(parsed)
    }
}

async fn audit_log(State(service): State<Arc<Service>>, uri: axum::http::Uri) -> Response {
    match AuditQuery::parse(uri.query(), true) {
        Ok(query) => audit_page(service, query).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// A tenant's own audit trail: the entries about it (its changes, and what
/// the server did to its rules).
async fn tenant_audit(
    Extension(caller): Extension<Caller>,
    State(service): State<Arc<Service>>,
    uri: axum::http::Uri,
) -> Response {
    match AuditQuery::parse(uri.query(), false) {
        Ok(mut query) => {
            query.tenant = Some(caller.tenant.id().to_owned());
            audit_page(service, query).await
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn audit_page(service: Arc<Service>, query: AuditQuery) -> Response {
    match blocking(move || service.audit().page(query.after, query.limit, query.tenant.as_deref())).await {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(err)) => {
            tracing::error!("{err}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server's log")
        }
        Err(response) => response,
    }
}

/// An entry for `action` on `rule`, refused until the handler says
/// otherwise.
fn entry(caller: &Caller, action: AuditAction, rule: &str) -> AuditEntry {
    AuditEntry {
        time: String::new(),
        who: caller.principal.audit_name(),
        action,
        tenant: caller.tenant.id().into(),
        rule: rule.into(),
        sha256: None,
        result: AuditResult::Refused,
        reason: None,
    }
}

/// Records `entry` before `response` goes out; a change that cannot be
/// audited is reported as a server error (it has been made, though).
fn audited(service: &Service, entry: AuditEntry, response: Response) -> Response {
    match service.audit().record(entry) {
        Ok(_) => response,
        Err(err) => {
            tracing::error!("{err}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request was handled but could not be audited; see the server's log",
            )
        }
    }
}
