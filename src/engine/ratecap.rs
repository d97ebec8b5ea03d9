//! The tarpit's reply rate cap (`tarpit_rate RATE [burst B] [net RATE] [net_burst B]`): token
//! buckets on the TCP replies the tarpit sends (SYN+ACKs and persist ACKs), one global and,
//! optionally, one per source network (/24 for IPv4, /64 for IPv6), so a flood of spoofed SYNs
//! cannot turn the tarpit into a reflector. Pure: time is an input.
//!
//! The per-network buckets are a fixed array indexed by a keyed hash of the network
//! ([`NET_BUCKETS`] of them): bounded memory whatever the number of sources; two networks that
//! share a bucket share its budget (conservative), and without the key nobody can aim at a
//! bucket.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Number of per-network buckets.
pub const NET_BUCKETS: usize = 4096;

/// The `tarpit_rate` setting. Rates are replies per second; a burst is the bucket's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateConfig {
    pub rate: u32,
    pub burst: u32,
    /// Per source network; 0 = no per-network cap.
    pub net_rate: u32,
    pub net_burst: u32,
}

impl fmt::Display for RateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} burst {}", self.rate, self.burst)?;
        if self.net_rate > 0 {
            write!(f, " net {} net_burst {}", self.net_rate, self.net_burst)?;
        }
        Ok(())
    }
}

const NANOS: u128 = 1_000_000_000;

/// A token bucket: `rate` tokens a second up to `burst`, kept in nano-tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    /// Nano-tokens.
    level: u128,
    at: Duration,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: u32, burst: u32, now: Duration) -> TokenBucket {
        let burst = burst.max(1);
        TokenBucket {
            rate,
            burst,
            level: u128::from(burst) * NANOS,
            at: now,
        }
    }

    /// Takes one token at `now` if there is one. Time going backwards adds nothing.
    pub fn take(&mut self, now: Duration) -> bool {
        let cap = u128::from(self.burst) * NANOS;
        if now > self.at {
            let dt = (now - self.at).as_nanos();
            self.level = cap.min(
                self.level
                    .saturating_add(dt.saturating_mul(u128::from(self.rate))),
            );
            self.at = now;
        }
        if self.level >= NANOS {
            self.level -= NANOS;
            true
        } else {
            false
        }
    }
}

/// The global bucket and the per-network buckets.
#[derive(Debug, Clone)]
pub struct RateCap {
    cfg: RateConfig,
    key: [u8; 16],
    global: TokenBucket,
    /// Lazily created per-network buckets (`None` until a network's first reply).
    nets: Vec<Option<TokenBucket>>,
}

/// Which bucket refused a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Global,
    Net,
}

impl RateCap {
    pub fn new(cfg: RateConfig, key: [u8; 16], now: Duration) -> RateCap {
        RateCap {
            cfg,
            key,
            global: TokenBucket::new(cfg.rate, cfg.burst, now),
            nets: if cfg.net_rate > 0 {
                vec![None; NET_BUCKETS]
            } else {
                Vec::new()
            },
        }
    }

    pub fn config(&self) -> &RateConfig {
        &self.cfg
    }

    /// The network a source belongs to for the per-network cap: its /24 or /64.
    pub fn net_of(src: IpAddr) -> IpAddr {
        super::capture::mask(src, if src.is_ipv4() { 24 } else { 64 })
    }

    fn slot(&self, src: IpAddr) -> usize {
        let net = Self::net_of(src);
        let h = match net {
            IpAddr::V4(a) => super::tarpit::siphash24(&self.key, &a.octets()),
            IpAddr::V6(a) => super::tarpit::siphash24(&self.key, &a.octets()[..8]),
        };
        (h % NET_BUCKETS as u64) as usize
    }

    /// May the tarpit send one more reply to `dst` (the client, the frame's source) at `now`?
    /// The per-network bucket is asked first, so a network over its cap does not use up the
    /// global budget.
    pub fn allow(&mut self, dst: IpAddr, now: Duration) -> Result<(), Refused> {
        if self.cfg.net_rate > 0 {
            let i = self.slot(dst);
            let (rate, burst) = (self.cfg.net_rate, self.cfg.net_burst);
            if let Some(b) = self.nets.get_mut(i) {
                let b = b.get_or_insert_with(|| TokenBucket::new(rate, burst, now));
                if !b.take(now) {
                    return Err(Refused::Net);
                }
            }
        }
        if self.global.take(now) {
            Ok(())
        } else {
            Err(Refused::Global)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(10, 5, ms(0));
        assert_eq!((0..20).filter(|_| b.take(ms(0))).count(), 5);
        assert!(!b.take(ms(99)));
        assert!(b.take(ms(100)), "one token per 100 ms at 10/s");
        assert!(!b.take(ms(150)));
        // a long pause refills up to the burst only
        assert_eq!((0..20).filter(|_| b.take(ms(60_000))).count(), 5);
        // time going backwards adds nothing
        assert!(!b.take(ms(1)));
    }

    #[test]
    fn the_global_cap_bounds_a_burst_of_spoofed_sources() {
        let cfg = RateConfig {
            rate: 100,
            burst: 10,
            net_rate: 0,
            net_burst: 0,
        };
        let mut r = RateCap::new(cfg, [7; 16], ms(0));
        let ok = (0..1000u32)
            .filter(|i| {
                let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i * 256));
                r.allow(src, ms(u64::from(*i) / 10)).is_ok()
            })
            .count();
        // 10 at once, then 100/s over 99.9 ms: 10 more at most
        assert!((10..=20).contains(&ok), "{ok}");
    }

    #[test]
    fn one_network_over_its_cap_leaves_the_global_budget_to_others() {
        let cfg = RateConfig {
            rate: 1000,
            burst: 20,
            net_rate: 1,
            net_burst: 2,
        };
        let mut r = RateCap::new(cfg, [1; 16], ms(0));
        let flood: Vec<bool> = (1..=50u8)
            .map(|h| {
                r.allow(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, h)), ms(0))
                    .is_ok()
            })
            .collect();
        assert_eq!(flood.iter().filter(|x| **x).count(), 2);
        assert_eq!(
            r.allow("192.0.2.77".parse().unwrap(), ms(0)),
            Err(Refused::Net)
        );
        assert!(r.allow("198.51.100.1".parse().unwrap(), ms(0)).is_ok());
        // IPv6: one /64
        assert!(r.allow("2001:db8::1".parse().unwrap(), ms(0)).is_ok());
        assert!(r.allow("2001:db8::2".parse().unwrap(), ms(0)).is_ok());
        assert_eq!(
            r.allow("2001:db8::3".parse().unwrap(), ms(0)),
            Err(Refused::Net)
        );
    }
}
