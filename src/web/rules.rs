//! The rule management pages: what rules run and how often they fire, one rule with a month
//! of hits, the version history with diffs and rollback, and an editor for the local rule
//! files. Every change goes through [`RuleSets`], so a broken set never becomes active: an
//! edited file is tested together with all the other rule files before it is written.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::i18n::{LANGUAGES, Texts};
use super::pages::{Languages, Nav, change_form, error_page, field, forbidden, render, when};
use super::{Viewer, Web, internal_error};
use crate::rules::RuleInfo;
use crate::ruleset::{Activation, Candidate, Refusal, RuleSets, Status, diff_versions, stats};
use crate::store::rules::{DAY, RuleVersion, today};

/// The period the hit counts and the graph cover.
const HIT_DAYS: i64 = 30;

/// The kinds a rule can be filtered by, as `RuleInfo::kind` names them.
const KINDS: [&str; 6] = ["header", "body", "rawbody", "uri", "full", "meta"];

/// The last refused activation, as the pages show it.
struct RefusalBox {
    at: String,
    actor: String,
    problems: Vec<String>,
}

impl RefusalBox {
    fn of(status: &Status) -> Option<RefusalBox> {
        status.refused.as_ref().map(|r| RefusalBox {
            at: when(r.at),
            actor: r.actor.clone(),
            problems: r.problems.clone(),
        })
    }
}

/// The active version in a page header.
struct ActiveVersion {
    id: i64,
    hash: String,
    actor: String,
    at: String,
}

impl ActiveVersion {
    fn of(status: &Status) -> Option<ActiveVersion> {
        status.active.as_ref().map(|v| ActiveVersion {
            id: v.id,
            hash: v.short_hash().to_string(),
            actor: v.actor.clone(),
            at: when(v.activated_at),
        })
    }
}

/// A rule score as rule files write it: `2.5`, `-1`, `0.001`.
fn score_text(score: f64) -> String {
    let text = format!("{score:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0" } else { text }.to_string()
}

/// What a change did, as a redirect target's query: the page says it after the redirect.
fn outcome_query(outcome: &Result<Activation, Refusal>) -> String {
    match outcome {
        Ok(Activation::Activated(v)) => format!("result=activated&version={}", v.id),
        Ok(Activation::Unchanged(v)) => format!("result=unchanged&version={}", v.id),
        Err(_) => "result=refused".into(),
    }
}

/// The text for a `result=` query (the refusal's problems are in the page's error box).
fn outcome_text(t: &Texts, result: &str, version: &str) -> Option<String> {
    let version = version
        .parse::<i64>()
        .map(|v| v.to_string())
        .unwrap_or_default();
    match result {
        "activated" => Some(t.fill("rules.activated", &[("version", version)])),
        "unchanged" => Some(t.fill("rules.unchanged", &[("version", version)])),
        "refused" => Some(t.get("rules.refused").to_string()),
        _ => None,
    }
}

// --- the rules list -----------------------------------------------------------------------------

