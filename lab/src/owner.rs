//! Who owns a lab run: every [`Topology`](crate::topology::Topology) records the PID and the
//! start time of the process that builds it (`/run/pen-lab/owners/<prefix>`) before it creates
//! its first namespace, and removes the record when it has removed its namespaces. `pen-lab
//! clean` removes only the namespaces of runs whose owner is gone (the PID no longer exists, or
//! now belongs to a process that started at another time), so it never tears down a live run.
//!
//! The decisions ([`parse_record`], [`start_time`], [`plan_clean`]) are pure; the IO
//! functions below them only read and write the small record files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the records live (tmpfs: gone after a reboot, as the namespaces are).
pub const OWNER_DIR: &str = "/run/pen-lab/owners";

/// The process that owns a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot): tells a reused PID apart.
    pub start: u64,
}

/// The text of a record.
pub fn format_record(o: Owner) -> String {
    format!("pid {}\nstart {}\n", o.pid, o.start)
}

/// Parses a record; `None` if it is not one (a damaged record counts as "owner gone").
pub fn parse_record(text: &str) -> Option<Owner> {
    let (mut pid, mut start) = (None, None);
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("pid", v)) => pid = v.trim().parse().ok(),
            Some(("start", v)) => start = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some(Owner {
        pid: pid?,
        start: start?,
    })
}

/// The start time (field 22) from the text of `/proc/PID/stat`, `None` for a zombie or an
/// unreadable line. The command name (field 2) may contain spaces and parentheses, so the
/// fields are counted after the last `)`.
pub fn start_time(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is the first.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}

/// What `clean` does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanPlan {
    /// Namespaces to remove (their owner is gone, or they never had one).
    pub remove: Vec<String>,
    /// Runs left alone because their owner still runs: (run prefix, owner PID).
    pub live: Vec<(String, u32)>,
    /// Records of runs whose owner is gone, to delete with their namespaces.
    pub stale_records: Vec<String>,
}

/// Decides what to clean. `namespaces`: the existing `{root}-*` namespaces; `records`: run
/// prefix → its owner (`None`: unreadable record); `alive(owner)`: is that process still the
/// owner. A namespace belongs to the run with the longest prefix `P` such that the name
/// starts with `P-`; a namespace of no recorded run is a leftover of a run that died before
/// pen-lab recorded owners, and is removed. `only`: a run prefix (`clean <run-id>`).
pub fn plan_clean(
    namespaces: &[String],
    records: &[(String, Option<Owner>)],
    alive: impl Fn(&Owner) -> bool,
    only: Option<&str>,
) -> CleanPlan {
    let run_of = |ns: &str| -> Option<&(String, Option<Owner>)> {
        records
            .iter()
            .filter(|(p, _)| {
                ns.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('-'))
            })
            .max_by_key(|(p, _)| p.len())
    };
    let in_scope =
        |ns: &str| only.is_none_or(|r| ns.strip_prefix(r).is_some_and(|x| x.starts_with('-')));
    let mut plan = CleanPlan::default();
    for ns in namespaces.iter().filter(|n| in_scope(n)) {
        match run_of(ns) {
            Some((run, Some(o))) if alive(o) => {
                if !plan.live.iter().any(|(r, _)| r == run) {
                    plan.live.push((run.clone(), o.pid));
                }
            }
            _ => plan.remove.push(ns.clone()),
        }
    }
    for (run, o) in records {
        let scoped = only.is_none_or(|r| r == run);
        if scoped && !o.as_ref().is_some_and(&alive) {
            plan.stale_records.push(run.clone());
        }
    }
    plan
}

fn record_path(prefix: &str) -> PathBuf {
    Path::new(OWNER_DIR).join(prefix)
}

