//! Accepting connections: limits in total and per client IP, and a drained shutdown.
//!
//! Shaped like mini-redis: one accept loop per address, a task per connection, and a shutdown
//! signal every session watches. On shutdown, sessions between transactions get 421 at once,
//! transactions in flight may finish within `smtp.shutdown_grace`, and new connections get 421.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::session::Session;
use crate::config::Settings;

/// A running gateway; dropping it does not stop it, [`RunningServer::shutdown`] does.
pub struct RunningServer {
    pub local_addrs: Vec<SocketAddr>,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    sessions: TaskTracker,
    accept_loops: Vec<JoinHandle<()>>,
}

/// Binds every `smtp.listen` address and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<RunningServer> {
    use anyhow::Context as _;
    let shared = Arc::new(Shared::new(settings).await?);
    let (shutdown, _) = watch::channel(false);
    let sessions = TaskTracker::new();
    let limits = Arc::new(Limits::new(
        shared.settings.smtp.max_connections,
        shared.settings.smtp.max_connections_per_ip,
    ));
    let mut local_addrs = Vec::new();
    let mut accept_loops = Vec::new();
    for addr in &shared.settings.smtp.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (smtp.listen)"))?;
        local_addrs.push(listener.local_addr()?);
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            limits.clone(),
            shutdown.subscribe(),
            sessions.clone(),
        )));
    }
    shared
        .quarantine
        .spawn_purge(shared.settings.quarantine.purge_interval);
    if shared.settings.tracking.enabled {
        let store = shared.quarantine.store().clone();
        let retention = shared.settings.tracking.retention.as_secs() as i64;
        accept_loops.push(tokio::spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                hourly.tick().await;
                let before = crate::store::now() as i64 - retention;
                if let Err(e) = store.track_purge(before).await {
                    tracing::warn!(error = %e, "old tracking records not purged");
                }
            }
        }));
    }
    // Stopped with the accept loops: a restarted gateway takes over the socket and the
    // rule watcher.
    accept_loops.extend(shared.rulesets.spawn_background()?);
    accept_loops.push(crate::control::serve(shared.clone())?);
    if shared.settings.antivirus.enabled {
        let settings = &shared.settings;
        let clamd = crate::antivirus::Clamd::from_settings(&settings.antivirus);
        let (max_age, fail_open) = (
            settings.antivirus.max_database_age,
            settings.antivirus.fail_open,
        );
        let mut stop = shutdown.subscribe();
        tokio::spawn(async move {
            let endpoint = clamd.endpoint.to_string();
            loop {
                crate::antivirus::log_health(&clamd, &endpoint, max_age, fail_open).await;
                tokio::select! {
                    _ = tokio::time::sleep(crate::antivirus::HEALTH_INTERVAL) => {}
                    _ = stop.changed() => break,
                }
            }
        });
    }
    Ok(RunningServer {
        local_addrs,
        shared,
        shutdown,
        sessions,
        accept_loops,
    })
}

impl RunningServer {
    /// Stops accepting new work and waits (up to `smtp.shutdown_grace`) for sessions to end.
    /// Returns how many sessions were still running when the grace ran out.
    pub async fn shutdown(self) -> usize {
        let _ = self.shutdown.send(true);
        self.sessions.close();
        let grace = self.shared.settings.smtp.shutdown_grace;
        let left = match tokio::time::timeout(grace, self.sessions.wait()).await {
            Ok(()) => 0,
            Err(_) => self.sessions.len(),
        };
        for handle in &self.accept_loops {
            handle.abort();
        }
        if let Err(e) = self.shared.rulesets.flush_hits().await {
            tracing::warn!(error = %e, "rule hit counts not saved");
        }
        let _ = std::fs::remove_file(crate::control::socket_path(&self.shared.settings.data_dir));
        left
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if *shutdown.borrow() {
            tokio::spawn(refuse(
                stream,
                "421 4.3.2 Service shutting down, try again later\r\n",
            ));
            continue;
        }
        let Some(slot) = limits.try_acquire(peer.ip()) else {
            tracing::info!(client_ip = %peer.ip(), "connection refused: too many connections");
            tokio::spawn(refuse(
                stream,
                "421 4.7.0 Too many connections, try again later\r\n",
            ));
            continue;
        };
        let session = Session::new(Box::new(stream), peer, shared.clone(), shutdown.clone());
        let counted = crate::metrics::metrics().session();
        sessions.spawn(async move {
            session.run().await;
            drop(slot);
            drop(counted);
        });
    }
}

async fn refuse(mut stream: TcpStream, reply: &'static str) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Open connections in total and per client IP.
struct Limits {
    total: usize,
    per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; frees its place when dropped.
struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    fn new(total: usize, per_ip: usize) -> Limits {
        Limits {
            total,
            per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().expect("limits lock");
        let (total, by_ip) = &mut *open;
        let this_ip = by_ip.entry(ip).or_insert(0);
        if *total >= self.total || *this_ip >= self.per_ip {
            if *this_ip == 0 {
                by_ip.remove(&ip);
            }
            return None;
        }
        *this_ip += 1;
        *total += 1;
        Some(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("limits lock");
        let (total, by_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_ip_and_in_total() {
        let limits = Arc::new(Limits::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = limits.try_acquire(a).unwrap();
        let _s2 = limits.try_acquire(a).unwrap();
        assert!(limits.try_acquire(a).is_none(), "per-IP limit");
        let _s3 = limits.try_acquire(b).unwrap();
        assert!(limits.try_acquire(b).is_none(), "total limit");
        drop(s1);
        assert!(limits.try_acquire(b).is_some());
    }
}