struct RuleRow {
    info: RuleInfo,
    score: String,
    hits: i64,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    csrf: String,
    admin: bool,
    active: Option<ActiveVersion>,
    refused: Option<RefusalBox>,
    result: Option<String>,
    q: String,
    kind: String,
    kinds: [&'static str; 6],
    count: String,
    rules: Vec<RuleRow>,
    never_fired: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RulesQuery {
    q: String,
    kind: String,
    result: String,
    version: String,
}

/// A rule matches the search when its name, description or file holds the words (any case).
fn matches_search(rule: &RuleInfo, needle: &str, kind: &str) -> bool {
    let kind_ok = kind.is_empty() || rule.kind == kind;
    let text_ok = needle.is_empty()
        || [&rule.name, &rule.description, &rule.file]
            .iter()
            .any(|s| s.to_lowercase().contains(needle));
    kind_ok && text_ok
}

pub async fn list(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<RulesQuery>,
) -> Response {
    let rulesets = &web.shared.rulesets;
    let hit_stats = match stats(rulesets, HIT_DAYS).await {
        Ok(hit_stats) => hit_stats,
        Err(error) => return internal_error(error, viewer.texts),
    };
    let hits: HashMap<String, i64> = hit_stats.hits.into_iter().collect();
    let all = rulesets.live().current().rules_info(viewer.texts.lang);
    let total = all.len();
    let needle = q.q.trim().to_lowercase();
    let kind = KINDS
        .iter()
        .find(|k| **k == q.kind)
        .copied()
        .unwrap_or_default();
    let rules: Vec<RuleRow> = all
        .into_iter()
        .filter(|r| matches_search(r, &needle, kind))
        .map(|info| RuleRow {
            score: score_text(info.score),
            hits: hits.get(&info.name).copied().unwrap_or(0),
            info,
        })
        .collect();
    let status = rulesets.status();
    let t = viewer.texts;
    render(RulesPage {
        count: t.fill(
            "rules.count",
            &[
                ("shown", rules.len().to_string()),
                ("total", total.to_string()),
            ],
        ),
        result: outcome_text(&t, &q.result, &q.version),
        t,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        csrf: viewer.session.csrf.clone(),
        admin: viewer.session.user.role.may_administer(),
        active: ActiveVersion::of(&status),
        refused: RefusalBox::of(&status),
        q: q.q.trim().to_string(),
        kind: kind.to_string(),
        kinds: KINDS,
        rules,
        never_fired: hit_stats.never_fired,
    })
}

/// Rereads the rule files (admins only; the core audits the activation or refusal).
pub async fn reload(State(web): State<Arc<Web>>, viewer: Viewer, body: Bytes) -> Response {
    let may = viewer.session.user.role.may_administer();
    if let Err(page) = change_form(&viewer, &body, may) {
        return *page;
    }
    let outcome = web
        .shared
        .rulesets
        .reload(&viewer.session.user.name, false)
        .await;
    Redirect::to(&format!("/rules?{}", outcome_query(&outcome))).into_response()
}

// --- one rule -----------------------------------------------------------------------------------

/// One day's bar of the hits graph, in SVG user units.
struct Bar {
    x: usize,
    y: usize,
    height: usize,
    day: String,
    hits: i64,
}

/// The hits graph's geometry: 30 bars under a line for the highest count.
const BAR_WIDTH: usize = 18;
const BAR_STEP: usize = 22;
const GRAPH_TOP: usize = 16;
const GRAPH_HEIGHT: usize = 120;

/// The bars for the days `first..=last`, scaled to the busiest day (a day with hits gets
/// at least a sliver, so one hit among thousands still shows).
fn hit_bars(per_day: &[(i64, i64)], first: i64, last: i64) -> (Vec<Bar>, i64) {
    let by_day: HashMap<i64, i64> = per_day.iter().copied().collect();
    let busiest = by_day.values().copied().max().unwrap_or(0).max(1);
    let bars = (first..=last)
        .enumerate()
        .map(|(index, day)| {
            let hits = by_day.get(&day).copied().unwrap_or(0);
            let mut height = (hits as f64 / busiest as f64 * GRAPH_HEIGHT as f64).round() as usize;
            if hits > 0 {
                height = height.max(2);
            }
            Bar {
                x: index * BAR_STEP,
                y: GRAPH_TOP + GRAPH_HEIGHT - height,
                height,
                day: day_text(day),
                hits,
            }
        })
        .collect();
    (bars, busiest)
}

/// A day number as `2026-11-28`.
fn day_text(day: i64) -> String {
    let text = when(day * DAY as i64);
    text.get(..10).unwrap_or(&text).to_string()
}

#[derive(Template)]
#[template(path = "rule.html")]
struct RulePage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    rule: RuleInfo,
    score: String,
    bars: Vec<Bar>,
    busiest: i64,
    total: i64,
    bar_width: usize,
    graph_width: usize,
    graph_bottom: usize,
    first_day: String,
    last_day: String,
    /// Set when the viewer may edit the rule's file here: its name in the local directory.
    editable: Option<String>,
}

pub async fn rule(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    let rulesets = &web.shared.rulesets;
    let Some(rule) = rulesets
        .live()
        .current()
        .rule_info(&name, viewer.texts.lang)
    else {
        return error_page(
            StatusCode::NOT_FOUND,
            "rules.not_found",
            viewer.texts,
            Nav::of(&viewer),
        );
    };
    // Counts not yet flushed belong in the graph too.
    if let Err(error) = rulesets.flush_hits().await {
        tracing::warn!(error = %error, "rule hit counts not saved");
    }
    let last = today();
    let first = last - HIT_DAYS + 1;
    let per_day = match rulesets.store().rule_hits(&rule.name, first).await {
        Ok(per_day) => per_day,
        Err(error) => return internal_error(error, viewer.texts),
    };
    let (bars, busiest) = hit_bars(&per_day, first, last);
    let editable = if viewer.session.user.role.may_administer() {
        local_dir(rulesets)
            .filter(|dir| FsPath::new(&rule.file).parent() == Some(dir.as_path()))
            .and_then(|_| FsPath::new(&rule.file).file_name())
            .map(|name| name.to_string_lossy().into_owned())
    } else {
        None
    };
    render(RulePage {
        t: viewer.texts,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        score: score_text(rule.score),
        total: bars.iter().map(|b| b.hits).sum(),
        bars,
        busiest,
        bar_width: BAR_WIDTH,
        graph_width: HIT_DAYS as usize * BAR_STEP,
        graph_bottom: GRAPH_TOP + GRAPH_HEIGHT,
        first_day: day_text(first),
        last_day: day_text(last),
        editable,
        rule,
    })
}

// --- versions -----------------------------------------------------------------------------------

struct VersionRow {
    version: RuleVersion,
    at: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "rule_versions.html")]
