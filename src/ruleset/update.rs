//! Signed rule updates: a bundle is a zip of rule files (`NAME.cf`, `tests/NAME.cf`,
//! `tests/NAME.eml`) with a minisign signature beside it (`kala-rules.zip.minisig`).
//!
//! `kala rules sign` makes one; `kala rules update` fetches one (from a directory or an
//! http(s) URL), verifies the signature against `rules.update_key` before reading anything
//! in it, validates and tests it with the local rules, and only then puts it in
//! `rules.update_dir` and activates it. The signature is what makes plain HTTP safe too, as
//! for APT; the minisign tool makes and checks the same signatures.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Candidate;
use crate::rules::snapshot::{Snapshot, safe_member, write_replacing};

pub const BUNDLE: &str = "kala-rules.zip";
pub const SIGNATURE: &str = "kala-rules.zip.minisig";
/// Key files `kala rules keygen` writes (minisign's formats).
pub const PUBLIC_KEY: &str = "kala-rules.pub";
pub const SECRET_KEY: &str = "kala-rules.key";
/// Biggest bundle or signature fetched.
const MAX_DOWNLOAD: usize = 32 << 20;

/// Makes a signing key pair in `dir`; returns the public key line for `rules.update_key`.
pub fn keygen(dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let pair = minisign::KeyPair::generate_unencrypted_keypair()?;
    std::fs::create_dir_all(dir)?;
    let secret = dir.join(SECRET_KEY);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .with_context(|| format!("cannot create {} (it must not exist yet)", secret.display()))?;
    std::io::Write::write_all(&mut file, pair.sk.to_box(None)?.to_string().as_bytes())?;
    std::fs::write(dir.join(PUBLIC_KEY), pair.pk.to_box()?.to_string())?;
    Ok(pair.pk.to_base64())
}

/// Zips the rule files of `dir` (and its `tests/`) into `out_dir/kala-rules.zip` and signs
/// it with the minisign secret key in `key_file`.
pub fn sign(dir: &Path, key_file: &Path, out_dir: &Path) -> anyhow::Result<(PathBuf, usize)> {
    let unusable = |e: minisign::PError| {
        anyhow::anyhow!("cannot use the secret key {}: {e}", key_file.display())
    };
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("cannot read {}", key_file.display()))?;
    let sealed = minisign::SecretKeyBox::from_string(&text).map_err(unusable)?;
    // `kala rules keygen` keys have no password; a password-protected minisign key takes
    // it from KALA_RULES_KEY_PASSWORD, or asks on the terminal.
    let key = match sealed.clone().into_unencrypted_secret_key() {
        Ok(key) => key,
        Err(_) => sealed
            .into_secret_key(std::env::var("KALA_RULES_KEY_PASSWORD").ok())
            .map_err(unusable)?,
    };
    let mut bundle = Snapshot::default();
    for folder in [dir.to_path_buf(), dir.join("tests")] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.strip_prefix(dir)?.to_path_buf();
            if path.is_file() && safe_member(&name) {
                bundle.files.insert(name, std::fs::read(&path)?);
            }
        }
    }
    anyhow::ensure!(
        bundle.files.keys().any(|f| f.components().count() == 1),
        "no rule files (*.cf) in {}",
        dir.display()
    );
    let zip = bundle.to_zip()?;
    let signature = minisign::sign(
        None,
        &key,
        Cursor::new(&zip),
        Some(&format!("kala rules, {} files", bundle.files.len())),
        None,
    )?;
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(BUNDLE);
    write_replacing(&path, &zip)?;
    write_replacing(&out_dir.join(SIGNATURE), signature.to_string().as_bytes())?;
    Ok((path, bundle.files.len()))
}

/// Checks the signature, then reads the bundle: every member must be a plain rule or test
/// file name.
pub fn verify(zip: &[u8], signature: &str, public_key: &str) -> anyhow::Result<Snapshot> {
    let key = minisign::PublicKey::from_base64(public_key.trim())
        .map_err(|e| anyhow::anyhow!("rules.update_key is unusable: {e}"))?;
    let signature = minisign::SignatureBox::from_string(signature)
        .map_err(|e| anyhow::anyhow!("the signature file is unreadable: {e}"))?;
    minisign::verify(&key, &signature, Cursor::new(zip), true, false, false).map_err(|e| {
        anyhow::anyhow!("the bundle's signature does not verify ({e}): refused, nothing changed")
    })?;
    let bundle = Snapshot::from_zip(zip)?;
    if let Some(bad) = bundle.files.keys().find(|name| !safe_member(name)) {
        anyhow::bail!(
            "the bundle holds `{}`, which is not a rule or test file name: refused",
            bad.display()
        );
    }
    Ok(bundle)
}

