//! The JSON API: the list, one message, and the reviewer actions, for scripts. A request
//! carries `Authorization: Bearer TOKEN` (made with `kala user token NAME`); the token's
//! user's role applies, and every action is audited as `api:NAME`. No cookies, so no CSRF.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Web;
use super::auth::User;
use super::pages::ListQuery;
use crate::quarantine::Mark;

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn caller(web: &Web, headers: &HeaderMap) -> Result<User, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer TOKEN (see `kala user token`)",
        ));
    };
    match web.accounts.token_user(token).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(problem(StatusCode::UNAUTHORIZED, "unknown token")),
        Err(error) => {
            tracing::error!(%error, "API token lookup failed");
            Err(problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
    }
}

fn internal(error: anyhow::Error) -> Response {
    tracing::error!(error = format!("{error:#}"), "API request failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see Kala's log",
    )
}

pub async fn list(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(refused) = caller(&web, &headers).await {
        return refused;
    }
    match web.shared.quarantine.list(&q.filter()).await {
        Ok(page) => Json(page).into_response(),
        Err(error) => internal(error),
    }
}

pub async fn show(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = caller(&web, &headers).await {
        return refused;
    }
    match web.shared.quarantine.get(&id).await {
        Ok(Some(held)) => Json(held).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such message"),
        Err(error) => internal(error),
    }
}

pub async fn act(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let user = match caller(&web, &headers).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    if !user.role.may_act() {
        return problem(
            StatusCode::FORBIDDEN,
            "this token's role may not change messages",
        );
    }
    let quarantine = &web.shared.quarantine;
    let result = match action.as_str() {
        "release" => quarantine
            .release(&id, &web.shared.downstream)
            .await
            .map(|r| json!(r)),
        "delete" => quarantine
            .delete(&id)
            .await
            .map(|done| json!({ "deleted": done })),
        "mark-spam" => quarantine
            .mark(&id, Mark::Spam)
            .await
            .map(|done| json!({ "marked": done })),
        "mark-ham" => quarantine
            .mark(&id, Mark::Ham)
            .await
            .map(|done| json!({ "marked": done })),
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "actions: release, delete, mark-spam, mark-ham",
            );
        }
    };
    let body = match result {
        Ok(body) => body,
        Err(error) => return problem(StatusCode::CONFLICT, &format!("{error:#}")),
    };
    let actor = format!("api:{}", user.name);
    if let Err(error) = quarantine
        .store()
        .audit(&actor, "", &action, &id, &body.to_string())
        .await
    {
        return internal(error);
    }
    Json(body).into_response()
}
