//! The expiry task: limits and sources from the context, servers' new addresses, idle flows
//! (with what the kernel forwarded for offloaded ones read first), the upstream pools shrunk
//! to what live flows use, and the status published for the reports.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Inner, KERNEL_READS_PER_PUBLISH, Lazy, PUBLISH_EVERY, TICK, UdpContext, UdpStatus, lock,
};

pub(super) async fn expiry_loop<C: UdpContext>(inner: Arc<Inner<C>>) {
    let mut last_publish: Option<Duration> = None;
    // Flows were created since the last publication.
    let mut dirty = false;
    // Transparent flows refused for the client socket bound, as of the last tick.
    let mut refused_seen = 0u64;
    loop {
        let now = inner.ctx.now();
        let limits = inner.ctx.limits();
        *lock(&inner.source) = limits.source;
        let transparent = inner.ctx.transparent();
        let publish = last_publish.is_none_or(|at| now.saturating_sub(at) >= PUBLISH_EVERY);
        if !inner.kernel.watching_routes() {
            // No route notifications: route look-ups are trusted for one tick at most.
            inner.kernel.routes_changed();
        }
        // What the kernel forwarded, outside the table's lock: the flows the expiry below
        // judges, and (when publishing) a bounded number of the others in turn, so that
        // counters, idle times and the eviction order of kernel flows stay fresh.
        inner.kernel.read_activity(&inner.table, now, |t| {
            let mut flows = t.offloaded_due(now);
            if publish {
                flows.extend(t.offloaded_turn(KERNEL_READS_PER_PUBLISH));
            }
            flows
        });
        let next = {
            let mut table = lock(&inner.table);
            table.set_sources(transparent, limits.source);
            if table.max_flows() != limits.max_flows || table.idle() != limits.idle {
                table.set_limits(limits.max_flows, limits.idle);
            }
            let mut sel = Lazy(&inner.ctx);
            let moved = table.follow_servers(now, &mut sel);
            if moved > 0 {
                tracing::info!(
                    flows = moved,
                    "udp flows closed: their server's address changed"
                );
            }
            let n = table.expire(now, &mut sel);
            let refused = table.stats().skipped_no_client_socket;
            if refused > refused_seen {
                tracing::warn!(
                    refused = refused - refused_seen,
                    open = table.client_sockets(),
                    bound = table.max_client_sockets(),
                    "udp: new transparent flows refused: the sockets bound to clients' addresses \
                     are at their bound (conn_max); raise conn_max for more"
                );
                refused_seen = refused;
            }
            if n > 0 {
                tracing::debug!(expired = n, flows = table.len(), "udp flows expired");
            }
            // Copying the flow list costs O(flows): at most every PUBLISH_EVERY.
            let status = publish.then(|| UdpStatus::of(&table, now));
            (table.poll_timeout(), status)
        };
        let (next, status) = next;
        // Flows that ended leave the kernel.
        inner.kernel.drain(&inner.table);
        // Upstream sockets no flow uses any more are closed. Lock order pools, then table (no
        // path holds the table while it takes the pools), so no flow can be handed a socket
        // between the table's decision and the pool's truncation.
        {
            let mut pools = lock(&inner.pools);
            let mut table = lock(&inner.table);
            if let Some(sizes) = table.shrink_upstreams() {
                pools.truncate(sizes);
                tracing::debug!(v4 = sizes[0], v6 = sizes[1], "udp upstream pools shrank");
            }
            table.shrink_client_pools();
            // Also closes what a flow removed meanwhile by another thread (`close N`) left.
            let closed = pools.sync_clients(|ip| table.client_pool(ip));
            if closed > 0 {
                tracing::debug!(
                    closed,
                    open = table.client_sockets(),
                    "udp sockets bound to clients' addresses closed"
                );
            }
        }
        if let Some(status) = status {
            last_publish = Some(now);
            dirty = false;
            inner.ctx.publish(status);
        }
        let mut wait = next.map_or(TICK, |at| at.saturating_sub(now)).min(TICK);
        if dirty {
            wait = wait.min(PUBLISH_EVERY);
        }
        let deadline = tokio::time::Instant::now() + wait.max(Duration::from_millis(1));
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = inner.created.notified() => {
                // New flows: publish them soon, but no more often than PUBLISH_EVERY.
                dirty = true;
                let soon = tokio::time::Instant::now() + PUBLISH_EVERY;
                tokio::time::sleep_until(deadline.min(soon)).await;
            }
        }
    }
}
