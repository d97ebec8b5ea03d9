//! Live captures with libpcap inside a lab namespace, written to a pcap file (pcap-file).
//!
//! The handle is opened on a thread inside the namespace (promiscuous, immediate mode, full
//! snap length, BPF filter) and read on a plain thread. libpcap's read timeout never fires on an
//! idle interface (lab-notes pitfall 2), so `stop()` wakes the reader with `breakloop()`, then
//! drains what the kernel already queued in non-blocking mode, so frames sent just before
//! `stop()` are not lost.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

use crate::netns::in_netns;

/// Counters of a finished capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames written to the pcap file.
    pub frames: u64,
    /// Frames the kernel or the interface dropped (libpcap `ps_drop + ps_ifdrop`).
    pub dropped: u64,
}

/// A running capture; `stop()` it to finish the file (Drop stops it too, ignoring errors).
pub struct Capture {
    /// Namespace and interface captured, for messages.
    pub ns: String,
    pub iface: String,
    /// The pcap file being written.
    pub path: PathBuf,
    breaker: Option<pcap::BreakLoop>,
    thread: Option<JoinHandle<Result<CaptureStats>>>,
}

/// Snap length: whole frames.
const SNAPLEN: i32 = 65535;
/// Time given to frames already on their way through the kernel before the reader is stopped.
const SETTLE: Duration = Duration::from_millis(20);

/// Compiles a BPF filter (tcpdump syntax) for Ethernet frames with libpcap, without a device
/// (what `pen-lab check` does, so a typo fails at check time, not half-way through a run).
/// The error is libpcap's, kept as it is.
pub fn check_filter(filter: &str) -> Result<(), pcap::Error> {
    if filter.trim().is_empty() {
        return Ok(());
    }
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET)?;
    cap.compile(filter, true).map(|_| ())
}

/// Starts capturing `iface` of namespace `ns` with BPF filter `bpf` ("" captures everything)
/// into the pcap file `out` (parent directories are created). Returns once the handle is
/// active: frames sent after this call are captured.
pub fn start_capture(ns: &str, iface: &str, bpf: &str, out: &Path) -> Result<Capture> {
    let what = format!("capture on {iface:?} in namespace {ns:?}");
    if let Some(dir) = out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{what}: creating directory {}", dir.display()))?;
    }
    let file = File::create(out)
        .with_context(|| format!("{what}: cannot create pcap file {}", out.display()))?;
    let (dev, filter) = (iface.to_string(), bpf.to_string());
    let mut cap = in_netns(ns, move || -> Result<pcap::Capture<pcap::Active>> {
        let mut c = pcap::Capture::from_device(dev.as_str())
            .map_err(|e| anyhow!("{e}"))?
            .promisc(true)
            .immediate_mode(true)
            .snaplen(SNAPLEN)
            .timeout(100)
            .open()
            .map_err(|e| anyhow!("cannot open the interface: {e}"))?;
        if !filter.is_empty() {
            c.filter(&filter, true)
                .map_err(|e| anyhow!("BPF filter {filter:?} rejected: {e}"))?;
        }
        Ok(c)
    })?
    .with_context(|| what.clone())?;
    let linktype = cap.get_datalink().0;
    let datalink = DataLink::from(u32::try_from(linktype).unwrap_or(1));
    let header = PcapHeader {
        datalink,
        snaplen: SNAPLEN as u32,
        ..PcapHeader::default()
    };
    let writer = PcapWriter::with_header(BufWriter::new(file), header)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("{what}: writing the pcap header to {}", out.display()))?;
    let breaker = cap.breakloop_handle();
    let label = what.clone();
    let thread = std::thread::Builder::new()
        .name("pcap-reader".into())
        .spawn(move || read_loop(cap, writer, &label))
        .with_context(|| format!("{what}: spawning the reader thread"))?;
    Ok(Capture {
        ns: ns.to_string(),
        iface: iface.to_string(),
        path: out.to_path_buf(),
        breaker: Some(breaker),
        thread: Some(thread),
    })
}

fn write_one(
    w: &mut PcapWriter<BufWriter<File>>,
    p: &pcap::Packet<'_>,
    frames: &mut u64,
    what: &str,
) -> Result<()> {
    let ts = packet_time(p.header);
    w.write_packet(&PcapPacket::new(ts, p.header.len, p.data))
        .map_err(|e| anyhow!("{what}: writing a frame: {e}"))?;
    *frames += 1;
    Ok(())
}

fn read_loop(
    mut cap: pcap::Capture<pcap::Active>,
    mut w: PcapWriter<BufWriter<File>>,
    what: &str,
) -> Result<CaptureStats> {
    let mut frames = 0u64;
    loop {
        match cap.next_packet() {
            Ok(p) => write_one(&mut w, &p, &mut frames, what)?,
            Err(pcap::Error::TimeoutExpired) => continue,
            Err(pcap::Error::NoMorePackets) => break, // breakloop()
            Err(e) => bail!("{what}: reading: {e}"),
        }
    }
    // Drain what is already queued without blocking.
    let mut cap = cap
        .setnonblock()
        .map_err(|e| anyhow!("{what}: switching to non-blocking mode: {e}"))?;
    for _ in 0..1_000_000 {
        match cap.next_packet() {
            Ok(p) => write_one(&mut w, &p, &mut frames, what)?,
            Err(_) => break,
        }
    }
    let stats = cap.stats().map_err(|e| anyhow!("{what}: stats: {e}"))?;
    let mut inner = w.into_writer();
    std::io::Write::flush(&mut inner).with_context(|| format!("{what}: flushing the pcap file"))?;
    Ok(CaptureStats {
        frames,
        dropped: u64::from(stats.dropped) + u64::from(stats.if_dropped),
    })
}

impl Capture {
    /// Stops the capture, finishes the pcap file and returns its counters.
    pub fn stop(mut self) -> Result<CaptureStats> {
        self.finish()
    }

    fn finish(&mut self) -> Result<CaptureStats> {
        let Some(thread) = self.thread.take() else {
            return Ok(CaptureStats::default());
        };
        std::thread::sleep(SETTLE);
        if let Some(b) = self.breaker.take() {
            b.breakloop();
        }
        match thread.join() {
            Ok(r) => r.with_context(|| format!("pcap file {}", self.path.display())),
            Err(_) => bail!(
                "the capture thread for {:?} in {:?} panicked",
                self.iface,
                self.ns
            ),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// A libpcap record's time stamp (microseconds) as a duration since the epoch; nonsense
/// fields (negative, out of range) become 0 or the largest valid value, never a panic.
pub fn packet_time(h: &pcap::PacketHeader) -> Duration {
    Duration::new(
        u64::try_from(h.ts.tv_sec).unwrap_or(0),
        u32::try_from(h.ts.tv_usec)
            .unwrap_or(0)
            .saturating_mul(1000)
            .min(999_999_999),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_keeps_libpcaps_error() {
        assert!(check_filter("tcp port 80").is_ok());
        assert!(check_filter("  ").is_ok());
        let err = check_filter("tcp prot 80").unwrap_err();
        assert!(matches!(err, pcap::Error::PcapError(_)), "{err:?}");
        assert!(!err.to_string().is_empty());
    }
}
