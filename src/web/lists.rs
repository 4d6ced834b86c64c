//! The allow and block lists page: every entry the reviewers made (address, domain or client
//! network; global or for one recipient), added and removed here, each change audited. The
//! admin's `[lists]` entries from the configuration are shown read-only beside them.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::i18n::{LANGUAGES, Texts};
use super::pages::{Languages, Nav, change_form, field, render};
use super::{Viewer, Web, internal_error};
use crate::store::lists::{ListEntry, ListKind};

#[derive(Template)]
#[template(path = "lists.html")]
struct ListsPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    csrf: String,
    may_act: bool,
    entries: Vec<ListEntry>,
    /// From `[lists]` in the configuration: (kind key, entry).
    configured: Vec<(&'static str, String)>,
    result: Option<&'static str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListsQuery {
    result: String,
}

pub async fn page(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<ListsQuery>,
) -> Response {
    let entries = match web.shared.quarantine.store().list_entries().await {
        Ok(entries) => entries,
        Err(error) => return internal_error(error, viewer.texts),
    };
    let config = &web.shared.settings.lists;
    let configured = config
        .allow
        .iter()
        .map(|e| ("lists.allow", e.clone()))
        .chain(config.block.iter().map(|e| ("lists.block", e.clone())))
        .collect();
    render(ListsPage {
        t: viewer.texts,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        csrf: viewer.session.csrf.clone(),
        may_act: viewer.session.user.role.may_act(),
        entries,
        configured,
        result: match q.result.as_str() {
            "added" => Some("lists.added"),
            "removed" => Some("lists.removed"),
            "refused" => Some("lists.refused"),
            _ => None,
        },
    })
}

/// Adds an entry (reviewers and admins; audited).
pub async fn add(State(web): State<Arc<Web>>, viewer: Viewer, body: Bytes) -> Response {
    let may = viewer.session.user.role.may_act();
    let fields = match change_form(&viewer, &body, may) {
        Ok(fields) => fields,
        Err(page) => return *page,
    };
    let kind = match field(&fields, "kind") {
        "block" => ListKind::Block,
        _ => ListKind::Allow,
    };
    let entry = field(&fields, "entry").trim();
    let recipient = field(&fields, "recipient").trim();
    let actor = &viewer.session.user.name;
    let store = web.shared.quarantine.store();
    match store.list_add(kind, entry, recipient, actor).await {
        Ok(()) => {
            let target = if recipient.is_empty() {
                entry.to_string()
            } else {
                format!("{entry} for {recipient}")
            };
            let _ = store
                .audit(
                    actor,
                    &viewer.ip.to_string(),
                    &format!("{}-add", kind.as_str()),
                    &target,
                    "",
                )
                .await;
            Redirect::to("/lists?result=added").into_response()
        }
        Err(error) => {
            tracing::info!(entry, error = format!("{error:#}"), "list entry not added");
            Redirect::to("/lists?result=refused").into_response()
        }
    }
}

/// Removes an entry (reviewers and admins; audited).
pub async fn remove(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let may = viewer.session.user.role.may_act();
    if let Err(page) = change_form(&viewer, &body, may) {
        return *page;
    }
    let store = web.shared.quarantine.store();
    let before = store.list_entries().await.unwrap_or_default();
    let Some(entry) = before.into_iter().find(|e| e.id == id) else {
        return Redirect::to("/lists?result=refused").into_response();
    };
    match store.list_remove(id).await {
        Ok(_) => {
            let _ = store
                .audit(
                    &viewer.session.user.name,
                    &viewer.ip.to_string(),
                    &format!("{}-remove", entry.kind.as_str()),
                    &entry.sender,
                    &entry.recipient,
                )
                .await;
            Redirect::to("/lists?result=removed").into_response()
        }
        Err(error) => internal_error(error, viewer.texts),
    }
}