struct VersionsPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    csrf: String,
    admin: bool,
    refused: Option<RefusalBox>,
    result: Option<String>,
    versions: Vec<VersionRow>,
    /// The version whose diff is shown, and the diff (None: there is nothing to compare).
    diff: Option<(i64, Option<String>)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct VersionsQuery {
    diff: String,
    result: String,
    version: String,
}

/// Versions read for the history (the store keeps `rules.keep_versions` of them).
const VERSIONS_SHOWN: u32 = 1000;

pub async fn versions(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<VersionsQuery>,
) -> Response {
    let rulesets = &web.shared.rulesets;
    let store = rulesets.store();
    let versions = match store.rule_versions(VERSIONS_SHOWN).await {
        Ok(versions) => versions,
        Err(error) => return internal_error(error, viewer.texts),
    };
    let diff = match q.diff.trim().parse::<i64>() {
        Ok(id) => Some((
            id,
            // The oldest kept version has nothing before it; that is no error to log.
            diff_versions(store, None, Some(id)).await.ok(),
        )),
        Err(_) => None,
    };
    let status = rulesets.status();
    let active_id = status.active.as_ref().map(|v| v.id);
    let t = viewer.texts;
    render(VersionsPage {
        result: outcome_text(&t, &q.result, &q.version),
        t,
        nav: Nav::of(&viewer),
        languages: &LANGUAGES,
        csrf: viewer.session.csrf.clone(),
        admin: viewer.session.user.role.may_administer(),
        refused: RefusalBox::of(&status),
        versions: versions
            .into_iter()
            .map(|version| VersionRow {
                at: when(version.activated_at),
                active: Some(version.id) == active_id,
                version,
            })
            .collect(),
        diff,
    })
}

/// Puts an earlier version's files back and activates them (admins only; the core audits).
pub async fn rollback(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let may = viewer.session.user.role.may_administer();
    if let Err(page) = change_form(&viewer, &body, may) {
        return *page;
    }
    let outcome = web
        .shared
        .rulesets
        .rollback(Some(id), &viewer.session.user.name)
        .await;
    Redirect::to(&format!("/rules/versions?{}", outcome_query(&outcome))).into_response()
}

// --- the editor ---------------------------------------------------------------------------------

/// The local rules directory: the last of `rules.dirs`, read last so its rules win. None
/// when there is none to edit (no dirs, or the last one names a file).
fn local_dir(rulesets: &RuleSets) -> Option<PathBuf> {
    rulesets
        .settings()
        .dirs
        .last()
        .filter(|dir| !dir.is_file())
        .cloned()
}

