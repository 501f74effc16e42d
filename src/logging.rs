//! The process log: lines on stderr from a writer thread, with control
//! characters from payloads escaped so that no input can forge a log line or
//! drive a terminal.

use std::io::{IsTerminal as _, Write};

/// `s` with every control character (CR, LF, ESC, …) written as `\u{…}`,
/// for text taken from payloads before it is logged or shown.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes each formatted line with its control characters escaped, all
/// but the line's own ending: a field cannot start a new line of its own.
#[derive(Debug)]
struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            if b.is_ascii_control() && b != b'\t' {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr from a writer thread: a request or a delivery never waits
/// on the pipe, and lines written together share one `write`. Lossless: when
/// the queue is full, the thread that logs waits rather than drop a line.
/// The guard flushes what is queued when dropped.
///
/// `filter` is a `RUST_LOG`-style directive list (`info`,
/// `prefect_pagerduty_bridge=debug,info`).
///
/// # Errors
/// When `filter` does not parse.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("--log-filter {filter:?}: {e}; expected e.g. info or debug"))?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(4096)
        .thread_name("log-writer")
        .finish(Escaping(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        )));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes only for a person at a terminal, never into files.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\r\nb\x1b[31m"), "a\\u{d}\\u{a}b\\u{1b}[31m");
    }

    #[test]
    fn a_line_keeps_its_ending_and_loses_the_rest() {
        let mut w = Escaping(Vec::new());
        w.write_all(b"x=1 id=ab\ncd\x1b[2J\n").expect("write");
        assert_eq!(w.0, b"x=1 id=ab\\x0acd\\x1b[2J\n");
    }
}
