//! A cap on the connections one listener keeps open at once.
//!
//! Past the cap a new connection is answered and closed at once, so a flood of clients
//! (or of idle sockets) cannot exhaust the process's file descriptors and take every
//! other client down with it. Plain HTTP listeners answer `429 Too Many Requests` with
//! the usual JSON error; gRPC and TLS listeners close the connection, which clients
//! report as unavailable and retry.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How a listener turns away a connection past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Close it (gRPC, TLS).
    Close,
    /// Answer `429` with a JSON error, then close (plain HTTP).
    Http,
}

/// A listener that holds at most `max` connections open.
pub struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    max: usize,
    name: &'static str,
    refusal: Refusal,
    last_warning: AtomicU64,
}

/// A connection that frees its place under the cap when dropped.
pub struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, max: usize, name: &'static str, refusal: Refusal) -> Self {
        LimitedListener {
            listener,
            permits: Arc::new(Semaphore::new(max)),
            max,
            name,
            refusal,
            last_warning: AtomicU64::new(0),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The next connection within the cap; refused ones are answered on the side.
    /// Failures to accept (out of file descriptors) are waited out, as axum does.
    pub async fn accept(&self) -> (Counted<TcpStream>, SocketAddr) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = self.name, "accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => {
                    return (
                        Counted {
                            inner: tcp,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(_) => self.refuse(tcp, peer),
            }
        }
    }

    fn refuse(&self, mut tcp: TcpStream, peer: SocketAddr) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // One warning a minute at most: a flood must not flood the log too.
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                listener = self.name,
                %peer,
                max = self.max,
                "refusing connections: {} are open (--max-connections)",
                self.max
            );
        }
        if self.refusal == Refusal::Close {
            return;
        }
        let body = format!(
            "{{\"code\":\"RESOURCE_EXHAUSTED\",\"message\":\"too many connections: this server \
             keeps at most {} open (--max-connections); try again shortly\"}}",
            self.max
        );
        let response = format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            // Answer after the request arrives: an HTTP client takes a response that comes
            // before its request for a broken connection.
            let mut request = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut request)).await;
            let written =
                tokio::time::timeout(Duration::from_secs(2), tcp.write_all(response.as_bytes()))
                    .await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::debug!(%peer, "could not tell a refused client why");
            }
            let _ = tcp.shutdown().await;
        });
    }

    /// The accepted connections as a stream, for tonic's `serve_with_incoming`.
    pub fn incoming(self) -> impl Stream<Item = io::Result<Counted<TcpStream>>> + Send {
        futures::stream::unfold(self, |listener| async move {
            let (connection, _) = listener.accept().await;
            Some((Ok(connection), listener))
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Counted<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_past_the_cap_are_answered_and_closed() -> io::Result<()> {
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let listener = Arc::new(LimitedListener::new(tcp, 2, "test", Refusal::Http));
        let accepting = Arc::clone(&listener);
        let (kept_tx, mut kept_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let (connection, _) = accepting.accept().await;
                if kept_tx.send(connection).await.is_err() {
                    return;
                }
            }
        });
        let _a = TcpStream::connect(addr).await?;
        let _b = TcpStream::connect(addr).await?;
        let first = kept_rx.recv().await;
        let second = kept_rx.recv().await;
        assert!(first.is_some() && second.is_some());
        assert_eq!(listener.open(), 2);
        let mut third = TcpStream::connect(addr).await?;
        third
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut answer = String::new();
        third.read_to_string(&mut answer).await?;
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("--max-connections"), "{answer}");
        // A place freed is a place taken again.
        drop(first);
        let _d = TcpStream::connect(addr).await?;
        let fourth = kept_rx.recv().await;
        assert!(fourth.is_some());
        assert_eq!(listener.open(), 2);
        Ok(())
    }
}
