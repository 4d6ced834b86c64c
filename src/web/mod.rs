//! The review UI and its JSON API: IT staff search what Kala held, see why, and release,
//! delete or mark it. Server-rendered pages (askama), plain forms, no JavaScript needed.
//!
//! [`auth`] owns accounts, sessions and tokens; [`i18n`] the texts in English, Albanian and
//! Serbian; [`pages`] the HTML handlers; [`lists`] and [`rules`] the allow/block lists and
//! rule management pages; [`api`] the same actions as JSON for scripts. Every response
//! carries strict security headers (one place: [`security_headers`]); every form carries the
//! session's CSRF token; errors never show internals.

pub mod api;
pub mod auth;
pub mod i18n;
pub mod lists;
pub mod pages;
pub mod rules;
pub mod track;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use self::auth::{Accounts, LoginLimiter, Session};
use self::i18n::Texts;
use crate::smtp::Shared;

/// Cookie holding the session token.
pub const SESSION_COOKIE: &str = "kala_session";
/// Cookie holding the login form's CSRF token (double submit: no session exists yet).
pub const LOGIN_COOKIE: &str = "kala_login";

/// What the handlers share.
pub struct Web {
    pub shared: Arc<Shared>,
    pub accounts: Accounts,
    pub limiter: LoginLimiter,
    /// Cookies get `Secure` (set when the UI is behind TLS).
    pub secure_cookies: bool,
}

impl Web {
    pub fn new(shared: Arc<Shared>) -> Web {
        let accounts = Accounts::new(shared.quarantine.store().clone());
        Web {
            secure_cookies: false,
            accounts,
            limiter: LoginLimiter::default(),
            shared,
        }
    }
}

/// The whole UI and API.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(pages::dashboard))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/language", post(pages::set_language))
        .route("/quarantine", get(pages::list))
        .route("/quarantine/action", post(pages::bulk_action))
        .route(
            "/quarantine/{id}",
            get(pages::message).post(pages::message_action),
        )
        .route("/quarantine/{id}/raw", get(pages::download))
        .route("/quarantine/{id}/html", get(pages::html_view))
        .route("/audit", get(pages::audit))
        .route("/track", get(track::page))
        .route("/lists", get(lists::page).post(lists::add))
        .route("/lists/{id}/remove", post(lists::remove))
        .route("/users", get(pages::users).post(pages::add_user))
        .route("/rules", get(rules::list))
        .route("/rules/reload", post(rules::reload))
        .route("/rules/versions", get(rules::versions))
        .route("/rules/versions/{id}/rollback", post(rules::rollback))
        .route("/rules/edit", get(rules::edit_form).post(rules::save))
        .route("/rules/{name}", get(rules::rule))
        .route("/static/kala.css", get(pages::stylesheet))
        // For load balancers and monitoring: no login, no details beyond ok or not.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/quarantine", get(api::list))
        .route("/api/quarantine/{id}", get(api::show))
        .route("/api/quarantine/{id}/{action}", post(api::act))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(
            web.secure_cookies,
            security_headers,
        ))
        .with_state(web)
}

/// 200 when the gateway can take mail (downstream, clamd, store and rules all answer),
/// 503 otherwise; the body says which probe failed.
async fn readyz(axum::extract::State(web): axum::extract::State<Arc<Web>>) -> Response {
    let readiness = crate::health::readiness(&web.shared).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// Prometheus scrapes this (OpenMetrics text). Like `/readyz` it needs no login: serve the
/// UI on an internal address.
async fn metrics(axum::extract::State(web): axum::extract::State<Arc<Web>>) -> Response {
    let text = crate::metrics::metrics()
        .render(&web.shared.quarantine)
        .await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// The UI, serving until the process ends.
pub struct RunningWeb {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWeb {
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Binds `web.listen` and serves the UI (over TLS when `web.tls` is on).
pub async fn start(shared: Arc<Shared>) -> anyhow::Result<RunningWeb> {
    use anyhow::Context as _;
    let settings = &shared.settings;
    let listen = settings.web.listen;
    let tls = if settings.web.tls {
        let config = crate::smtp::tls::server_config(
            &settings.smtp.tls,
            &settings.data_dir,
            &settings.smtp.hostname,
        )
        .context("web.tls: the SMTP certificate (smtp.tls) could not be loaded")?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (web.listen)"))?;
    let local_addr = listener.local_addr()?;
    let mut web = Web::new(shared);
    web.secure_cookies = tls.is_some();
    let app = router(Arc::new(web));
    let task = match tls {
        None => tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(error) = axum::serve(listener, service).await {
                tracing::error!(%error, "web UI stopped");
            }
        }),
        Some(acceptor) => tokio::spawn(serve_tls(listener, app, acceptor)),
    };
    Ok(RunningWeb { local_addr, task })
}

/// The accept loop for HTTPS: a TLS handshake (bounded), then HTTP/1.1 or HTTP/2 on it.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "web UI accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        // The client's address for the handlers, as axum::serve gives it.
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        tokio::spawn(async move {
            let handshake = acceptor.accept(tcp);
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sets the headers that keep a hostile message shown in the UI harmless and the UI out of
/// other sites' frames. Pages may set a stricter policy themselves (the HTML view does).
async fn security_headers(
    axum::extract::State(https): axum::extract::State<bool>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    let defaults = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// The signed-in user of a page request, with the language to answer in.
pub struct Viewer {
    pub session: Session,
    pub ip: IpAddr,
    pub texts: Texts,
}

/// What a request without a valid session gets: the login page.
pub struct LoginRequired;

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<Arc<Web>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Viewer, Response> {
        let ip = client_ip(parts);
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(LoginRequired.into_response());
        };
        match web.accounts.session(&token).await {
            Ok(Some(session)) => {
                let texts = i18n::negotiate(
                    Some(session.user.language.as_str()).filter(|l| !l.is_empty()),
                    accept_language(&parts.headers),
                );
                Ok(Viewer { session, ip, texts })
            }
            Ok(None) => Err(LoginRequired.into_response()),
            Err(error) => Err(internal_error(error, Texts::new("en"))),
        }
    }
}

/// The client's address; `127.0.0.1` when the server runs without connection info (tests).
pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

pub fn accept_language(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
}

/// The value of one cookie.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure behind TLS.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("cookie values are hex")
}

/// Logs the error for the admin; the user sees a generic page (no stack trace, no SQL).
pub fn internal_error(error: impl std::fmt::Display, texts: Texts) -> Response {
    tracing::error!(%error, "web UI request failed");
    pages::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "error.internal",
        texts,
        None,
    )
}
