//! Health for load balancers and the command line: `/healthz` while the process is up,
//! `/readyz` and `kala status` ready only while the downstream, the store and the rules all
//! answer, and saying which one does not.

mod support;

use std::process::Command;

use support::http::Browser;
use support::{Kala, Sink};

fn kala_status(kala: &Kala) -> (bool, String) {
    let config = kala.data_dir.path().join("status.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n",
            kala.data_dir.path().display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kala"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

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
    let (ok, out) = kala_status(&kala);
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
    let (ok, out) = kala_status(&kala);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL downstream"), "{out}");
    assert!(out.contains("not ready"), "{out}");
}
