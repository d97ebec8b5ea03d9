//! Frame selection by a BPF filter (tcpdump syntax) for [`crate::sim::trace`]: the thin shell
//! around libpcap that the pure trace model takes as a `FnMut(link type, frame) -> bool`.
//!
//! libpcap compiles the expression offline (`pcap_open_dead` + `pcap_compile`, no device, no
//! root) once per link type met in the capture (a pcapng file may mix them), and runs it over
//! each frame (`pcap_offline_filter`). An expression libpcap refuses is an error naming the
//! expression and libpcap's message; one that compiles for Ethernet but not for a link type
//! the capture has (`ether host ...` over raw IP) is reported after the parse by
//! [`FrameFilter::error`].

use std::collections::HashMap;
use std::path::Path;

use crate::sim::trace::{ParseOptions, Trace};

/// Reads a capture as [`Trace::open`] does, keeping only the frames `filter` (a BPF
/// expression) matches when one is given. The error names the file or the expression.
pub fn open_trace(path: &Path, opts: &ParseOptions, filter: Option<&str>) -> Result<Trace, String> {
    let Some(expr) = filter else {
        return Trace::open(path, opts).map_err(|e| e.to_string());
    };
    let mut f = FrameFilter::new(expr)?;
    let t =
        Trace::open_filtered(path, opts, &mut |l, b| f.matches(l, b)).map_err(|e| e.to_string())?;
    match f.error() {
        Some(e) => Err(format!("{}: {e}", path.display())),
        None => Ok(t),
    }
}

/// A compiled filter, per link type.
pub struct FrameFilter {
    expr: String,
    programs: HashMap<u32, Result<pcap::BpfProgram, String>>,
}

/// The `DLT_` value libpcap's compiler takes for a pcap/pcapng `LINKTYPE_` value: the same
/// number, except raw IP (LINKTYPE_RAW 101 is DLT_RAW 12 on Linux).
fn dlt_of(linktype: u32) -> i32 {
    match linktype {
        101 => 12,
        l => i32::try_from(l).unwrap_or(-1),
    }
}

fn compile(expr: &str, linktype: u32) -> Result<pcap::BpfProgram, String> {
    let dead = pcap::Capture::dead(pcap::Linktype(dlt_of(linktype)))
        .map_err(|e| format!("filter {expr:?}: libpcap: {e}"))?;
    dead.compile(expr, true).map_err(|e| {
        format!(
            "filter {expr:?}: not a valid BPF expression for link type {linktype}: {e} \
             (tcpdump syntax, e.g. \"udp port 53\" or \"tcp and host 192.0.2.80\")"
        )
    })
}

impl FrameFilter {
    /// Compiles `expr` for Ethernet now (so a typo fails at once) and for other link types
    /// when their first frame comes.
    pub fn new(expr: &str) -> Result<FrameFilter, String> {
        let eth = compile(expr, 1)?;
        let mut programs = HashMap::new();
        programs.insert(1, Ok(eth));
        Ok(FrameFilter {
            expr: expr.to_string(),
            programs,
        })
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Does the frame (of `linktype`) match? A link type the expression does not compile for
    /// matches nothing, and [`FrameFilter::error`] says why.
    pub fn matches(&mut self, linktype: u32, frame: &[u8]) -> bool {
        let expr = &self.expr;
        match self
            .programs
            .entry(linktype)
            .or_insert_with(|| compile(expr, linktype))
        {
            Ok(p) => p.filter(frame),
            Err(_) => false,
        }
    }

    /// The first link type met that the expression does not compile for.
    pub fn error(&self) -> Option<String> {
        let mut errs: Vec<(&u32, &String)> = self
            .programs
            .iter()
            .filter_map(|(l, p)| p.as_ref().err().map(|e| (l, e)))
            .collect();
        errs.sort();
        errs.first().map(|(_, e)| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&5353u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&8u16.to_be_bytes());
        f
    }

    #[test]
    fn matches_per_link_type() {
        let mut f = FrameFilter::new("udp dst port 53").unwrap();
        assert!(f.matches(1, &udp_frame(53)));
        assert!(!f.matches(1, &udp_frame(54)));
        // The same datagram as raw IP (LINKTYPE_RAW): compiled for that link type.
        assert!(f.matches(101, &udp_frame(53)[14..]));
        assert!(!f.matches(101, &udp_frame(54)[14..]));
        assert_eq!(f.error(), None);
    }

    #[test]
    fn a_bad_expression_names_itself_and_libpcaps_message() {
        let e = FrameFilter::new("udp prot 53").err().unwrap();
        assert!(e.contains("\"udp prot 53\""), "{e}");
        assert!(e.contains("syntax error") || e.contains("prot"), "{e}");
    }

    #[test]
    fn an_expression_wrong_for_a_link_type_is_reported() {
        let mut f = FrameFilter::new("ether host 02:00:00:00:00:01").unwrap();
        assert!(!f.matches(101, &udp_frame(53)[14..]));
        let e = f.error().unwrap();
        assert!(e.contains("link type 101"), "{e}");
    }
}
