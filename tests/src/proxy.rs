//! A fault-injecting TCP proxy for partition tests: it forwards connections
//! to a target until it is cut, then drops every open connection and every
//! new one until it is healed. Bytes are copied untouched, so mutual TLS
//! runs end to end through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy (stopped when dropped).
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    refused: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::serve(listener, target)
    }

    /// Forwards connections accepted on `listener` to `target`.
    pub fn serve(listener: TcpListener, target: SocketAddr) -> Proxy {
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let refused = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let proxy = Proxy {
            addr,
            cut: cut.clone(),
            generation: generation.clone(),
            refused: refused.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                if cut.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let mut cut_signal = generation.subscribe();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_signal.changed() => {}
                        () = shutdown.cancelled() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Partitions: drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Heals the partition.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
