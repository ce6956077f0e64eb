//! The idle collector shared by bash sessions and PTY sessions (DECISIONS D51): a task that wakes
//! every quarter of the TTL (between 100 ms and 60 s) and asks its owner to collect what has been
//! idle longer than the TTL. It ends on shutdown or when the owner is dropped (it holds only a
//! `Weak`, so it never keeps a manager alive).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Spawns the collector loop; `collect(owner, ttl)` runs on every tick. Call from a runtime.
pub fn spawn_idle_collector<T, F>(owner: Weak<T>, ttl: Duration, shutdown: CancellationToken, collect: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, Duration) + Send + 'static,
{
    let every = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            // Sleep or stop: whichever comes first.
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            let Some(owner) = owner.upgrade() else { return };
            collect(owner, ttl);
        }
    });
}