/// A plain rule file name: no path, no hidden file, `.cf` (what the rule reader reads).
fn valid_file_name(name: &str) -> bool {
    name.strip_suffix(".cf").is_some_and(|stem| {
        !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// The `*.cf` files of the local directory, by name.
fn local_files(dir: &FsPath) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|name| valid_file_name(name))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[derive(Template)]
#[template(path = "rule_edit.html")]
struct EditPage {
    t: Texts,
    nav: Option<Nav>,
    languages: Languages,
    csrf: String,
    local_dir: Option<String>,
    files: Vec<String>,
    /// The file being edited (a valid name), whether it exists yet, and its text.
    file: Option<String>,
    exists: bool,
    text: String,
    invalid_name: bool,
    /// Why the save was refused: the file was not written.
    problems: Vec<String>,
    /// What the save did.
    saved: Option<String>,
    /// Saved, but the reload that followed was refused.
    reload_problems: Vec<String>,
    /// "Try on recent mail": what this text would change, nothing saved.
    dry_run: Option<crate::ruleset::dryrun::DryRun>,
    dry_run_scanned: String,
}

impl EditPage {
    fn new(viewer: &Viewer, local: Option<&FsPath>) -> EditPage {
        EditPage {
            t: viewer.texts,
            nav: Nav::of(viewer),
            languages: &LANGUAGES,
            csrf: viewer.session.csrf.clone(),
            local_dir: local.map(|d| d.display().to_string()),
            files: local.map(local_files).unwrap_or_default(),
            file: None,
            exists: false,
            text: String::new(),
            invalid_name: false,
            problems: Vec::new(),
            saved: None,
            reload_problems: Vec::new(),
            dry_run: None,
            dry_run_scanned: String::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EditQuery {
    /// An existing file chosen from the list.
    file: String,
    /// A new file's name (wins over `file` when given).
    new: String,
}

pub async fn edit_form(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(q): Query<EditQuery>,
) -> Response {
    if !viewer.session.user.role.may_administer() {
        return forbidden(&viewer);
    }
    let local = local_dir(&web.shared.rulesets);
    let mut page = EditPage::new(&viewer, local.as_deref());
    let name = if q.new.trim().is_empty() {
        q.file.trim()
    } else {
        q.new.trim()
    };
    let Some(local) = local.filter(|_| !name.is_empty()) else {
        return render(page);
    };
    if !valid_file_name(name) {
        page.invalid_name = true;
        let mut response = render(page);
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return response;
    }
    let path = local.join(name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            page.exists = true;
            page.text = String::from_utf8_lossy(&bytes).into_owned();
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return internal_error(error, viewer.texts),
    }
    page.file = Some(name.to_string());
    render(page)
}

/// Saves one local rule file (admins only; audited as `rules-edit`). The whole rule set with
/// the new text is built and tested first, from a copy; only a sound set gets the file
/// written and activated, so a typo never reaches the live rules nor the directory.
pub async fn save(State(web): State<Arc<Web>>, viewer: Viewer, body: Bytes) -> Response {
    let may = viewer.session.user.role.may_administer();
    let fields = match change_form(&viewer, &body, may) {
        Ok(fields) => fields,
        Err(page) => return *page,
    };
    let rulesets = &web.shared.rulesets;
    let local = local_dir(rulesets);
    let mut page = EditPage::new(&viewer, local.as_deref());
    let name = field(&fields, "file").trim().to_string();
    // Browsers send a textarea's lines with CRLF; rule files are written with LF.
    let text = field(&fields, "text").replace("\r\n", "\n");
    let Some(local) = local else {
        return render(page);
    };
    if !valid_file_name(&name) {
        page.invalid_name = true;
        let mut response = render(page);
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return response;
    }
    let path = local.join(&name);
    page.exists = path.is_file();
    page.file = Some(name.clone());
    page.text = text.clone();

    let sources = rulesets.settings().sources();
    let scratch = web.shared.tmp_dir.clone();
    let edited = text.clone();
    let edited_name = name.clone();
    let checked = tokio::task::spawn_blocking(move || {
        problems_with(&scratch, &sources, &edited_name, &edited)
    })
    .await;
    let (candidate, problems) = match checked {
        Ok(Ok(checked)) => checked,
        Ok(Err(error)) => return internal_error(format!("{error:#}"), viewer.texts),
        Err(error) => return internal_error(error, viewer.texts),
    };
    let store = web.shared.quarantine.store();
    if field(&fields, "action") == "try" {
        // The dry run: recent held and sampled relayed mail, active set against this text.
        let messages = match crate::ruleset::dryrun::gather(store, DRY_RUN_LIMIT).await {
            Ok(messages) => messages,
            Err(error) => return internal_error(format!("{error:#}"), viewer.texts),
        };
        let active = rulesets.live().current();
        let policy = web.shared.pipeline.policy();
        let compared = tokio::task::spawn_blocking(move || {
            crate::ruleset::dryrun::compare(&active, &candidate.set, &policy, &messages)
        })
        .await;
        match compared {
            Ok(run) => {
                page.dry_run_scanned = viewer.texts.fill(
                    "rules.try_scanned",
                    &[
                        ("held", run.held_scanned.to_string()),
                        ("relayed", run.relayed_scanned.to_string()),
                    ],
                );
                page.dry_run = Some(run);
            }
            Err(error) => return internal_error(error, viewer.texts),
        }
        page.problems = problems;
        return render(page);
    }
    let actor = viewer.session.user.name.clone();
    let ip = viewer.ip.to_string();
    if !problems.is_empty() {
        let detail = format!("refused, not written:\n{}", problems.join("\n"));
        let _ = store.audit(&actor, &ip, "rules-edit", &name, &detail).await;
        page.problems = problems;
        let mut response = render(page);
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return response;
    }

    let written = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&local)
            .with_context(|| format!("cannot create {}", local.display()))?;
        crate::rules::snapshot::write_replacing(&path, text.as_bytes())
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return internal_error(format!("{error:#}"), viewer.texts),
        Err(error) => return internal_error(error, viewer.texts),
    }
    let outcome = rulesets.reload(&actor, false).await;
    let detail = match &outcome {
        Ok(activation) => format!("written; {activation}"),
        Err(refusal) => format!("written; {refusal}"),
    };
    let _ = store.audit(&actor, &ip, "rules-edit", &name, &detail).await;
    let t = viewer.texts;
    page.exists = true;
    match outcome {
        Ok(Activation::Activated(v)) => {
            page.saved = Some(t.fill("rules.edit_activated", &[("version", v.id.to_string())]))
        }
        Ok(Activation::Unchanged(v)) => {
            page.saved = Some(t.fill("rules.edit_unchanged", &[("version", v.id.to_string())]))
        }
        Err(refusal) => {
            page.saved = Some(t.get("rules.edit_reload_refused").to_string());
            page.reload_problems = refusal.problems;
        }
    }
    render(page)
}

/// What keeps the rule set from activating if `name` in the local directory (the last
/// source) had `text`: every source is copied to a scratch directory, the file replaced
/// there, and the copy built and tested like a reload. Problems name the real paths.
fn problems_with(
    scratch: &FsPath,
    sources: &[PathBuf],
    name: &str,
    text: &str,
) -> anyhow::Result<(Candidate, Vec<String>)> {
    let copy = tempfile::Builder::new()
        .prefix("rules-edit-")
        .tempdir_in(scratch)?;
    let mut copied = Vec::with_capacity(sources.len());
    // (path in the copy, real path): the copy's paths in problems are put back.
    let mut renames: Vec<(String, String)> = Vec::new();
    let last = sources.len().saturating_sub(1);
    for (index, source) in sources.iter().enumerate() {
        let target = copy.path().join(index.to_string());
        if source.is_file() {
            let file_name = source.file_name().unwrap_or_default();
            std::fs::create_dir_all(&target)?;
            let file = target.join(file_name);
            std::fs::copy(source, &file)?;
            renames.push((file.display().to_string(), source.display().to_string()));
            copied.push(file);
            continue;
        }
        if source.is_dir() {
            copy_tree(source, &target, 0)?;
        }
        if index == last {
            std::fs::create_dir_all(&target)?;
            std::fs::write(target.join(name), text)?;
        }
        renames.push((
            target.join("").display().to_string(),
            source.join("").display().to_string(),
        ));
        copied.push(target);
    }
    let candidate = Candidate::build(&copied);
    let problems = candidate
        .problems(false)
        .into_iter()
        .map(|problem| {
            // Longest index first: `.../1/` must not rewrite a part of `.../10/`.
            renames
                .iter()
                .rev()
                .fold(problem, |p, (temp, real)| p.replace(temp, real))
        })
        .collect();
    Ok((candidate, problems))
}

/// Held messages (and relayed samples) the edit page's dry run scores.
const DRY_RUN_LIMIT: u32 = 200;

/// How deep a rule directory's copy goes (`tests/`, included subfolders); deeper is not a
/// rule layout, and the limit stops a symlink loop.
const COPY_DEPTH: usize = 4;

fn copy_tree(from: &FsPath, to: &FsPath, depth: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)?.flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_file() {
            std::fs::copy(&path, &target)?;
        } else if path.is_dir() && depth < COPY_DEPTH {
            copy_tree(&path, &target, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_cf_names_may_be_edited() {
        assert!(valid_file_name("99_local.cf"));
        assert!(valid_file_name("my-rules.cf"));
        for bad in [
            "", ".cf", "../x.cf", "a/b.cf", "x.cf.bak", "x.txt", "a b.cf", "ä.cf",
        ] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn scores_read_as_rule_files_write_them() {
        assert_eq!(score_text(2.5), "2.5");
        assert_eq!(score_text(-1.0), "-1");
        assert_eq!(score_text(0.001), "0.001");
        assert_eq!(score_text(0.0), "0");
        assert_eq!(score_text(-0.0001), "0");
    }

    #[test]
    fn the_graph_has_a_bar_per_day_scaled_to_the_busiest() {
        let (bars, busiest) = hit_bars(&[(10, 4), (12, 1000)], 10, 39);
        assert_eq!(bars.len(), 30);
        assert_eq!(busiest, 1000);
        assert_eq!(bars[2].height, GRAPH_HEIGHT);
        assert_eq!(bars[0].height, 2, "a few hits still show");
        assert_eq!(bars[1].height, 0);
        assert_eq!(bars[2].y, GRAPH_TOP);
    }
}