/// Fetches the bundle and its signature from a directory or an http(s) URL.
pub async fn fetch(source: &str) -> anyhow::Result<(Vec<u8>, String)> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let base = source.trim_end_matches('/');
        let zip = http_get(&format!("{base}/{BUNDLE}")).await?;
        let signature = http_get(&format!("{base}/{SIGNATURE}")).await?;
        return Ok((zip, String::from_utf8_lossy(&signature).into_owned()));
    }
    let dir = Path::new(source);
    let zip = std::fs::read(dir.join(BUNDLE))
        .with_context(|| format!("cannot read {}", dir.join(BUNDLE).display()))?;
    let signature = std::fs::read_to_string(dir.join(SIGNATURE))
        .with_context(|| format!("cannot read {}", dir.join(SIGNATURE).display()))?;
    Ok((zip, signature))
}

/// Unpacks a verified bundle beside the update directory, builds and tests the rule set it
/// makes with the local rules, and only if that is sound replaces the update directory
/// with it. Returns the candidate (built from the staging copy) for reporting.
pub fn install(
    bundle: &Snapshot,
    update_dir: &Path,
    local_dirs: &[PathBuf],
    force: bool,
) -> anyhow::Result<Candidate> {
    let staging = update_dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&staging);
    for (name, bytes) in &bundle.files {
        let path = staging.join(name);
        std::fs::create_dir_all(path.parent().unwrap_or(&staging))?;
        std::fs::write(&path, bytes)?;
    }
    let mut sources = vec![staging.clone()];
    sources.extend(local_dirs.iter().cloned());
    let candidate = Candidate::build(&sources);
    let problems = candidate.problems(force);
    if !problems.is_empty() {
        let _ = std::fs::remove_dir_all(&staging);
        anyhow::bail!(
            "the bundle is signed but the rule set it makes is not sound; nothing changed:\n  {}",
            problems.join("\n  ")
        );
    }
    let old = update_dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if update_dir.exists() {
        std::fs::rename(update_dir, &old)?;
    }
    std::fs::rename(&staging, update_dir)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(candidate)
}

/// One GET with rustls and the system's CAs; the body is bounded.
async fn http_get(url: &str) -> anyhow::Result<Vec<u8>> {
    use http_body_util::BodyExt as _;
    use hyper_util::rt::TokioIo;
    let parsed = url::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("`{url}` has no host"))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    // Origin form (path and query): what a server expects when no proxy is in between.
    let target = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let request = hyper::Request::get(target)
        .header(hyper::header::HOST, &host)
        .header(hyper::header::USER_AGENT, "kala-rules-update")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = if parsed.scheme() == "https" {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {host} failed"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    };
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    let body = http_body_util::Limited::new(response.into_body(), MAX_DOWNLOAD)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_bundle_verifies_and_a_tampered_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("10_a.cf"), "body A /prize/\n").unwrap();
        let key = keygen(&dir.path().join("keys")).unwrap();
        let out = dir.path().join("out");
        sign(&rules, &dir.path().join("keys").join(SECRET_KEY), &out).unwrap();
        let zip = std::fs::read(out.join(BUNDLE)).unwrap();
        let signature = std::fs::read_to_string(out.join(SIGNATURE)).unwrap();
        let bundle = verify(&zip, &signature, &key).unwrap();
        assert_eq!(bundle.files[Path::new("10_a.cf")], b"body A /prize/\n");

        let mut tampered = zip.clone();
        let last = tampered.len() - 30;
        tampered[last] ^= 1;
        assert!(verify(&tampered, &signature, &key).is_err());
        let other = keygen(&dir.path().join("other")).unwrap();
        assert!(verify(&zip, &signature, &other).is_err());
    }
}
