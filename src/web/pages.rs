//! The HTML pages: login, the quarantine list, one message, the audit log.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{Role, same_secret};
use super::i18n::{self, LANGUAGES, Texts};
use super::{LOGIN_COOKIE, SESSION_COOKIE, Viewer, Web, cookie, internal_error, set_cookie};
use crate::quarantine::{Category, Filter, Held, Mark, Sort, State as HeldState};
use crate::store::now;

/// What the page header shows for a signed-in user.
pub struct Nav {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub audit: bool,
    pub admin: bool,
}

impl Nav {
    pub(super) fn of(viewer: &Viewer) -> Option<Nav> {
        let user = &viewer.session.user;
        Some(Nav {
            user: user.name.clone(),
            role: user.role.as_str(),
            csrf: viewer.session.csrf.clone(),
            audit: user.role.may_read_audit(),
            admin: user.role.may_administer(),
        })
    }
}

pub(super) type Languages = &'static [(&'static str, &'static str)];

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    error: Option<&'static str>,
    login_csrf: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    message: &'static str,
}

pub(super) fn render(template: impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn error_page(
    status: StatusCode,
    message: &'static str,
    t: Texts,
    nav: Option<Nav>,
) -> Response {
    let mut response = render(ErrorPage {
        t,
        nav,
        languages: &LANGUAGES,
        message,
    });
    *response.status_mut() = status;
    response
}

pub(super) fn forbidden(viewer: &Viewer) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "error.forbidden",
        viewer.texts,
        Nav::of(viewer),
    )
}

pub(super) fn csrf_failed(viewer: &Viewer) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "error.csrf",
        viewer.texts,
        Nav::of(viewer),
    )
}

pub async fn not_found(headers: HeaderMap) -> Response {
    let t = i18n::negotiate(None, super::accept_language(&headers));
    error_page(StatusCode::NOT_FOUND, "error.not_found", t, None)
}

pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/kala.css"),
    )
        .into_response()
}

/// The fields of a form body, repeated names kept (`id=a&id=b`).
pub(super) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub(super) fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The fields of a form that changes something: its CSRF token checked first, then that
/// the viewer's role `may` do it. The error is the page to answer with.
pub(super) fn change_form(
    viewer: &Viewer,
    body: &[u8],
    may: bool,
) -> Result<Vec<(String, String)>, Box<Response>> {
    let fields = form_fields(body);
    if !csrf_ok(viewer, &fields) {
        return Err(Box::new(csrf_failed(viewer)));
    }
    if !may {
        return Err(Box::new(forbidden(viewer)));
    }
    Ok(fields)
}

pub(super) fn csrf_ok(viewer: &Viewer, fields: &[(String, String)]) -> bool {
    same_secret(field(fields, "csrf"), &viewer.session.csrf)
}

// --- login and logout ------------------------------------------------------------------------

pub async fn login_form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let t = i18n::negotiate(None, super::accept_language(&headers));
    login_page(&web, t, None, StatusCode::OK)
}

fn login_page(web: &Web, t: Texts, error: Option<&'static str>, status: StatusCode) -> Response {
    let login_csrf = super::auth::random_token();
    let mut response = render(LoginPage {
        t,
        nav: None,
        languages: &LANGUAGES,
        error,
        login_csrf: login_csrf.clone(),
    });
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &login_csrf, None, web.secure_cookies),
    );
    response
}

