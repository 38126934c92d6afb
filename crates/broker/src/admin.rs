//! The admin HTTP port (`admin.listeners`, default 127.0.0.1:9644):
//! - `GET /metrics`: Prometheus metrics in the OpenMetrics text format (`metrics.rs`).
//! - `GET /health`: 200 while the process runs and answers (liveness).
//! - `GET /ready`: 200 while the broker serves Kafka clients; 503 before that and once shutdown
//!   starts (readiness: take it out of a load balancer while it drains).
//!
//! Limits, and what happens at each:
//! - At most `ADMIN_CONNECTIONS_MAX` connections at once; past it, accepting waits until one
//!   closes (new ones queue in the kernel's backlog).
//! - Every response closes its connection, and a connection lives at most
//!   `ADMIN_CONNECTION_LIFETIME`: a client that connects and sends nothing frees its slot then.

use crate::Broker;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const ADMIN_CONNECTIONS_MAX: usize = 64;
const ADMIN_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AdminState {
    broker: Arc<Broker>,
    ready: Arc<AtomicBool>,
}

/// Serves the admin port until `stop` completes. `ready` says whether `/ready` answers 200.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    ready: Arc<AtomicBool>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(readiness))
        .with_state(AdminState { broker, ready });
    let listener = AdminListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX)),
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::warn!(error = %e, "admin HTTP server stopped");
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, content_type), (header::CONNECTION, "close")],
        body,
    )
        .into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    // A scrape locks every partition briefly: keep it off the threads that serve clients.
    let broker = s.broker.clone();
    match tokio::task::spawn_blocking(move || broker.metrics.encode(&broker)).await {
        Ok(Ok(page)) => reply(StatusCode::OK, OPENMETRICS, page),
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode metrics: {e}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("metrics task failed: {e}\n"),
        ),
    }
}

async fn health() -> Response {
    reply(StatusCode::OK, "text/plain", "ok\n".into())
}

async fn readiness(State(s): State<AdminState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        reply(StatusCode::OK, "text/plain", "ready\n".into())
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not serving clients (starting or shutting down)\n".into(),
        )
    }
}

/// Accepts at most `ADMIN_CONNECTIONS_MAX` connections at once, each for a bounded time.
struct AdminListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for AdminListener {
    type Io = AdminConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (AdminConnection, SocketAddr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed.
                return std::future::pending().await;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let connection = AdminConnection {
                        stream,
                        deadline: Box::pin(tokio::time::sleep(ADMIN_CONNECTION_LIFETIME)),
                        _permit: permit,
                    };
                    return (connection, addr);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its reads and writes once its lifetime is over, and frees its slot
/// when dropped.
struct AdminConnection {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl AdminConnection {
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.deadline
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "admin connection open too long"))
    }
}

impl AsyncRead for AdminConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdminConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
