//! One execution over the kernel WebSocket (`/api/kernels/{id}/channels`, reference §6.4): connect
//! (bounded), send the `execute_request`, then [`drive`] reads the kernel's messages through a
//! [`RunTracker`] and forwards the events until the run is done. A new WebSocket per run, closed
//! at the end.
//!
//! The drive task owns the run: if the client goes away it keeps reading (events are dropped) until
//! the kernel finishes, so the context stays "busy" exactly as long as the kernel is (upstream
//! does not interrupt on disconnect either, §6.4 step 8). It ends early, with an `error` event,
//! when the WebSocket closes before the kernel went idle, when the kernel restarts or dies, and
//! when the context is deleted or execd shuts down.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::protocol::RunTracker;
use super::CodeError;
use crate::event::{EventKind, ExecEvent};

/// The kernel WebSocket.
pub type KernelSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest single message we accept from the kernel (a big plot or a long output chunk).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Opens the channels WebSocket within `timeout`. The Jupyter server answers the handshake once
/// the kernel is ready, so a fresh kernel's start-up is part of this wait.
pub async fn connect(url: &str, token: &str, timeout: Duration) -> Result<KernelSocket, CodeError> {
    let mut req = url.into_client_request().map_err(|e| CodeError::Kernel(format!("bad kernel WebSocket URL: {e}")))?;
    if let Ok(v) = HeaderValue::from_str(&format!("Token {token}")) {
        req.headers_mut().insert("authorization", v);
    }
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE);
    config.max_frame_size = Some(MAX_MESSAGE);
    let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), false);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((ws, _resp))) => Ok(ws),
        Ok(Err(e)) => Err(CodeError::Kernel(format!("error connecting to the kernel: {e}"))),
        Err(_) => Err(CodeError::Kernel(format!("the kernel did not accept a connection within {timeout:?}"))),
    }
}

/// Sends one text frame (the `execute_request`).
pub async fn send(ws: &mut KernelSocket, frame: String) -> Result<(), CodeError> {
    ws.send(Message::text(frame))
        .await
        .map_err(|e| CodeError::Kernel(format!("error sending the execute request: {e}")))
}

/// Forwards events to the client while it listens; after it left, events are dropped.
struct Sink {
    tx: mpsc::Sender<ExecEvent>,
    gone: bool,
    /// An `error` event was produced (sent or not).
    error: bool,
}

impl Sink {
    async fn send(&mut self, ev: ExecEvent) {
        self.error |= ev.kind == EventKind::Error;
        if !self.gone && self.tx.send(ev).await.is_err() {
            self.gone = true;
        }
    }
    async fn send_all(&mut self, evs: Vec<ExecEvent>) {
        for ev in evs {
            self.send(ev).await;
        }
    }
}

/// How a run ended, for the execution observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// `exited` (the kernel finished it, with or without an exception), `interrupted` (context
    /// deleted, shutdown) or `lost` (the kernel or its connection went away).
    pub reason: &'static str,
    /// An `error` event was part of the run.
    pub error: bool,
}

/// Reads the kernel's answers to the request tracked by `tracker` and sends their events to
/// `tx`, ending with `execution_complete` (or an `error` event when the run cannot finish).
/// `cancel` ends it early (context deleted, shutdown). `guard` (the context's busy claim) is
/// released before the event stream ends, so a client that saw the end can run again at once.
pub async fn drive<G: Send>(
    mut ws: KernelSocket,
    mut tracker: RunTracker,
    tx: mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
    guard: G,
) -> RunEnd {
    let mut sink = Sink { tx, gone: false, error: false };
    let reason;
    loop {
        let reply_deadline = tracker.reply_deadline().map(tokio::time::Instant::from_std);
        // Three ways on: a kernel message, the post-idle grace for `execute_reply` running out,
        // or cancellation. Cancellation is checked first so a deleted context stops at once.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                sink.send(ExecEvent::runtime_error("the code context was deleted or execd is shutting down")).await;
                reason = "interrupted";
                break;
            }
            _ = sleep_until(reply_deadline) => {
                sink.send_all(tracker.finish()).await;
                reason = "exited";
                break;
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    let events = tracker.on_message(&msg);
                    sink.send_all(events).await;
                    if let Some(state) = tracker.kernel_lost() {
                        let m = format!("the kernel is {state}: the execution was lost");
                        sink.send(ExecEvent::runtime_error(m)).await;
                        reason = "lost";
                        break;
                    }
                    if tracker.is_done() {
                        sink.send_all(tracker.finish()).await;
                        reason = "exited";
                        break;
                    }
                }
                // Binary frames carry messages with buffers (widgets, comms): nothing we map.
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    if tracker.is_idle() {
                        sink.send_all(tracker.finish()).await;
                        reason = "exited";
                    } else {
                        let m = "the kernel connection closed before the execution finished";
                        sink.send(ExecEvent::runtime_error(m)).await;
                        reason = "lost";
                    }
                    break;
                }
            }
        }
    }
    let error = sink.error;
    drop(guard);
    drop(sink);
    // Best effort, bounded: the Jupyter server may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    RunEnd { reason, error }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
