//! `-H` / `http`: X-Forwarded-For and X-Forwarded-Proto insertion. Pure.
//!
//! [`Rewriter`] is a streaming state machine over the client → server byte stream. Bytes go in
//! as they were read ([`Rewriter::feed`]), in any split; the bytes to send to the server come
//! out. Every HTTP/1.x request head on the connection gets
//!
//! - `X-Forwarded-For: <client>`, or `, <client>` appended to the last existing
//!   X-Forwarded-For field (the list keeps the proxies the request went through, in order);
//! - `X-Forwarded-Proto: http|https`, replacing any the client sent (only pen knows whether the
//!   client spoke TLS to it; a client-supplied value is not trustworthy).
//!
//! Both fields go right before the blank line that ends the head. Bodies pass untouched: the
//! machine follows `Content-Length` and `Transfer-Encoding: chunked` framing to find where the
//! next (pipelined or keep-alive) request starts. Only a request head is ever buffered.
//!
//! Pass-through: anything that does not start like an HTTP/1.x request line (binary data, TLS,
//! the HTTP/2 preface), a head larger than the limit, ambiguous framing (`Content-Length`
//! together with `Transfer-Encoding`, conflicting or malformed lengths, a non-chunked transfer
//! coding), `CONNECT` and `Upgrade` requests switch the connection to pass-through for good:
//! the rest of the stream is forwarded byte for byte, never cut or altered.

/// Largest request head that is rewritten (request line, fields and the blank line). C Pen
/// works on one 32 KiB read; 64 KiB leaves room for large cookies.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// Longest method token accepted as the start of a request line.
const METHOD_MAX: usize = 32;

/// Longest chunk-size or trailer line followed before giving up on the framing.
const LINE_MAX: usize = 8 * 1024;

/// What the client spoke to pen: the value of `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http,
    Https,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }
}

/// Where the machine is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Passing this many body bytes (`Content-Length`).
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Passing this many chunk-data bytes.
    ChunkData(u64),
    /// Reading the line break after chunk data.
    ChunkEnd,
    /// Reading trailer fields after the last chunk, up to the blank line.
    Trailers,
    /// Passing everything untouched, for good.
    Opaque,
}

/// How a rewritten request's body is framed, and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Not followed reliably: pass the rest of the connection through.
    Opaque,
}

/// The streaming rewriter of one client connection; see the module doc.
#[derive(Debug, Clone)]
pub struct Rewriter {
    state: State,
    /// The request head collected so far (state `Head`).
    head: Vec<u8>,
    /// Where the search for the end of the head resumes.
    scanned: usize,
    /// The current chunk-size / chunk-end / trailer line (state `Chunk*`, `Trailers`).
    line: Vec<u8>,
    /// After the current body: go opaque (Upgrade, CONNECT).
    opaque_after_body: bool,
    /// The current head's request line was seen complete and valid.
    line_checked: bool,
    client: String,
    proto: Proto,
    limit: usize,
    rewritten: u64,
}

impl Rewriter {
    /// A rewriter for a client whose address (as `X-Forwarded-For` shows it) is `client`.
    pub fn new(client: impl Into<String>, proto: Proto) -> Rewriter {
        Rewriter::with_limit(client, proto, HEAD_LIMIT)
    }

    /// [`Rewriter::new`] with another head size limit.
    pub fn with_limit(client: impl Into<String>, proto: Proto, limit: usize) -> Rewriter {
        Rewriter {
            state: State::Head,
            head: Vec::new(),
            scanned: 0,
            line: Vec::new(),
            opaque_after_body: false,
            line_checked: false,
            client: client.into(),
            proto,
            limit,
            rewritten: 0,
        }
    }

    /// Number of request heads rewritten so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Whether the connection switched to pass-through.
    pub fn is_opaque(&self) -> bool {
        self.state == State::Opaque
    }

    /// Bytes held back (an incomplete request head).
    pub fn buffered(&self) -> usize {
        self.head.len()
    }