pub async fn login(State(web): State<Arc<Web>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let ip = super::client_ip(&parts);
    let t = i18n::negotiate(None, super::accept_language(&parts.headers));
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
        return login_page(&web, t, Some("error.csrf"), StatusCode::BAD_REQUEST);
    };
    let fields = form_fields(&body);
    let expected = cookie(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(field(&fields, "csrf"), &expected) {
        return login_page(&web, t, Some("error.csrf"), StatusCode::FORBIDDEN);
    }
    let name = field(&fields, "user").trim().to_string();
    let password = field(&fields, "password");
    if !web.limiter.allows(ip, &name) {
        let _ = web
            .shared
            .quarantine
            .store()
            .audit(
                &name,
                &ip.to_string(),
                "login-refused",
                &name,
                "too many failures",
            )
            .await;
        return login_page(
            &web,
            t,
            Some("login.limited"),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = match web.accounts.verify(&name, password).await {
        Ok(user) => user,
        Err(error) => return internal_error(error, t),
    };
    let store = web.shared.quarantine.store();
    let Some(user) = user else {
        web.limiter.failed(ip, &name);
        let _ = store
            .audit(&name, &ip.to_string(), "login-failed", &name, "")
            .await;
        return login_page(&web, t, Some("login.failed"), StatusCode::UNAUTHORIZED);
    };
    web.limiter.succeeded(ip, &name);
    let (token, _) = match web.accounts.start_session(user, &ip.to_string()).await {
        Ok(started) => started,
        Err(error) => return internal_error(error, t),
    };
    let _ = store
        .audit(&name, &ip.to_string(), "login", &name, "")
        .await;
    let mut response = Redirect::to("/quarantine").into_response();
    let lifetime = super::auth::SESSION_LIFETIME.as_secs();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, Some(lifetime), web.secure_cookies),
    );
    response
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !csrf_ok(&viewer, &form_fields(&body)) {
        return csrf_failed(&viewer);
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Err(error) = web.accounts.end_session(&token).await
    {
        return internal_error(error, viewer.texts);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), web.secure_cookies),
    );
    response
}

pub async fn set_language(State(web): State<Arc<Web>>, viewer: Viewer, body: Bytes) -> Response {
    let fields = form_fields(&body);
    if !csrf_ok(&viewer, &fields) {
        return csrf_failed(&viewer);
    }
    let lang = Texts::new(field(&fields, "lang")).lang;
    match web
        .accounts
        .set_language(&viewer.session.user.name, lang)
        .await
    {
        Ok(()) => Redirect::to("/dashboard").into_response(),
        Err(error) => internal_error(error, viewer.texts),
    }
}

// --- the list ----------------------------------------------------------------------------------

/// The list's search, as the query string carries it (every field a string, so a form
/// sends it back unchanged).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct ListQuery {
    pub category: String,
    pub state: String,
    pub since: String,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub symbol: String,
    pub min_score: String,
    pub max_score: String,
    pub sort: String,
    pub page: u32,
    pub result: String,
}

pub const PAGE_SIZE: u32 = 50;

impl ListQuery {
    pub fn filter(&self) -> Filter {
        let state = match self.state.as_str() {
            "released" => Some(HeldState::Released),
            "deleted" => Some(HeldState::Deleted),
            "all" => None,
            _ => Some(HeldState::Held),
        };
        let since = match self.since.as_str() {
            "hour" => Some(3600),
            "day" => Some(24 * 3600),
            "week" => Some(7 * 24 * 3600),
            "month" => Some(30 * 24 * 3600),
            _ => None,
        };
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        Filter {
            state,
            category: self.category.parse::<Category>().ok(),
            since: since.map(|s| now() as i64 - s),
            until: None,
            sender: text(&self.sender),
            recipient: text(&self.recipient),
            subject: text(&self.subject),
            min_score: self.min_score.trim().parse().ok(),
            max_score: self.max_score.trim().parse().ok(),
            symbol: text(&self.symbol),
            sort: self.sort.parse::<Sort>().unwrap_or_default(),
            limit: PAGE_SIZE,
            offset: self.page.saturating_mul(PAGE_SIZE),
        }
    }

    /// This search as a query string, on page `page`.
    fn link(&self, page: u32) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("category", &self.category),
            ("state", &self.state),
            ("since", &self.since),
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("subject", &self.subject),
            ("symbol", &self.symbol),
            ("min_score", &self.min_score),
            ("max_score", &self.max_score),
            ("sort", &self.sort),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        if page > 0 {
            query.append_pair("page", &page.to_string());
        }
        query.finish()
    }
}

pub struct ListRow {
    pub id: String,
    pub received: String,
    pub category: &'static str,
    pub category_key: &'static str,
    pub state_key: &'static str,
    pub score: String,
    pub sender: String,
    pub subject: String,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    q: ListQuery,
    /// The search as a query string, for "every message matching".
    search: String,
    csrf: String,
    may_act: bool,
    rows: Vec<ListRow>,
    count: String,
    result: Option<String>,
    previous: Option<String>,
    next: Option<String>,
    categories: Vec<(&'static str, &'static str)>,
    states: Vec<(&'static str, &'static str)>,
    periods: Vec<(&'static str, &'static str)>,
    sorts: Vec<(&'static str, &'static str)>,
}

