//! Where the daemon's log lines go and how they look.
//!
//! - Foreground (`-f`), stderr a terminal: timestamped lines with ANSI colour.
//! - stderr a file or pipe: the same lines without colour.
//! - stderr connected to the journal (`$JOURNAL_STREAM` names stderr's device and inode, as
//!   systemd sets it for `StandardError=journal`): plain lines without timestamp, colour or
//!   level word, each prefixed with its syslog priority `<N>` (sd-daemon(3)); journald adds
//!   the time and keeps the priority.
//! - Daemonized (no `-f`) otherwise: syslog (facility user, tag `pen`, with the pid), as C Pen;
//!   the priority follows the level (error 3, warning 4, info 6, debug and trace 7). A
//!   redirected stderr (`pen ... 2>file`) keeps receiving the timestamped lines too.
//!
//! [`choose`] and [`priority`] are pure; [`layers`] builds the tracing layers and
//! [`daemonized`] switches the syslog writer on once pen has detached.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;

/// How the log is written, decided once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Timestamped lines on stderr, colour when `ansi`.
    Stderr { ansi: bool },
    /// `<N>`-prefixed plain lines on stderr for journald.
    Journal,
    /// Syslog once daemonized; stderr as [`Mode::Stderr`] before that, and after it unless
    /// stderr is a terminal.
    Syslog { ansi: bool },
}

/// Picks the [`Mode`]: `journal_stream` is `$JOURNAL_STREAM` (`DEV:INODE`), `stderr_id`
/// stderr's device and inode (None when it cannot be read).
pub fn choose(
    foreground: bool,
    stderr_tty: bool,
    journal_stream: Option<&str>,
    stderr_id: Option<(u64, u64)>,
) -> Mode {
    let journal = match (journal_stream.and_then(parse_journal_stream), stderr_id) {
        (Some(j), Some(s)) => j == s,
        _ => false,
    };
    if journal {
        Mode::Journal
    } else if foreground {
        Mode::Stderr { ansi: stderr_tty }
    } else {
        Mode::Syslog { ansi: stderr_tty }
    }
}

/// `DEV:INODE` as systemd writes `$JOURNAL_STREAM` (both decimal).
fn parse_journal_stream(s: &str) -> Option<(u64, u64)> {
    let (d, i) = s.trim().split_once(':')?;
    Some((d.parse().ok()?, i.parse().ok()?))
}

/// The syslog priority of a level (sd-daemon(3) prefix and syslog(3) level).
pub fn priority(level: &Level) -> i32 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Set by [`daemonized`]: from then on the syslog writer sends.
static DAEMONIZED: AtomicBool = AtomicBool::new(false);
/// stderr was a terminal at start-up (a daemon does not write to a terminal it left).
static STDERR_TTY: AtomicBool = AtomicBool::new(false);

/// pen has detached from its terminal: syslog from now on (in [`Mode::Syslog`]).
pub fn daemonized() {
    DAEMONIZED.store(true, Ordering::SeqCst);
}

/// The [`Mode`] for this process: reads `$JOURNAL_STREAM` and stderr.
pub fn mode_for_process(foreground: bool) -> Mode {
    use std::os::unix::fs::MetadataExt;
    let tty = io::stderr().is_terminal();
    STDERR_TTY.store(tty, Ordering::SeqCst);
    let id = std::fs::metadata("/proc/self/fd/2")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let js = std::env::var("JOURNAL_STREAM").ok();
    choose(foreground, tty, js.as_deref(), id)
}

/// The layers for `mode`, to stack on a registry.
pub fn layers<S>(mode: Mode) -> Vec<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let timestamped = |ansi: bool, quiet_on_tty: bool| {
        tracing_subscriber::fmt::layer()
            .with_writer(StderrWriter { quiet_on_tty })
            .with_target(false)
            .with_ansi(ansi)
            .boxed()
    };
    let plain = |w: PlainWriter| {
        tracing_subscriber::fmt::layer()
            .with_writer(w)
            .with_target(false)
            .with_ansi(false)
            .with_level(false)
            .without_time()
            .boxed()
    };
    match mode {
        Mode::Stderr { ansi } => vec![timestamped(ansi, false)],
        Mode::Journal => vec![plain(PlainWriter::Journal)],
        Mode::Syslog { ansi } => vec![timestamped(ansi, true), plain(PlainWriter::Syslog)],
    }
}

/// stderr; with `quiet_on_tty`, nothing once daemonized if stderr is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct StderrWriter {
    quiet_on_tty: bool,
}

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = Box<dyn Write + 'a>;
    fn make_writer(&'a self) -> Self::Writer {
        if self.quiet_on_tty
            && DAEMONIZED.load(Ordering::Relaxed)
            && STDERR_TTY.load(Ordering::Relaxed)
        {
            Box::new(io::sink())
        } else {
            Box::new(io::stderr())
        }
    }
}

/// Lines without timestamp: to journald (stderr, `<N>` prefix) or to syslog.
#[derive(Debug, Clone, Copy)]
pub enum PlainWriter {
    Journal,
    Syslog,
}

impl<'a> MakeWriter<'a> for PlainWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.writer(6)
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.writer(priority(meta.level()))
    }
}

impl PlainWriter {
    fn writer(&self, prio: i32) -> LineWriter {
        match self {
            PlainWriter::Journal => LineWriter::Journal(prio),
            PlainWriter::Syslog if DAEMONIZED.load(Ordering::Relaxed) => LineWriter::Syslog(prio),
            PlainWriter::Syslog => LineWriter::Nothing,
        }
    }
}

/// One formatted event (the fmt layer writes each event with one `write_all`).
pub enum LineWriter {
    Journal(i32),
    Syslog(i32),
    Nothing,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LineWriter::Journal(p) => {
                let mut line = journal_line(*p, buf);
                line.push(b'\n');
                io::stderr().write_all(&line)?;
            }
            LineWriter::Syslog(p) => {
                let text = String::from_utf8_lossy(buf);
                crate::sys::process::syslog(*p, text.trim_end());
            }
            LineWriter::Nothing => {}
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `<N>text` (trailing newline removed; an embedded newline continues with the prefix, so a
/// multi-line message keeps its priority in the journal).
pub fn journal_line(prio: i32, buf: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(buf);
    let mut out = String::new();
    for (i, l) in text.trim_end_matches('\n').split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("<{prio}>{l}"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_recognised_only_when_it_is_stderr() {
        let s = Some((64_769, 1234));
        assert_eq!(choose(true, false, Some("64769:1234"), s), Mode::Journal);
        assert_eq!(choose(false, true, Some("64769:1234"), s), Mode::Journal);
        // Inherited from a parent whose stderr was the journal: not ours.
        assert_eq!(
            choose(true, false, Some("64769:99"), s),
            Mode::Stderr { ansi: false }
        );
        assert_eq!(
            choose(true, true, Some("garbage"), s),
            Mode::Stderr { ansi: true }
        );
        assert_eq!(choose(true, true, None, s), Mode::Stderr { ansi: true });
        assert_eq!(choose(false, false, None, s), Mode::Syslog { ansi: false });
        assert_eq!(
            choose(false, false, Some("1:2"), None),
            Mode::Syslog { ansi: false }
        );
    }

    #[test]
    fn priorities_and_journal_prefixes() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
        assert_eq!(journal_line(4, b"late\n"), b"<4>late");
        assert_eq!(journal_line(6, b"a\nb\n"), b"<6>a\n<6>b");
    }
}
