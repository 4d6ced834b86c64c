//! The Debian package (`cargo deb`; scripts/test builds it first): unpacked into a throwaway
//! root with `dpkg-deb -x` (there is no systemd here), its files are where the unit expects
//! them, the unit runs as its own user with the hardening the issue asks for, and the
//! unit's ExecStart, run by hand with the paths moved under the root, is a working gateway
//! with the packaged rules.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Sink;

fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no package in {}: build it with `cargo install cargo-deb && cargo deb --profile dev` \
             (scripts/test does this before the tests)",
            dir.display()
        )
    })
}

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .output()
        .expect("dpkg-deb runs (Debian's dpkg package)");
    assert!(out.status.success(), "dpkg-deb {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_installs_a_gateway_the_unit_can_start() {
    let deb = package();
    let deb = deb.to_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    dpkg_deb(&["-x", deb, r.to_str().unwrap()]);
    let control = r.join("DEBIAN");
    dpkg_deb(&["-e", deb, control.to_str().unwrap()]);

    // Control data: the recommended scanner, the conffile, the user and the unit enabled.
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Recommends: clamav-daemon"), "{fields}");
    assert!(fields.contains("Section: mail"), "{fields}");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/kala/kala.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(
        postinst.contains("systemctl") && postinst.contains("enable"),
        "{postinst}"
    );

    // The unit: its own user, the hardening, port 25 the only capability.
    let unit = [
        "lib/systemd/system/kala.service",
        "usr/lib/systemd/system/kala.service",
    ]
    .iter()
    .map(|p| r.join(p))
    .find(|p| p.exists())
    .expect("the package holds kala.service");
    let unit = std::fs::read_to_string(unit).unwrap();
    for line in [
        "User=kala",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=kala",
        "ReadWritePaths=/var/lib/kala /etc/kala/rules",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "the unit lacks {line}:\n{unit}"
        );
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        words,
        ["/usr/bin/kala", "serve", "--config", "/etc/kala/kala.toml"]
    );

    // The files the unit and the config name are in the package.
    let under = |path: &str| r.join(path.trim_start_matches('/'));
    let binary = under(words[0]);
    let config = under(words[3]);
    assert!(binary.is_file(), "{}", binary.display());
    let shipped = std::fs::read_to_string(&config).unwrap();
    assert!(
        shipped.contains("data_dir = \"/var/lib/kala\""),
        "{shipped}"
    );
    assert!(
        shipped.contains("dirs = [\"/usr/share/kala/rules\", \"/etc/kala/rules\"]"),
        "{shipped}"
    );
    let rules = under("/usr/share/kala/rules");
    assert!(rules.join("10_headers.cf").is_file());
    assert!(rules.join("tests/kala.cf").is_file());
    assert!(under("/usr/share/doc/kala/kala.example.toml").is_file());

    // The unit's ExecStart by hand: the shipped config with its paths moved under the root,
    // a free port instead of 25, the test's downstream, and no clamd (none runs here).
    std::fs::create_dir_all(under("/etc/kala/rules")).unwrap();
    let port = free_port();
    let sink = Sink::start().await;
    let moved = shipped
        .replace(
            "\"/var/lib/kala\"",
            &format!("{:?}", under("/var/lib/kala").display().to_string()),
        )
        .replace(
            "\"/usr/share/kala/rules\"",
            &format!("{:?}", rules.display().to_string()),
        )
        .replace(
            "\"/etc/kala/rules\"",
            &format!("{:?}", under("/etc/kala/rules").display().to_string()),
        )
        .replace("0.0.0.0:25", &format!("127.0.0.1:{port}"))
        .replace("exchange.example.org:25", &sink.addr.to_string())
        .replace("127.0.0.1:8025", &format!("127.0.0.1:{}", free_port()))
        .replace("clamd = \"/var/run/clamav/clamd.ctl\"", "enabled = false");
    let run_config = r.join("run.toml");
    std::fs::write(&run_config, &moved).unwrap();
    let mut gateway = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&run_config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = gateway.try_wait() {
            panic!(
                "the packaged gateway exited: {status} {:?}",
                gateway.wait_with_output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the packaged gateway did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let message = b"From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: URGENT WIRE TRANSFER TODAY\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <p@sender.example>\r\n\r\nPlease pay.\r\n";
    let reply = support::Client::connect(addr)
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
        .await;
    let delivered = sink.wait_for(1).await;
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert!(reply.starts_with("250"), "{reply}");
    let data = String::from_utf8_lossy(&delivered[0].data);
    assert!(
        data.contains("KALA_SUBJ_ALL_CAPS"),
        "the packaged rules ran: {data}"
    );
    assert!(
        under("/var/lib/kala/kala.db").is_file(),
        "state in the data directory"
    );
}