fn category_key(category: Category) -> &'static str {
    match category {
        Category::Spam => "category.spam",
        Category::Virus => "category.virus",
        Category::Banned => "category.banned",
        Category::Policy => "category.policy",
    }
}

fn state_key(state: HeldState) -> &'static str {
    match state {
        HeldState::Held => "state.held",
        HeldState::Released => "state.released",
        HeldState::Deleted => "state.deleted",
    }
}

/// Unix seconds as `2026-11-28 18:05` (UTC).
pub fn when(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

pub async fn list(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let t = viewer.texts;
    let filter = q.filter();
    let page = match web.shared.quarantine.list(&filter).await {
        Ok(page) => page,
        Err(error) => return internal_error(error, t),
    };
    let rows = page
        .messages
        .iter()
        .map(|m| ListRow {
            id: m.id.clone(),
            received: when(m.received_at),
            category: m.category.as_str(),
            category_key: category_key(m.category),
            state_key: state_key(m.state),
            score: format!("{:.2}", m.score),
            sender: if m.sender.is_empty() {
                "<>".into()
            } else {
                m.sender.clone()
            },
            subject: m.subject.clone(),
        })
        .collect::<Vec<_>>();
    let shown_until = filter.offset as i64 + rows.len() as i64;
    let result = match q.result.as_str() {
        "" => None,
        bulk => Some(bulk.to_string()),
    };
    render(ListPage {
        count: t.fill(
            "list.count",
            &[
                ("shown", rows.len().to_string()),
                ("total", page.total.to_string()),
            ],
        ),
        previous: (q.page > 0).then(|| q.link(q.page - 1)),
        next: (shown_until < page.total).then(|| q.link(q.page + 1)),
        search: q.link(0),
        csrf: viewer.session.csrf.clone(),
        may_act: viewer.session.user.role.may_act(),
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        rows,
        result,
        categories: Category::ALL
            .iter()
            .map(|c| (c.as_str(), category_key(*c)))
            .collect(),
        states: vec![
            ("held", "state.held"),
            ("released", "state.released"),
            ("deleted", "state.deleted"),
            ("all", "state.all"),
        ],
        periods: vec![
            ("hour", "since.hour"),
            ("day", "since.day"),
            ("week", "since.week"),
            ("month", "since.month"),
        ],
        sorts: vec![
            ("newest", "sort.newest"),
            ("oldest", "sort.oldest"),
            ("score", "sort.score"),
            ("lowest", "sort.lowest"),
        ],
        q,
        t,
    })
}

/// What one action did, for the page that follows.
enum Outcome {
    Released(String),
    NotReleased(String),
    Deleted,
    Marked,
    /// An allow or block entry was added (what, for the audit log).
    Listed(String),
}

/// Runs one reviewer action on one message and audits it.
async fn act(
    web: &Web,
    viewer: &Viewer,
    id: &str,
    action: &str,
    only_recipients: bool,
) -> anyhow::Result<Outcome> {
    let quarantine = &web.shared.quarantine;
    let actor = &viewer.session.user.name;
    let ip = viewer.ip.to_string();
    let outcome = match action {
        "release" => {
            let released = quarantine.release(id, &web.shared.downstream).await?;
            if released.delivered {
                Outcome::Released(released.reply)
            } else {
                Outcome::NotReleased(released.reply)
            }
        }
        "delete" => {
            quarantine.delete(id).await?;
            Outcome::Deleted
        }
        "mark-spam" | "mark-ham" => {
            let mark = if action == "mark-spam" {
                Mark::Spam
            } else {
                Mark::Ham
            };
            quarantine.mark(id, mark).await?;
            Outcome::Marked
        }
        "allow-address" | "allow-domain" | "block-address" | "block-domain" => {
            let held = quarantine
                .get(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no message {id}"))?;
            let sender = &held.summary.sender;
            let entry = if action.ends_with("domain") {
                crate::store::lists::domain_entry(sender)
                    .ok_or_else(|| anyhow::anyhow!("the null sender has no domain"))?
            } else {
                sender.clone()
            };
            let kind = if action.starts_with("allow") {
                crate::store::lists::ListKind::Allow
            } else {
                crate::store::lists::ListKind::Block
            };
            let recipients: Vec<String> = if only_recipients {
                held.summary.recipients.clone()
            } else {
                vec![String::new()]
            };
            for recipient in &recipients {
                quarantine
                    .store()
                    .list_add(kind, &entry, recipient, actor)
                    .await?;
            }
            Outcome::Listed(format!(
                "{} {entry} {}",
                kind.as_str(),
                recipients.join(",")
            ))
        }
        other => anyhow::bail!("unknown action `{other}`"),
    };
    let detail = match &outcome {
        Outcome::Released(reply) | Outcome::NotReleased(reply) | Outcome::Listed(reply) => {
            reply.clone()
        }
        _ => String::new(),
    };
    quarantine
        .store()
        .audit(actor, &ip, action, id, &detail)
        .await?;
    Ok(outcome)
}

pub async fn bulk_action(State(web): State<Arc<Web>>, viewer: Viewer, body: Bytes) -> Response {
    let fields = form_fields(&body);
    if !csrf_ok(&viewer, &fields) {
        return csrf_failed(&viewer);
    }
    if !viewer.session.user.role.may_act() {
        return forbidden(&viewer);
    }
    let action = field(&fields, "action").to_string();
    let search = field(&fields, "search").to_string();
    let ids: Vec<String> = if field(&fields, "scope") == "matching" {
        // The search travels as the list's own query string: read it as the list reads it.
        let uri: axum::http::Uri = match format!("/quarantine?{search}").parse() {
            Ok(uri) => uri,
            Err(_) => return csrf_failed(&viewer),
        };
        let Ok(Query(q)) = Query::<ListQuery>::try_from_uri(&uri) else {
            return csrf_failed(&viewer);
        };
        match web.shared.quarantine.matching_ids(&q.filter()).await {
            Ok(ids) => ids,
            Err(error) => return internal_error(error, viewer.texts),
        }
    } else {
        fields
            .iter()
            .filter(|(k, _)| k == "id")
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut done = 0;
    for id in &ids {
        match act(&web, &viewer, id, &action, false).await {
            Ok(Outcome::NotReleased(_)) => {}
            Ok(_) => done += 1,
            Err(error) => tracing::warn!(id, error = format!("{error:#}"), "bulk action failed"),
        }
    }
    let result = viewer.texts.fill(
        "result.bulk",
        &[("done", done.to_string()), ("total", ids.len().to_string())],
    );
    let mut back = form_urlencoded::Serializer::new(search);
    back.append_pair("result", &result);
    Redirect::to(&format!("/quarantine?{}", back.finish())).into_response()
}

// --- one message -------------------------------------------------------------------------------

pub struct SymbolRow {
    pub name: String,
    pub score: String,
    pub description: String,
    pub detail: String,
}

pub struct AttachmentRow {
    pub name: String,
    pub kind: String,
    pub size: usize,
    /// The virus found in it, if any.
    pub virus: String,
}

pub struct HistoryRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    id: String,
    csrf: String,
    may_act: bool,
    may_download: bool,
    result: Option<String>,
    subject: String,
    state_key: &'static str,
    category_key: &'static str,
    mark: String,
    sender: String,
    recipients: String,
    client_ip: String,
    received: String,
    expires: String,
    downstream_reply: String,
    score: String,
    forced_by: Option<String>,
    symbols: Vec<SymbolRow>,
    headers: Vec<(String, String)>,
    attachments: Vec<AttachmentRow>,
    has_body: bool,
    text: String,
    has_html: bool,
    history: Vec<HistoryRow>,
}

/// Longest header value and body text shown; the rest is cut (a giant header must not make
/// a giant page).
const SHOWN_HEADER: usize = 2000;
const SHOWN_TEXT: usize = 200_000;

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [...]", &text[..end])
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MessageQuery {
    result: String,
    reply: String,
}

pub async fn message(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(mq): Query<MessageQuery>,
) -> Response {
    let t = viewer.texts;
    let quarantine = &web.shared.quarantine;
    let held: Held = match quarantine.get(&id).await {
        Ok(Some(held)) => held,
        Ok(None) => {
            return error_page(StatusCode::NOT_FOUND, "msg.not_found", t, Nav::of(&viewer));
        }
        Err(error) => return internal_error(error, t),
    };
    let raw = match quarantine.raw(&id).await {
        Ok(raw) => raw,
        Err(error) => return internal_error(error, t),
    };
    let store = quarantine.store();
    let _ = store
        .audit(
            &viewer.session.user.name,
            &viewer.ip.to_string(),
            "view",
            &id,
            "",
        )
        .await;
    let history = store
        .audit_log(Some(&id), 50, 0)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.action != "view")
        .map(|e| HistoryRow {
            at: when(e.at),
            actor: e.actor,
            action: e.action,
            detail: e.detail,
        })
        .collect();

    let parsed = raw
        .as_deref()
        .map(|raw| crate::message::Message::parse(raw, raw.len()));
    let headers = parsed
        .as_ref()
        .map(|m| {
            m.headers
                .iter()
                .filter(|h| {
                    [
                        "from",
                        "to",
                        "cc",
                        "reply-to",
                        "subject",
                        "date",
                        "message-id",
                        "received",
                    ]
                    .contains(&h.name.to_ascii_lowercase().as_str())
                })
                .map(|h| (h.name.clone(), cut(&h.decoded, SHOWN_HEADER)))
                .collect()
        })
        .unwrap_or_default();
    let viruses: Vec<&str> = held
        .verdict
        .symbols
        .iter()
        .filter(|s| s.name == "VIRUS")
        .filter_map(|s| s.detail.as_deref())
        .collect();
    let attachments = parsed
        .as_ref()
        .map(|m| {
            m.attachments
                .iter()
                .map(|a| {
                    let name = a.name.clone().unwrap_or_default();
                    let virus = viruses
                        .iter()
                        .find(|d| !name.is_empty() && d.contains(&format!("\"{name}\"")))
                        .map(|d| d.to_string())
                        .unwrap_or_default();
                    AttachmentRow {
                        name,
                        kind: a.declared_type.clone(),
                        size: a.size,
                        virus,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let text = parsed
        .as_ref()
        .map(|m| {
            let mut text = m.text_parts.join("\n\n");
            if text.trim().is_empty() {
                text = m
                    .html_parts
                    .iter()
                    .map(|h| h.text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            cut(&text, SHOWN_TEXT)
        })
        .unwrap_or_default();
    let has_html = parsed.as_ref().is_some_and(|m| !m.html_parts.is_empty());
    let result = match mq.result.as_str() {
        "released" => Some(format!("{} {}", t.get("result.released"), mq.reply)),
        "not-released" => Some(format!("{} {}", t.get("result.not_released"), mq.reply)),
        "deleted" => Some(t.get("result.deleted").to_string()),
        "marked" => Some(t.get("result.marked").to_string()),
        "listed" => Some(t.get("result.listed").to_string()),
        _ => None,
    };
    let m = &held.summary;
    let lang = t.lang;
    let rules = web.shared.pipeline.rules().current();
    render(MessagePage {
        id: m.id.clone(),
        csrf: viewer.session.csrf.clone(),
        may_act: viewer.session.user.role.may_act(),
        may_download: viewer.session.user.role == Role::Admin,
        result,
        subject: m.subject.clone(),
        state_key: state_key(m.state),
        category_key: category_key(m.category),
        mark: m.mark.clone(),
        sender: m.sender.clone(),
        recipients: m.recipients.join(", "),
        client_ip: m.client_ip.clone(),
        received: when(m.received_at),
        expires: when(held.expires_at),
        downstream_reply: held.downstream_reply.clone(),
        score: format!("{:.2}", held.verdict.score),
        forced_by: held.verdict.forced_by.clone(),
        symbols: held
            .verdict
            .symbols
            .iter()
            .map(|s| SymbolRow {
                name: s.name.clone(),
                score: format!("{:.2}", s.score),
                // The rule's own text in the reader's language when the rule file has one.
                description: rules
                    .description(&s.name, lang)
                    .map(String::from)
                    .unwrap_or_else(|| s.description.clone()),
                detail: s.detail.clone().unwrap_or_default(),
            })
            .collect(),
        headers,
        attachments,
        has_body: raw.is_some(),
        text,
        has_html,
        history,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        t,
    })
}

pub async fn message_action(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = form_fields(&body);
    if !csrf_ok(&viewer, &fields) {
        return csrf_failed(&viewer);
    }
    if !viewer.session.user.role.may_act() {
        return forbidden(&viewer);
    }
    let only_recipients = field(&fields, "only_recipients") == "1";
    let outcome = match act(
        &web,
        &viewer,
        &id,
        field(&fields, "action"),
        only_recipients,
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(error) => return internal_error(format!("{error:#}"), viewer.texts),
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    match outcome {
        Outcome::Released(reply) => query
            .append_pair("result", "released")
            .append_pair("reply", &reply),
        Outcome::NotReleased(reply) => query
            .append_pair("result", "not-released")
            .append_pair("reply", &reply),
        Outcome::Deleted => query.append_pair("result", "deleted"),
        Outcome::Marked => query.append_pair("result", "marked"),
        Outcome::Listed(_) => query.append_pair("result", "listed"),
    };
    Redirect::to(&format!("/quarantine/{id}?{}", query.finish())).into_response()
}

/// A held message's bytes, or the page saying there are none (unknown id, or deleted).
async fn stored_message(web: &Web, viewer: &Viewer, id: &str) -> Result<Vec<u8>, Response> {
    match web.shared.quarantine.raw(id).await {
        Ok(Some(raw)) => Ok(raw),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            "msg.not_found",
            viewer.texts,
            Nav::of(viewer),
        )),
        Err(error) => Err(internal_error(error, viewer.texts)),
    }
}

/// The raw message, for admins; every download is audited.
pub async fn download(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    if viewer.session.user.role != Role::Admin {
        return forbidden(&viewer);
    }
    let quarantine = &web.shared.quarantine;
    let raw = match stored_message(&web, &viewer, &id).await {
        Ok(raw) => raw,
        Err(page) => return page,
    };
    if let Err(error) = quarantine
        .store()
        .audit(
            &viewer.session.user.name,
            &viewer.ip.to_string(),
            "download",
            &id,
            "",
        )
        .await
    {
        // No download without its audit record.
        return internal_error(error, viewer.texts);
    }
    let safe_id: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe_id}.eml\""),
            ),
        ],
        raw,
    )
        .into_response()
}

/// A message's HTML with nothing that runs or fetches: no scripts, styles, frames or forms,
/// and no URL a browser would load (only `cid:` references survive, and they load nothing
/// here). The sandbox and the CSP below are the second and third lines: even a preconnect
/// to a remote host leaks that someone read the message.
fn clean_html(html: &str) -> String {
    ammonia::Builder::default()
        .url_schemes(std::iter::once("cid").collect())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .clean(html)
        .to_string()
}

/// The HTML part, for the sandboxed frame: its own policy forbids scripts and every remote
/// load, whoever opens it and however.
pub async fn html_view(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let raw = match stored_message(&web, &viewer, &id).await {
        Ok(raw) => raw,
        Err(page) => return page,
    };
    let message = crate::message::Message::parse(&raw, raw.len());
    let html = message
        .html_parts
        .first()
        .map(|h| clean_html(&cut(&h.html, SHOWN_TEXT)))
        .unwrap_or_default();
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        ],
        html,
    )
        .into_response()
}

