//! Where the gRPC server listens: a TCP address, or a Unix socket
//! (`listen.grpc: unix:/path`) for a sidecar that shares a volume with
//! Envoy (an Envoy cluster reaches it through a `pipe` address). A socket
//! exposes no TCP port in the pod and skips the loopback TCP stack.
//! Accepted connections are [`Coalescing`], so answers leave in few writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Connected, TcpIncoming};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A gRPC connection that tells h2 it has no vectored writes.
///
/// Why: h2 keeps a DATA frame bigger than 256 bytes out of its write buffer
/// when the socket can write vectored (it is sent from its own buffer, with
/// `writev`), and buffers nothing more until that frame is written. An
/// allow with its identity headers is a 400–600 byte message, so every
/// answer cost a `writev` of its own, even with many Checks in flight on
/// one connection: 1.75 `writev` per Check against 0.78 for a no-op with a
/// one-header answer (`perf stat`, benches/BENCHMARKS.md). Without vectored
/// writes h2 copies frames up to 1 KiB into its buffer, so answers that are
/// ready together leave in one write. Everything else is passed through.
#[derive(Debug)]
pub struct Coalescing<T>(T);

// === impl Coalescing ===

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The peer address (`remote_addr()`, audit) is the socket's own.
impl<T: Connected> Connected for Coalescing<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

/// A TCP gRPC listener as tonic's stream of connections, with `TCP_NODELAY`
/// on every accepted socket: without it, Nagle holds back a response
/// written in more than one segment until Envoy's delayed ACK (up to 40 ms).
pub fn tcp_incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<Coalescing<TcpStream>>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map_ok(Coalescing)
}

/// A Unix-socket gRPC listener as tonic's stream of connections.
pub fn unix_incoming(
    listener: UnixListener,
) -> impl Stream<Item = std::io::Result<Coalescing<UnixStream>>> {
    UnixListenerStream::new(listener).map_ok(Coalescing)
}

/// `listen.grpc`: `HOST:PORT` or `unix:/absolute/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcListen {
    Tcp(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

/// A `listen.grpc` value that is neither.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a listen address; accepted: HOST:PORT (127.0.0.1:9191) or unix:/absolute/path (unix:/var/run/portcullis/grpc.sock)"
)]
pub struct ListenParseError(String);

impl std::str::FromStr for GrpcListen {
    type Err = ListenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            let p = Path::new(path);
            if !p.is_absolute() || p.file_name().is_none() {
                return Err(ListenParseError(s.to_owned()));
            }
            return Ok(GrpcListen::Unix(p.to_path_buf()));
        }
        s.parse()
            .map(GrpcListen::Tcp)
            .map_err(|_| ListenParseError(s.to_owned()))
    }
}

impl std::fmt::Display for GrpcListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcListen::Tcp(a) => a.fmt(f),
            GrpcListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for GrpcListen {
    fn from(a: SocketAddr) -> Self {
        GrpcListen::Tcp(a)
    }
}

impl GrpcListen {
    /// Reachable from this host only: a loopback address or a socket file.
    pub fn is_local(&self) -> bool {
        match self {
            GrpcListen::Tcp(a) => a.ip().is_loopback(),
            GrpcListen::Unix(_) => true,
        }
    }
}

impl Serialize for GrpcListen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GrpcListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A bound Unix socket: removed when dropped (the server stopped), so a
/// restart binds afresh and Envoy never talks to a dead file.
#[derive(Debug)]
pub struct UnixSocket {
    path: PathBuf,
}

impl UnixSocket {
    /// Binds `path`. A socket file left by a previous run is replaced; any
    /// other file there is an error (never deleted). The socket is made
    /// group-writable (0660): Envoy in the pod shares the group (or
    /// `fsGroup`), nobody else needs it.
    pub fn bind(path: &Path) -> std::io::Result<(tokio::net::UnixListener, UnixSocket)> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok((
            listener,
            UnixSocket {
                path: path.to_path_buf(),
            },
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix_and_names_what_is_accepted() {
        assert_eq!(
            "127.0.0.1:9191".parse::<GrpcListen>().unwrap(),
            GrpcListen::Tcp("127.0.0.1:9191".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/pc/grpc.sock".parse::<GrpcListen>().unwrap(),
            GrpcListen::Unix("/run/pc/grpc.sock".into())
        );
        for bad in ["unix:relative.sock", "unix:", "unix:/", "localhost", ""] {
            let e = bad.parse::<GrpcListen>().unwrap_err().to_string();
            assert!(e.contains("unix:/absolute/path"), "{bad}: {e}");
        }
        let u: GrpcListen = "unix:/run/pc/grpc.sock".parse().unwrap();
        assert_eq!(u.to_string(), "unix:/run/pc/grpc.sock");
        assert!(u.is_local());
        assert!(!"0.0.0.0:9191".parse::<GrpcListen>().unwrap().is_local());
    }

    /// What h2 reads to decide whether to buffer an answer or write it on
    /// its own; and the bytes and the peer address still pass through.
    #[tokio::test]
    async fn accepted_connections_coalesce_and_pass_everything_through() {
        use futures::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut incoming = Box::pin(tcp_incoming(l));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        assert!(client.is_write_vectored(), "tokio's own stream is vectored");
        assert!(!conn.is_write_vectored());
        assert_eq!(
            conn.connect_info().remote_addr(),
            Some(client.local_addr().unwrap())
        );
        conn.write_all(b"answer").await.unwrap();
        client.write_all(b"check").await.unwrap();
        let (mut a, mut b) = ([0u8; 6], [0u8; 5]);
        client.read_exact(&mut a).await.unwrap();
        conn.read_exact(&mut b).await.unwrap();
        assert_eq!((&a, &b), (b"answer", b"check"));
    }

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_refuses_other_files_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grpc.sock");
        let (l, guard) = UnixSocket::bind(&path).unwrap();
        drop(l);
        std::mem::forget(guard); // a crashed run leaves its socket file
        assert!(path.exists());
        let (_l, guard) = UnixSocket::bind(&path).unwrap();
        drop(guard);
        assert!(!path.exists(), "removed on drop");
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "x").unwrap();
        let e = UnixSocket::bind(&file).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert!(file.exists(), "never deleted");
    }
}
