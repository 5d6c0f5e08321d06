//! A loopback TCP proxy that a test can cut (dropping every open connection and closing new
//! ones as soon as they are accepted) and heal: "the database went down" or "the network split",
//! without touching the real server behind it. It can also hold what clients send (read, but
//! not passed on until released): a request already sent and still in flight, which the server
//! applies late.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    epoch: tokio::sync::watch::Sender<u64>,
    hold: tokio::sync::watch::Sender<bool>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Counters {
    /// Bytes clients sent while held.
    held: AtomicU64,
    /// Bytes the server sent back, in all.
    replied: AtomicU64,
}

impl Proxy {
    /// Proxies a new loopback port to `target` (`HOST:PORT`).
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let (hold, _) = tokio::sync::watch::channel(false);
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let (c2, g2, h2, n2, s2) = (
            cut.clone(),
            epoch.clone(),
            hold.clone(),
            counters.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    _ = s2.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                if c2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut killed = g2.subscribe();
                let (hold, counters) = (h2.subscribe(), n2.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = pipe(inbound, outbound, hold, counters) => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            epoch,
            hold,
            counters,
            stop,
        }
    }

    /// Drops every open connection and closes new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|g| *g += 1);
    }

    /// Lets new connections through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// From now on, what clients send is read but not passed on (until [`Proxy::release`]).
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Passes on what was held, and everything after it.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Bytes clients sent while held.
    pub fn held_bytes(&self) -> u64 {
        self.counters.held.load(Ordering::SeqCst)
    }

    /// Bytes the server sent back so far.
    pub fn replied_bytes(&self) -> u64 {
        self.counters.replied.load(Ordering::SeqCst)
    }
}

/// Copies both ways until both sides are done, holding the client's bytes while `hold` is true.
async fn pipe(
    inbound: TcpStream,
    outbound: TcpStream,
    mut hold: tokio::sync::watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_server, mut to_server) = outbound.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if *hold.borrow_and_update() {
                counters.held.fetch_add(n as u64, Ordering::SeqCst);
                while *hold.borrow_and_update() {
                    if hold.changed().await.is_err() {
                        return;
                    }
                }
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            counters.replied.fetch_add(n as u64, Ordering::SeqCst);
            if to_client.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
