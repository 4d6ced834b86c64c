//! Message tracking for the helpdesk: "where is the mail from X sent at 10:05" in one
//! search over every message's path (sender, recipient, subject, Message-ID, client address,
//! time range). Every signed-in role may search; nothing here changes anything.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::i18n::{LANGUAGES, Texts};
use super::pages::{Languages, Nav, render, when};
use super::{Viewer, Web, internal_error};
use crate::store::tracking::{TrackQuery, Tracked, parse_when};

/// The search as the form sends it back (every field a string, so it round-trips).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct TrackForm {
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub message_id: String,
    pub client_ip: String,
    pub since: String,
    pub until: String,
}

/// One result row, ready to show.
struct Row {
    at: String,
    t: Tracked,
}

#[derive(Template)]
#[template(path = "track.html")]
struct TrackPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    form: TrackForm,
    searched: bool,
    rows: Vec<Row>,
    /// A time the search could not read.
    bad_time: Option<String>,
}

/// Results shown per search; narrow the search to see older ones.
const SHOWN: u32 = 200;

pub async fn page(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(form): Query<TrackForm>,
) -> Response {
    let mut page = TrackPage {
        t: viewer.texts,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        searched: false,
        rows: Vec::new(),
        bad_time: None,
        form: form.clone(),
    };
    let given = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let now = crate::store::now() as i64;
    let mut times = [None, None];
    for (slot, text) in times.iter_mut().zip([&form.since, &form.until]) {
        if let Some(text) = given(text) {
            match parse_when(&text, now) {
                Ok(at) => *slot = Some(at),
                Err(error) => page.bad_time = Some(error),
            }
        }
    }
    let query = TrackQuery {
        sender: given(&form.sender),
        recipient: given(&form.recipient),
        subject: given(&form.subject),
        message_id: given(&form.message_id),
        client_ip: given(&form.client_ip),
        since: times[0],
        until: times[1],
        limit: SHOWN,
    };
    if page.bad_time.is_none() {
        match web.shared.quarantine.store().track_search(&query).await {
            Ok(found) => {
                page.searched = true;
                page.rows = found
                    .into_iter()
                    .map(|t| Row {
                        at: when(t.received_at),
                        t,
                    })
                    .collect();
            }
            Err(error) => return internal_error(error, viewer.texts),
        }
    }
    render(page)
}