// --- dashboard ---------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    actions: Vec<(&'static str, u64)>,
    symbols: Vec<(String, u64)>,
    held: Vec<(&'static str, i64, i64)>,
    clamd: &'static str,
    downstream: &'static str,
    /// Standing problems (a blocklist refusing our resolver), in English as logged.
    warnings: Vec<String>,
}

fn action_key(action: crate::verdict::Action) -> &'static str {
    use crate::verdict::Action;
    match action {
        Action::Accept => "action.accept",
        Action::Tag => "action.tag",
        Action::Quarantine => "action.quarantine",
        Action::Tempfail => "action.tempfail",
        Action::Reject => "action.reject",
    }
}

/// How long the dashboard waits for clamd and the downstream before calling them down.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn dashboard(State(web): State<Arc<Web>>, viewer: Viewer) -> Response {
    use crate::antivirus::Scanner as _;
    let shared = &web.shared;
    let day = shared.activity.last_day(now(), 10);
    let held = match shared.quarantine.held_by_category().await {
        Ok(held) => held,
        Err(error) => return internal_error(error, viewer.texts),
    };
    let clamd = async {
        if !shared.settings.antivirus.enabled {
            return "dash.disabled";
        }
        let clamd = crate::antivirus::Clamd::from_settings(&shared.settings.antivirus);
        match tokio::time::timeout(HEALTH_TIMEOUT, clamd.ping()).await {
            Ok(Ok(())) => "dash.ok",
            _ => "dash.down",
        }
    };
    let downstream = async {
        match tokio::time::timeout(HEALTH_TIMEOUT, shared.downstream.connect()).await {
            Ok(Ok(conn)) => {
                shared.downstream.finish(conn).await;
                "dash.ok"
            }
            _ => "dash.down",
        }
    };
    let (clamd, downstream) = tokio::join!(clamd, downstream);
    render(DashboardPage {
        t: viewer.texts,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        actions: day
            .actions
            .iter()
            .map(|(action, n)| (action_key(*action), *n))
            .collect(),
        symbols: day.top_symbols,
        held: held
            .into_iter()
            .map(|(c, n, bytes)| (category_key(c), n, bytes))
            .collect(),
        clamd,
        downstream,
        warnings: web
            .shared
            .health
            .warnings()
            .into_iter()
            .map(|w| w.text)
            .collect(),
    })
}

