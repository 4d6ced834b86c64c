//! A real DNS server on 127.0.0.1 for the reputation tests: hickory-server answering from the
//! zone files in `fixtures/dns/` (plus records a test adds, such as a DKIM key it generated),
//! counting the queries it gets. And a server that never answers, for timeouts.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::file::{FileConfig, FileZoneHandler};
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// Answers from the fixture zones and counts queries.
struct Counting {
    catalog: Catalog,
    queries: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

pub struct DnsServer {
    /// `dns.servers` for Kala.
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    _server: Server<Counting>,
    _zones: tempfile::TempDir,
}

impl DnsServer {
    /// Serves every zone of `fixtures/dns/`, with `extra` records (zone origin, record lines)
    /// appended to their zones.
    pub async fn start(extra: &[(&str, String)]) -> DnsServer {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dns");
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = Catalog::new();
        for entry in std::fs::read_dir(&fixtures).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "zone") {
                continue;
            }
            let origin = path.file_stem().unwrap().to_str().unwrap().to_string();
            let mut text = std::fs::read_to_string(&path).unwrap();
            for (zone, records) in extra {
                if *zone == origin {
                    text.push('\n');
                    text.push_str(records);
                    text.push('\n');
                }
            }
            let zone_path = dir.path().join(format!("{origin}.zone"));
            std::fs::write(&zone_path, text).unwrap();
            let name = Name::from_ascii(format!("{origin}.")).unwrap();
            let handler = FileZoneHandler::try_from_config(
                name.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
                None,
                &FileConfig { zone_path },
            )
            .unwrap_or_else(|e| panic!("zone {origin}: {e}"));
            catalog.upsert(LowerName::new(&name), vec![Arc::new(handler)]);
        }
        let queries = Arc::new(AtomicUsize::new(0));
        let mut server = Server::new(Counting {
            catalog,
            queries: queries.clone(),
        });
        // UDP and TCP (for answers too large for UDP) on one port: a free UDP port may be
        // taken for TCP by another test's connection, so try again until both are ours.
        let (udp, tcp) = {
            let mut attempts = 0;
            loop {
                let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                match TcpListener::bind(udp.local_addr().unwrap()).await {
                    Ok(tcp) => break (udp, tcp),
                    Err(e) => {
                        attempts += 1;
                        assert!(attempts < 100, "no port free for both UDP and TCP: {e}");
                    }
                }
            }
        };
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, std::time::Duration::from_secs(5), 32);
        DnsServer {
            addr,
            queries,
            _server: server,
            _zones: dir,
        }
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// A UDP port that takes queries and never answers.
pub struct SilentDns {
    pub addr: SocketAddr,
    _socket: UdpSocket,
}

impl SilentDns {
    pub async fn start() -> SilentDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        SilentDns {
            addr: socket.local_addr().unwrap(),
            _socket: socket,
        }
    }
}