/// Records this process as the owner of run `prefix`.
pub fn record(prefix: &str) -> Result<()> {
    crate::netns::validate_ns_name(prefix)?;
    let me = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let start =
        start_time(&stat).with_context(|| format!("no start time in /proc/self/stat: {stat:?}"))?;
    std::fs::create_dir_all(OWNER_DIR).with_context(|| format!("creating {OWNER_DIR}"))?;
    let path = record_path(prefix);
    std::fs::write(&path, format_record(Owner { pid: me, start }))
        .with_context(|| format!("writing the run owner record {}", path.display()))
}

/// Removes the record of run `prefix` (a missing record is fine).
pub fn forget(prefix: &str) -> Result<()> {
    if crate::netns::validate_ns_name(prefix).is_err() {
        return Ok(());
    }
    match std::fs::remove_file(record_path(prefix)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", record_path(prefix).display())),
    }
}

/// Every record: run prefix → owner (`None` when unreadable).
pub fn read_all() -> Result<Vec<(String, Option<Owner>)>> {
    let dir = match std::fs::read_dir(OWNER_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {OWNER_DIR}")),
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path())
            .ok()
            .as_deref()
            .and_then(parse_record);
        out.push((name, owner));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Is `o` still running (same PID, same start time)?
pub fn alive(o: &Owner) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", o.pid))
        .ok()
        .as_deref()
        .and_then(start_time)
        == Some(o.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damaged_ones_are_none() {
        let o = Owner {
            pid: 4242,
            start: 123_456,
        };
        assert_eq!(parse_record(&format_record(o)), Some(o));
        assert_eq!(parse_record("pid 12\n"), None);
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "1234 (pen lab) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67";
        assert_eq!(start_time(stat), Some(987_654));
        let zombie = "1234 (sh) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(start_time(zombie), None);
        assert_eq!(start_time("nonsense"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(start_time(&own).is_some());
    }

    fn ns(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clean_leaves_live_runs_alone_and_removes_the_rest() {
        let live = Owner { pid: 10, start: 1 };
        let dead = Owner { pid: 11, start: 2 };
        let records = vec![
            ("penlab-aaaaaa".to_string(), Some(live)),
            ("penlab-bbbbbb".to_string(), Some(dead)),
            ("penlab-dddddd".to_string(), None),
        ];
        let names = ns(&[
            "penlab-aaaaaa-client",
            "penlab-aaaaaa-pen",
            "penlab-bbbbbb-client",
            "penlab-cccccc-client",
            "penlab-dddddd-x",
        ]);
        let is_live = |o: &Owner| *o == live;
        let p = plan_clean(&names, &records, is_live, None);
        assert_eq!(p.live, vec![("penlab-aaaaaa".to_string(), 10)]);
        assert_eq!(
            p.remove,
            ns(&[
                "penlab-bbbbbb-client",
                "penlab-cccccc-client",
                "penlab-dddddd-x"
            ])
        );
        assert_eq!(p.stale_records, ns(&["penlab-bbbbbb", "penlab-dddddd"]));

        // One run only.
        let p = plan_clean(&names, &records, is_live, Some("penlab-bbbbbb"));
        assert_eq!(p.remove, ns(&["penlab-bbbbbb-client"]));
        assert!(p.live.is_empty());
        assert_eq!(p.stale_records, ns(&["penlab-bbbbbb"]));
        let p = plan_clean(&names, &records, is_live, Some("penlab-aaaaaa"));
        assert!(p.remove.is_empty());
        assert_eq!(p.live, vec![("penlab-aaaaaa".to_string(), 10)]);
        // A run id is a whole prefix: "penlab-aa" is not "penlab-aaaaaa".
        let p = plan_clean(&names, &records, is_live, Some("penlab-aa"));
        assert!(p.remove.is_empty() && p.live.is_empty());
    }

    #[test]
    fn the_longest_recorded_prefix_owns_a_namespace() {
        let live = Owner { pid: 10, start: 1 };
        let records = vec![
            ("penlabio-abc".to_string(), None),
            ("penlabio-abc-run".to_string(), Some(live)),
        ];
        let p = plan_clean(&ns(&["penlabio-abc-run-x"]), &records, |o| *o == live, None);
        assert!(p.remove.is_empty());
    }
}
