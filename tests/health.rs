//! Health for load balancers and the command line: `/healthz` while the process is up,
//! `/readyz` and `kala status` ready only while the downstream, the store and the rules all
//! answer, and saying which one does not; `/metrics` read by the Prometheus project's own
//! parser, its counters moving as mail flows.

mod support;

use std::process::Command;

use support::http::Browser;
use support::{Kala, Sink, kala_cli};

#[tokio::test(flavor = "multi_thread")]
async fn ready_while_everything_answers_and_not_when_the_downstream_is_down() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let web = kala.start_web().await;
    let mut http = Browser::new(web);

    let health = http.get("/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = http.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(body["ready"], true);
    let names: Vec<&str> = body["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["downstream", "antivirus", "store", "rules"]);
    let (ok, out) = kala_cli(&kala.cli_config(), &["status"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok   downstream") && out.ends_with("ready\n"),
        "{out}"
    );

    // Exchange goes away: not ready, and the probe says why without naming the address.
    sink.stop().await;
    let ready = http.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    let downstream = &body["probes"][0];
    assert_eq!(downstream["ok"], false);
    let detail = downstream["detail"].as_str().unwrap();
    assert!(detail.contains("cannot connect"), "{detail}");
    assert!(!detail.contains(&sink.addr.to_string()), "{detail}");
    assert_eq!(body["probes"][2]["ok"], true, "the store still answers");
    let (ok, out) = kala_cli(&kala.cli_config(), &["status"]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL downstream"), "{out}");
    assert!(out.contains("not ready"), "{out}");
}

/// Parses OpenMetrics text with the Prometheus project's own Python parser (Debian's
/// python3-prometheus-client): every sample as `name{labels}` -> value. A text it cannot
/// parse fails the test.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::Write as _;
    let python = "/usr/bin/python3";
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = {}\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
        \x20       out[s.name + '{' + labels + '}'] = s.value\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{python} is missing ({e}): apt-get install python3 python3-prometheus-client")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics (apt-get install python3-prometheus-client if it is missing): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_openmetrics_and_move_when_mail_flows() {
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[("policy", "tag_score = 0.5\nquarantine_score = 1.0")],
    )
    .await;
    let web = kala.start_web().await;
    let mut http = Browser::new(web);
    let before = http.get("/metrics").await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        before.headers
    );
    let before = parse_metrics(&before.body);

    let dated = support::clean_message("hello", "A plain note.\r\n");
    let undated = b"From: a@sender.example\r\nSubject: undated\r\n\r\nbody\r\n".to_vec();
    for message in [&dated, &dated, &undated] {
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    let after = parse_metrics(&http.get("/metrics").await.body);
    let moved = |key: &str| {
        after
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("no {key} in {after:?}"))
            - before.get(key).copied().unwrap_or(0.0)
    };
    assert!(moved("kala_messages_total{action=accept}") >= 2.0);
    assert!(moved("kala_messages_total{action=quarantine}") >= 1.0);
    assert!(moved("kala_symbols_total{symbol=KALA_MISSING_DATE}") >= 1.0);
    assert!(moved("kala_downstream_replies_total{class=2xx}") >= 2.0);
    assert!(moved("kala_check_duration_seconds_count{check=header_structure}") >= 3.0);
    assert_eq!(
        after["kala_quarantine_held{}"], 1.0,
        "this gateway's store holds one"
    );
    assert!(after.contains_key("kala_smtp_sessions{}"));
    assert!(after.contains_key("kala_clamd_duration_seconds_count{}"));
}
