//! Memory readings of the current process from `/proc/self`: resident set size now (`VmRSS`)
//! and its high-water mark (`VmHWM`), as the kernel counts them.

use std::fs;

/// Reads one `kB` field of `/proc/self/status` (such as `"VmRSS:"`), in bytes.
fn status_field(name: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/self/status").ok()?;
    parse_status_field(&text, name)
}

/// Finds `name` in the text of a `/proc/<pid>/status` file and returns its value in bytes.
pub fn parse_status_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The resident set size now, in bytes (0 if unreadable).
pub fn rss_bytes() -> u64 {
    status_field("VmRSS:").unwrap_or(0)
}

/// The peak resident set size of the process so far, in bytes (0 if unreadable).
pub fn peak_rss_bytes() -> u64 {
    status_field("VmHWM:").unwrap_or(0)
}

/// The resident set size from `/proc/self/statm` (cheaper than `status`; for time series).
pub fn rss_bytes_fast() -> u64 {
    let Ok(text) = fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * allocators::os::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_field(text, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(parse_status_field(text, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_status_field(text, "VmSwap:"), None);
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_bytes() > 0);
        assert!(peak_rss_bytes() >= rss_bytes() / 2);
        assert!(rss_bytes_fast() > 0);
    }
}