    /// Consumes `input` (the next bytes from the client) and appends what to send to the server
    /// to `out`. A request head is held back until it is complete.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            input = match self.state {
                State::Opaque => {
                    out.extend_from_slice(input);
                    &[]
                }
                State::Head => self.feed_head(input, out),
                State::Body(n) | State::ChunkData(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    let (now, rest) = input.split_at(k);
                    out.extend_from_slice(now);
                    let left = n - k as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => self.after_body(),
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                    rest
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => self.feed_line(input, out),
            };
        }
    }

    /// At the client's EOF: appends whatever is still held back (an incomplete head), as it
    /// came. Nothing is ever dropped.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.head);
        self.scanned = 0;
    }

    fn after_body(&mut self) -> State {
        if self.opaque_after_body {
            State::Opaque
        } else {
            State::Head
        }
    }

    fn go_opaque(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.head);
        self.scanned = 0;
        self.line_checked = false;
        self.state = State::Opaque;
    }

    /// State `Head`: collects bytes until the blank line; returns the unconsumed input.
    fn feed_head<'a>(&mut self, mut input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        if self.head.is_empty() {
            // Empty lines before a request line are allowed (RFC 9112 §2.2): pass them.
            let skip = input
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(input.len());
            let (blank, rest) = input.split_at(skip);
            out.extend_from_slice(blank);
            input = rest;
            if input.is_empty() {
                return input;
            }
        }
        let before = self.head.len();
        // Take at most one byte past the limit: enough to know the head is too large.
        let room = (self.limit + 1).saturating_sub(before).max(1);
        let take = room.min(input.len());
        self.head
            .extend_from_slice(input.get(..take).unwrap_or(input));
        if !self.start_is_plausible() {
            let rest = input.get(take..).unwrap_or(&[]);
            self.go_opaque(out);
            return rest;
        }
        match self.find_end() {
            Some(end) => {
                // Bytes after the head belong to the body or the next request.
                let used = end.saturating_sub(before);
                self.head.truncate(end);
                let rest = input.get(used..).unwrap_or(&[]);
                self.finish_head(out);
                rest
            }
            None if self.head.len() > self.limit => {
                let rest = input.get(take..).unwrap_or(&[]);
                self.go_opaque(out);
                rest
            }
            None => input.get(take..).unwrap_or(&[]),
        }
    }

    /// Whether the collected bytes can still be the start of an HTTP/1.x request line.
    fn start_is_plausible(&mut self) -> bool {
        if self.line_checked {
            return true;
        }
        let h = &self.head;
        let method_len = h.iter().take(METHOD_MAX + 1).position(|&b| !is_tchar(b));
        match method_len {
            None => h.len() <= METHOD_MAX,
            Some(0) => false,
            Some(n) => {
                if h.get(n) != Some(&b' ') {
                    return false;
                }
                match h.iter().position(|&b| b == b'\n') {
                    None => true,
                    Some(nl) => {
                        self.line_checked = request_line_ok(h.get(..nl).unwrap_or(&[]));
                        self.line_checked
                    }
                }
            }
        }
    }

    /// Index just past the blank line ending the head, if it is there yet.
    fn find_end(&mut self) -> Option<usize> {
        let h = &self.head;
        let mut i = self.scanned;
        while let Some(off) = h.get(i..).and_then(|s| s.iter().position(|&b| b == b'\n')) {
            let nl = i + off;
            match (h.get(nl + 1), h.get(nl + 2)) {
                (Some(b'\n'), _) => return Some(nl + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
                (None, _) | (Some(b'\r'), None) => {
                    // Not decidable yet: look at this line break again with more bytes.
                    self.scanned = nl;
                    return None;
                }
                _ => i = nl + 1,
            }
        }
        self.scanned = h.len();
        None
    }

    /// The head is complete: writes it rewritten and moves to the body. A head whose line
    /// ends are not all alike (CRLF and bare LF mixed, or a CR that ends no line) is ambiguous:
    /// servers split such heads differently, so it and the rest of the connection pass through
    /// untouched instead of being re-written with one kind of line end.
    fn finish_head(&mut self, out: &mut Vec<u8>) {
        if !line_ends_alike(&self.head) {
            self.go_opaque(out);
            return;
        }
        let head = std::mem::take(&mut self.head);
        self.scanned = 0;
        self.line_checked = false;
        let (framing, upgrade) = rewrite_head(&head, &self.client, self.proto, out);
        self.rewritten += 1;
        self.opaque_after_body = upgrade;
        self.state = match framing {
            Framing::None | Framing::Length(0) => {
                if upgrade {
                    State::Opaque
                } else {
                    State::Head
                }
            }
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Opaque => State::Opaque,
        };
        self.head = head;
        self.head.clear();
    }

    /// States `ChunkSize`, `ChunkEnd`, `Trailers`: passes bytes through while following the
    /// line structure; returns the unconsumed input.
    fn feed_line<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        let (now, rest, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let (a, b) = input.split_at(nl + 1);
                (a, b, true)
            }
            None => (input, &[][..], false),
        };
        out.extend_from_slice(now);
        if self.line.len() + now.len() > LINE_MAX {
            self.line.clear();
            self.state = State::Opaque;
            return rest;
        }
        self.line.extend_from_slice(now);
        if !complete {
            return rest;
        }
        let line = std::mem::take(&mut self.line);
        let text = trim_eol(&line);
        self.state = match self.state {
            State::ChunkSize => match chunk_size(text) {
                Some(0) => State::Trailers,
                Some(n) => State::ChunkData(n),
                None => State::Opaque,
            },
            State::ChunkEnd if text.is_empty() => State::ChunkSize,
            State::Trailers if text.is_empty() => self.after_body(),
            State::Trailers => State::Trailers,
            _ => State::Opaque,
        };
        self.line = line;
        self.line.clear();
        rest
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP target SP HTTP/1.d` (with or without the CR).
fn request_line_ok(line: &[u8]) -> bool {
    let line = trim_eol(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|&b| is_tchar(b))
        && !target.is_empty()
        && target.iter().all(|&b| b > b' ' && b != 0x7f)
        && version.len() == 8
        && version.starts_with(b"HTTP/1.")
        && version.get(7).is_some_and(u8::is_ascii_digit)
}

/// Whether every line of `head` ends like its request line (all CRLF or all bare LF) and no CR
/// stands anywhere but before a LF.
fn line_ends_alike(head: &[u8]) -> bool {
    let first_nl = head.iter().position(|&b| b == b'\n');
    let crlf = first_nl.is_some_and(|i| i > 0 && head.get(i - 1) == Some(&b'\r'));
    head.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => (i > 0 && head.get(i - 1) == Some(&b'\r')) == crlf,
        b'\r' => crlf && head.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or(&[])
}

/// The hex size at the start of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let digits = line.get(..end)?;
    let after = trim_ows(line.get(end..)?);
    if digits.is_empty() || digits.len() > 15 || !(after.is_empty() || after.starts_with(b";")) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// One header field: its lines (the first plus obs-fold continuation lines), without line
/// ends.
struct Field<'a> {
    lines: Vec<&'a [u8]>,
}

impl Field<'_> {
    fn name(&self) -> &[u8] {
        let first = self.lines.first().copied().unwrap_or(&[]);
        match first.iter().position(|&b| b == b':') {
            Some(c) => first.get(..c).unwrap_or(&[]),
            None => &[],
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value (continuation lines joined with a space), trimmed.
    fn value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            let part = if i == 0 {
                l.iter()
                    .position(|&b| b == b':')
                    .and_then(|c| l.get(c + 1..))
                    .unwrap_or(&[])
            } else {
                l
            };
            let part = trim_ows(part);
            if !part.is_empty() {
                if !v.is_empty() {
                    v.push(b' ');
                }
                v.extend_from_slice(part);
            }
        }
        v
    }
}

/// The fields of a complete head (request line excluded).
fn fields(head: &[u8]) -> Vec<Field<'_>> {
    let mut lines = head.split(|&b| b == b'\n').map(trim_eol);
    lines.next(); // request line
    let mut out: Vec<Field<'_>> = Vec::new();
    for l in lines {
        if l.is_empty() {
            break;
        }
        if (l.starts_with(b" ") || l.starts_with(b"\t"))
            && let Some(last) = out.last_mut()
        {
            last.lines.push(l);
            continue;
        }
        out.push(Field { lines: vec![l] });
    }
    out
}

/// Writes `head` with the forwarding fields; returns the body framing it declares and whether
/// the bytes after it may stop being HTTP (`CONNECT`, `Upgrade`).
fn rewrite_head(head: &[u8], client: &str, proto: Proto, out: &mut Vec<u8>) -> (Framing, bool) {
    let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let eol: &[u8] = if first.ends_with(b"\r") {
        b"\r\n"
    } else {
        b"\n"
    };
    let fields = fields(head);
    let last_xff = fields.iter().rposition(|f| f.is("x-forwarded-for"));
    out.extend_from_slice(trim_eol(first));
    out.extend_from_slice(eol);
    for (i, f) in fields.iter().enumerate() {
        if f.is("x-forwarded-proto") {
            continue;
        }
        let n = f.lines.len();
        for (j, l) in f.lines.iter().enumerate() {
            if Some(i) == last_xff && j + 1 == n {
                if f.value().is_empty() {
                    out.extend_from_slice(b"X-Forwarded-For: ");
                    out.extend_from_slice(client.as_bytes());
                } else {
                    out.extend_from_slice(trim_trailing_ows(l));
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(client.as_bytes());
                }
            } else {
                out.extend_from_slice(l);
            }
            out.extend_from_slice(eol);
        }
    }
    if last_xff.is_none() {
        out.extend_from_slice(b"X-Forwarded-For: ");
        out.extend_from_slice(client.as_bytes());
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(b"X-Forwarded-Proto: ");
    out.extend_from_slice(proto.as_str().as_bytes());
    out.extend_from_slice(eol);
    out.extend_from_slice(eol);
    let upgrade = head.starts_with(b"CONNECT ") || fields.iter().any(|f| f.is("upgrade"));
    (framing(&fields), upgrade)
}

fn trim_trailing_ows(l: &[u8]) -> &[u8] {
    let end = l
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |e| e + 1);
    l.get(..end).unwrap_or(l)
}

/// The body framing of a request (RFC 9112 §6.3), or `Opaque` where it is ambiguous.
fn framing(fields: &[Field<'_>]) -> Framing {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    for f in fields {
        if f.is("content-length") {
            for part in f.value().split(|&b| b == b',') {
                let part = trim_ows(part);
                let n = match std::str::from_utf8(part).ok().and_then(|s| {
                    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| s.parse::<u64>().ok())
                        .flatten()
                }) {
                    Some(n) => n,
                    None => return Framing::Opaque,
                };
                match length {
                    Some(l) if l != n => return Framing::Opaque,
                    _ => length = Some(n),
                }
            }
        } else if f.is("transfer-encoding") {
            te = true;
            let v = f.value();
            let last = v
                .split(|&b| b == b',')
                .map(trim_ows)
                .rfind(|c| !c.is_empty());
            chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (te, chunked, length) {
        (true, _, Some(_)) | (true, false, _) => Framing::Opaque,
        (true, true, None) => Framing::Chunked,
        (false, _, Some(n)) => Framing::Length(n),
        (false, _, None) => Framing::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Rewriter) {
        let mut r = Rewriter::new("10.0.0.1", Proto::Http);
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        (out, r)
    }

    fn whole(input: &[u8]) -> Vec<u8> {
        run(&[input]).0
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const GET_OUT: &[u8] =
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n";

    #[test]
    fn get_gets_both_fields_before_the_blank_line() {
        assert_eq!(whole(GET), GET_OUT);
    }

    #[test]
    fn https_proto_when_terminated_by_pen() {
        let mut r = Rewriter::new("2001:db8::1", Proto::Https);
        let mut out = Vec::new();
        r.feed(b"GET / HTTP/1.0\r\n\r\n", &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.0\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn every_method_is_rewritten_not_only_get_post_head() {
        for m in ["PUT", "OPTIONS", "DELETE", "PATCH", "PROPFIND", "M-SEARCH"] {
            let req = format!("{m} /x HTTP/1.1\r\nHost: h\r\n\r\n");
            let (out, r) = run(&[req.as_bytes()]);
            assert_eq!(r.rewritten(), 1, "{m}");
            assert!(
                String::from_utf8(out)
                    .unwrap()
                    .contains("X-Forwarded-For: 10.0.0.1\r\n")
            );
        }
    }

    #[test]
    fn existing_xff_gets_the_client_appended_to_the_last_one() {
        let out = whole(
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2 \r\n\r\n",
        );
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n".as_slice()
        );
    }

    #[test]
    fn empty_xff_is_replaced_not_given_a_leading_comma() {
        let out = whole(b"GET / HTTP/1.1\r\nX-Forwarded-For:\r\n\r\n");
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
                .as_slice()
        );
    }

    #[test]
    fn client_supplied_proto_is_replaced() {
        let out = whole(b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nHost: a\r\n\r\n");
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
                .as_slice()
        );
    }

    #[test]
    fn heads_with_mixed_line_ends_pass_through_untouched() {
        // Found by the `xff` fuzz target: such a head used to be re-written with the request
        // line's kind of line end (CRs dropped). Servers split these heads differently, so pen
        // now leaves them, and the rest of the connection, as they are.
        for head in [
            b"GET / HTTP/1.1\nHost: a\r\nX: 1\n\n".as_slice(),
            b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\nHost: a\r\r\n\n",
        ] {
            let mut input = head.to_vec();
            input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let (out, r) = run(&[&input]);
            assert_eq!(out, input, "{:?}", String::from_utf8_lossy(head));
            assert_eq!(r.rewritten(), 0);
            assert!(r.is_opaque());
        }
    }

    #[test]
    fn bare_lf_heads_keep_bare_lf() {
        assert_eq!(
            whole(b"GET / HTTP/1.1\nHost: a\n\n"),
            b"GET / HTTP/1.1\nHost: a\nX-Forwarded-For: 10.0.0.1\nX-Forwarded-Proto: http\n\n"
                .as_slice()
        );
    }

    #[test]
    fn folded_xff_gets_the_client_after_its_last_line() {
        let out = whole(b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1,\r\n 2.2.2.2\r\n\r\n");
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1,\r\n 2.2.2.2, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n".as_slice()
        );
    }

    /// Two pipelined requests with bodies (one Content-Length, one chunked with trailers and an
    /// extension), then a keep-alive GET; bodies contain things that look like heads.
    fn pipeline() -> (Vec<u8>, Vec<u8>) {
        let body1 = b"GET /fake HTTP/1.1\r\n\r\n";
        let mut input = Vec::new();
        let mut expect = Vec::new();
        let h1 = format!(
            "POST /p HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body1.len()
        );
        input.extend_from_slice(h1.as_bytes());
        input.extend_from_slice(body1);
        expect.extend_from_slice(
            format!(
                "POST /p HTTP/1.1\r\nContent-Length: {}\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n",
                body1.len()
            )
            .as_bytes(),
        );
        expect.extend_from_slice(body1);
        let chunked =
            b"5;ext=1\r\nhello\r\n1A\r\nGET / HTTP/1.1\r\n\r\nxxxxxxx\r\n0\r\nTrailer: t\r\n\r\n";
        input.extend_from_slice(b"PUT /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        input.extend_from_slice(chunked);
        expect.extend_from_slice(b"PUT /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n");
        expect.extend_from_slice(chunked);
        input.extend_from_slice(GET);
        expect.extend_from_slice(GET_OUT);
        (input, expect)
    }

    #[test]
    fn pipelined_requests_with_bodies_are_each_rewritten_once() {
        let (input, expect) = pipeline();
        let (out, r) = run(&[&input]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expect)
        );
        assert_eq!(r.rewritten(), 3);
        assert!(!r.is_opaque());
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let (input, expect) = pipeline();
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            let (out, r) = run(&[a, b]);
            assert_eq!(out, expect, "split at {i}");
            assert_eq!(r.rewritten(), 3, "split at {i}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_output() {
        let (input, expect) = pipeline();
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let (out, _) = run(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(out, expect, "splits at {i}, {j}");
            }
        }
    }

    #[test]
    fn byte_by_byte_gives_the_same_output() {
        let (input, expect) = pipeline();
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&chunks).0, expect);
    }

    #[test]
    fn nothing_is_sent_before_the_head_is_complete() {
        let mut r = Rewriter::new("10.0.0.1", Proto::Http);
        let mut out = Vec::new();
        r.feed(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut out);
        assert!(out.is_empty());
        assert_eq!(r.buffered(), 25);
        r.feed(b"\r\n", &mut out);
        assert!(out.ends_with(b"X-Forwarded-Proto: http\r\n\r\n"));
    }

    #[test]
    fn head_over_the_limit_passes_through_untouched() {
        let mut big = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        big.extend(std::iter::repeat_n(b'c', 200));
        big.extend_from_slice(b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
        for split in [1, 7, 50, 100, big.len()] {
            let mut r = Rewriter::with_limit("10.0.0.1", Proto::Http, 100);
            let mut out = Vec::new();
            for c in big.chunks(split) {
                r.feed(c, &mut out);
            }
            r.finish(&mut out);
            assert_eq!(out, big, "chunk size {split}");
            assert!(r.is_opaque());
            assert_eq!(r.rewritten(), 0);
        }
    }

    #[test]
    fn head_exactly_at_the_limit_is_rewritten() {
        let r = run(&[GET]).0;
        let mut rw = Rewriter::with_limit("10.0.0.1", Proto::Http, GET.len());
        let mut out = Vec::new();
        rw.feed(GET, &mut out);
        assert_eq!(out, r);
    }

    #[test]
    fn binary_data_passes_through_untouched_at_once() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut r = Rewriter::new("10.0.0.1", Proto::Http);
        let mut out = Vec::new();
        r.feed(&data[..10], &mut out);
        assert_eq!(
            out,
            &data[..10],
            "no holding back once it is clearly not HTTP"
        );
        r.feed(&data[10..], &mut out);
        assert_eq!(out, data);
        assert!(r.is_opaque());
    }

    #[test]
    fn tls_client_hello_and_http2_preface_pass_through() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0x05, b'G', b'E', b'T', b' ', b'/'];
        assert_eq!(whole(&hello), hello);
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(whole(preface), preface);
        let http09 = b"GET /\r\n\r\n";
        assert_eq!(whole(http09), http09);
    }

    #[test]
    fn text_protocol_that_is_not_http_passes_through() {
        let smtp = b"EHLO mail.example.org\r\nMAIL FROM:<a@b>\r\n\r\n";
        assert_eq!(whole(smtp), smtp);
    }

    #[test]
    fn incomplete_head_at_eof_is_forwarded_as_it_came() {
        let part = b"GET / HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(whole(part), part);
    }

    #[test]
    fn ambiguous_framing_goes_opaque_after_the_rewritten_head() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (out, r) = run(&[req]);
        assert!(r.is_opaque());
        assert_eq!(r.rewritten(), 1);
        assert!(out.ends_with(b"0\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
        for bad in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: -1",
            "Content-Length: 3x",
            "Transfer-Encoding: gzip",
        ] {
            let req = format!("POST / HTTP/1.1\r\n{bad}\r\n\r\nabc");
            let (out, r) = run(&[req.as_bytes()]);
            assert!(r.is_opaque(), "{bad}");
            assert!(out.ends_with(b"\r\n\r\nabc"), "{bad}");
        }
        let same = b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        assert_eq!(run(&[same]).1.rewritten(), 2);
    }

    #[test]
    fn upgrade_and_connect_switch_to_pass_through_after_the_head() {
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05GET / HTTP/1.1\r\n\r\n";
        let (out, r) = run(&[ws]);
        assert_eq!(r.rewritten(), 1);
        assert!(out.ends_with(b"\r\n\r\n\x81\x05GET / HTTP/1.1\r\n\r\n"));
        let connect = b"CONNECT a:443 HTTP/1.1\r\n\r\n\x16\x03\x01";
        let (out, r) = run(&[connect]);
        assert_eq!(r.rewritten(), 1);
        assert!(out.ends_with(b"\r\n\r\n\x16\x03\x01"));
    }

    #[test]
    fn leading_empty_lines_pass_and_the_request_is_rewritten() {
        let (out, r) = run(&[b"\r\n\r\n", GET]);
        assert_eq!(r.rewritten(), 1);
        let mut expect = b"\r\n\r\n".to_vec();
        expect.extend_from_slice(GET_OUT);
        assert_eq!(out, expect);
    }

    #[test]
    fn bad_chunk_size_goes_opaque_without_losing_bytes() {
        let req =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n";
        let (out, r) = run(&[req]);
        assert!(r.is_opaque());
        assert!(out.ends_with(b"\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n"));
    }

    /// A random stream of requests (no forwarding fields of their own), with bodies that
    /// contain request-looking bytes, optionally ending in binary garbage. Returns the stream
    /// and how many heads come before the garbage.
    fn random_stream(rng: &mut XorShift) -> (Vec<u8>, u64) {
        let mut v = Vec::new();
        let n = 1 + rng.below(8) as u64;
        for _ in 0..n {
            let eol: &[u8] = if rng.below(4) == 0 { b"\n" } else { b"\r\n" };
            let method = ["GET", "POST", "PUT", "PATCH", "OPTIONS"][rng.below(5)];
            v.extend_from_slice(
                format!(
                    "{method} /p{} HTTP/1.{}",
                    rng.next_u64() % 1000,
                    rng.below(2)
                )
                .as_bytes(),
            );
            v.extend_from_slice(eol);
            for i in 0..rng.below(6) {
                v.extend_from_slice(format!("X-H{i}: {}", "v".repeat(rng.below(40))).as_bytes());
                v.extend_from_slice(eol);
            }
            let body: Vec<u8> = (0..rng.below(300))
                .map(|i| {
                    if i % 7 == 0 {
                        b'\n'
                    } else {
                        b"GET / HTTP/1.1\r"[i % 15]
                    }
                })
                .collect();
            match rng.below(3) {
                0 => {}
                1 => {
                    v.extend_from_slice(format!("Content-Length: {}", body.len()).as_bytes());
                    v.extend_from_slice(eol);
                    v.extend_from_slice(eol);
                    v.extend_from_slice(&body);
                    continue;
                }
                _ => {
                    v.extend_from_slice(b"Transfer-Encoding: chunked");
                    v.extend_from_slice(eol);
                    v.extend_from_slice(eol);
                    for c in body.chunks(1 + rng.below(64)) {
                        v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        v.extend_from_slice(c);
                        v.extend_from_slice(b"\r\n");
                    }
                    v.extend_from_slice(b"0\r\n\r\n");
                    continue;
                }
            }
            v.extend_from_slice(eol);
        }
        if rng.below(3) == 0 {
            v.extend((0..rng.below(2000)).map(|_| (rng.next_u64() >> 24) as u8 | 0x80));
        }
        (v, n)
    }

    fn remove_all(hay: &[u8], needle: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let mut i = 0;
        while i < hay.len() {
            if hay[i..].starts_with(needle) {
                i += needle.len();
            } else {
                out.push(hay[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn seeded_random_streams_lose_nothing_and_rewrite_every_request() {
        for seed in 1..=300u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let (input, heads) = random_stream(&mut rng);
            let mut r = Rewriter::new("10.0.0.1", Proto::Http);
            let mut out = Vec::new();
            let mut rest = input.as_slice();
            while !rest.is_empty() {
                let (a, b) = rest.split_at((1 + rng.below(200)).min(rest.len()));
                r.feed(a, &mut out);
                rest = b;
            }
            r.finish(&mut out);
            assert_eq!(r.rewritten(), heads, "seed {seed}");
            let mut stripped = out.clone();
            for line in [
                &b"X-Forwarded-For: 10.0.0.1\r\n"[..],
                b"X-Forwarded-Proto: http\r\n",
                b"X-Forwarded-For: 10.0.0.1\n",
                b"X-Forwarded-Proto: http\n",
            ] {
                stripped = remove_all(&stripped, line);
            }
            assert!(
                stripped == input,
                "seed {seed}: output minus the inserted fields differs from the input"
            );
        }
    }

    #[test]
    fn seeded_random_splits_of_many_requests_match_the_whole_rewrite() {
        let (one, _) = pipeline();
        let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 20).collect();
        let expect = whole(&input);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut r = Rewriter::new("10.0.0.1", Proto::Http);
            let mut out = Vec::new();
            let mut rest = input.as_slice();
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = (seed % 97) as usize + 1;
                let (a, b) = rest.split_at(n.min(rest.len()));
                r.feed(a, &mut out);
                rest = b;
            }
            r.finish(&mut out);
            assert_eq!(out, expect, "round {round}");
            assert_eq!(r.rewritten(), 60);
        }
    }
}