// --- audit log ---------------------------------------------------------------------------------

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub ip: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    entries: Vec<AuditRow>,
}

pub async fn audit(State(web): State<Arc<Web>>, viewer: Viewer) -> Response {
    if !viewer.session.user.role.may_read_audit() {
        return forbidden(&viewer);
    }
    let entries = match web.shared.quarantine.store().audit_log(None, 500, 0).await {
        Ok(entries) => entries,
        Err(error) => return internal_error(error, viewer.texts),
    };
    render(AuditPage {
        t: viewer.texts,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        entries: entries
            .into_iter()
            .map(|e| AuditRow {
                at: when(e.at),
                actor: e.actor,
                ip: e.ip,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
    })
}

// --- users -------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    csrf: String,
    users: Vec<(String, &'static str)>,
    result: Option<&'static str>,
}

fn role_key(role: Role) -> &'static str {
    match role {
        Role::Admin => "role.admin",
        Role::Reviewer => "role.reviewer",
        Role::Auditor => "role.auditor",
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UsersQuery {
    result: String,
}

pub async fn users(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(uq): Query<UsersQuery>,
) -> Response {
    if !viewer.session.user.role.may_administer() {
        return forbidden(&viewer);
    }
    let users = match web.accounts.list().await {
        Ok(users) => users,
        Err(error) => return internal_error(error, viewer.texts),
    };
    render(UsersPage {
        t: viewer.texts,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        csrf: viewer.session.csrf.clone(),
        users: users
            .into_iter()
            .map(|u| (u.name, role_key(u.role)))
            .collect(),
        result: match uq.result.as_str() {
            "added" => Some("users.added"),
            "refused" => Some("users.refused"),
            _ => None,
        },
    })
}

/// Creates an account (admins only; audited). Why a refusal happened goes to the log.
pub async fn add_user(State(web): State<Arc<Web>>, viewer: Viewer, body: Bytes) -> Response {
    let may = viewer.session.user.role.may_administer();
    let fields = match change_form(&viewer, &body, may) {
        Ok(fields) => fields,
        Err(page) => return *page,
    };
    let name = field(&fields, "name").trim();
    let Ok(role) = field(&fields, "role").parse::<Role>() else {
        return Redirect::to("/users?result=refused").into_response();
    };
    match web
        .accounts
        .add(name, field(&fields, "password"), role)
        .await
    {
        Ok(()) => {
            let _ = web
                .shared
                .quarantine
                .store()
                .audit(
                    &viewer.session.user.name,
                    &viewer.ip.to_string(),
                    "user-add",
                    name,
                    role.as_str(),
                )
                .await;
            Redirect::to("/users?result=added").into_response()
        }
        Err(error) => {
            tracing::info!(user = name, error = format!("{error:#}"), "user not added");
            Redirect::to("/users?result=refused").into_response()
        }
    }
}
