//! Small helpers: UTC time stamps and the machine description.

use std::time::{SystemTime, UNIX_EPOCH};

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's civil-from-days).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD HH:MM:SS` and `YYYYMMDD-HHMMSS` for `secs` since the epoch.
pub fn stamps(secs: u64) -> (String, String) {
    let (y, m, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    let (hh, mm, ss) = (s / 3600, s / 60 % 60, s % 60);
    (
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC"),
        format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}"),
    )
}

/// Current UTC stamps (see [`stamps`]).
pub fn now() -> (String, String) {
    stamps(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// CPU model, core count and OS of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or(std::env::consts::OS.to_string(), |r| {
            format!("Linux {}", r.trim())
        });
    format!("{cpu}, {cores} cores, {os}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn stamps_format() {
        let (long, short) = stamps(951_782_400 + 3661);
        assert_eq!(long, "2000-02-29 01:01:01 UTC");
        assert_eq!(short, "20000229-010101");
    }
}
