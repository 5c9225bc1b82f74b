//! CronJob schedules as Kubernetes reads them (robfig/cron's standard parser): five fields
//! (minute, hour, day of month, month, day of week) with `*`, `?`, lists, ranges, steps and
//! month/day names; the macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight`, `@hourly`; and `@every <duration>`. Day of month and day of week combine like
//! cron: when both are restricted, either matching is enough.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Five cron fields as bit sets.
    Cron {
        /// Bit n: minute n.
        minutes: u64,
        /// Bit n: hour n.
        hours: u32,
        /// Bit n: day n of the month (1..=31).
        days: u32,
        /// Bit n: month n (1..=12).
        months: u16,
        /// Bit n: weekday n (0 = Sunday).
        weekdays: u8,
        /// The day-of-month field was `*` or `?`.
        any_day: bool,
        /// The day-of-week field was `*` or `?`.
        any_weekday: bool,
    },
    /// `@every <duration>`: whole seconds between runs.
    Every(i64),
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn number(text: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + offset);
    }
    text.parse::<u32>().map_err(|_| format!("failed to parse int from {text}"))
}

/// Parses one field into a bit set; returns (bits, was `*` or `?`).
fn field(text: &str, min: u32, max: u32, names: &[&str], offset: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step = step.parse::<u32>().map_err(|_| format!("failed to parse int from {step}"))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (start, end, is_star) = if range == "*" || range == "?" {
            (min, max, true)
        } else if let Some((low, high)) = range.split_once('-') {
            (number(low, names, offset)?, number(high, names, offset)?, false)
        } else {
            let start = number(range, names, offset)?;
            // "N/step" means "N-max/step".
            (start, if step.is_some() { max } else { start }, false)
        };
        if start < min {
            return Err(format!("beginning of range ({start}) below minimum ({min}): {part}"));
        }
        if end > max {
            return Err(format!("end of range ({end}) above maximum ({max}): {part}"));
        }
        if start > end {
            return Err(format!("beginning of range ({start}) beyond end of range ({end}): {part}"));
        }
        let step = step.unwrap_or(1);
        star |= is_star && step == 1;
        let mut n = start;
        while n <= end {
            bits |= 1 << n;
            n += step;
        }
    }
    Ok((bits, star))
}

/// Parses a Go duration such as `90s`, `1m30s`, `2h` into whole seconds.
fn go_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("failed to parse duration @every {text}");
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    // robfig rounds sub-second delays up to one second.
    Ok((total.floor() as i64).max(1))
}

/// Parses a schedule the way the Kubernetes API validates `spec.schedule`.
pub fn parse(text: &str) -> Result<Schedule, String> {
    let text = text.trim();
    if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    let expanded = match text {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => {
            if let Some(duration) = other.strip_prefix("@every ") {
                return Ok(Schedule::Every(go_duration(duration.trim())?));
            }
            if other.starts_with('@') {
                return Err(format!("unrecognized descriptor: {other}"));
            }
            other
        }
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {text}", fields.len()));
    }
    let (minutes, _) = field(fields[0], 0, 59, &[], 0)?;
    let (hours, _) = field(fields[1], 0, 23, &[], 0)?;
    let (days, any_day) = field(fields[2], 1, 31, &[], 0)?;
    let (months, _) = field(fields[3], 1, 12, &MONTHS, 1)?;
    let (weekdays, any_weekday) = field(fields[4], 0, 6, &WEEKDAYS, 0)?;
    Ok(Schedule::Cron {
        minutes,
        hours: hours as u32,
        days: days as u32,
        months: months as u16,
        weekdays: weekdays as u8,
        any_day,
        any_weekday,
    })
}

impl Schedule {
    /// The first time strictly after `after` the schedule fires, in time zone `zone`; None when
    /// it never does (such as February 30th) within five years.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let Schedule::Cron { minutes, hours, days, months, weekdays, any_day, any_weekday } = *self else {
            let Schedule::Every(seconds) = *self else { return None };
            return after.checked_add(Span::new().seconds(seconds)).ok();
        };
        let start = after.to_zoned(zone.clone()).datetime();
        let mut t: DateTime = start.with().second(0).subsec_nanosecond(0).build().ok()?.checked_add(1.minute()).ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        let midnight = |t: DateTime| t.with().hour(0).minute(0).build();
        while t < limit {
            if months & (1 << t.month()) == 0 {
                t = midnight(t.first_of_month()).ok()?.checked_add(1.month()).ok()?;
                continue;
            }
            let day_match = days & (1 << t.day()) != 0;
            let weekday_match = weekdays & (1 << t.weekday().to_sunday_zero_offset()) != 0;
            let day_ok = if any_day || any_weekday { day_match && weekday_match } else { day_match || weekday_match };
            if !day_ok {
                t = midnight(t).ok()?.checked_add(1.day()).ok()?;
                continue;
            }
            if hours & (1 << t.hour()) == 0 {
                t = t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            return zone.to_ambiguous_timestamp(t).compatible().ok().filter(|ts| *ts > after);
        }
        None
    }

    /// The latest time in (`after`, `now`] the schedule fired, and how many times it fired in
    /// that window (capped at `cap`).
    pub fn most_recent(
        &self,
        after: Timestamp,
        now: Timestamp,
        zone: &TimeZone,
        cap: usize,
    ) -> (Option<Timestamp>, usize) {
        if let Schedule::Every(seconds) = *self {
            let elapsed = now.as_second() - after.as_second();
            if elapsed < seconds {
                return (None, 0);
            }
            let runs = elapsed / seconds;
            let last = Timestamp::from_second(after.as_second() + runs * seconds).ok();
            return (last, (runs as usize).min(cap));
        }
        let mut last = None;
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next_after(t, zone) {
            if next > now {
                break;
            }
            last = Some(next);
            count += 1;
            t = next;
            if count >= cap {
                // Too many missed runs: jump to the latest one directly.
                let mut probe = now.checked_sub(Span::new().minutes(1)).unwrap_or(now);
                loop {
                    match self.next_after(probe, zone) {
                        Some(found) if found <= now => return (Some(found), count),
                        _ => {}
                    }
                    let back = probe.checked_sub(Span::new().hours(1)).ok();
                    match back {
                        Some(b) if b > t => probe = b,
                        _ => return (last, count),
                    }
                }
            }
        }
        (last, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        parse(schedule).unwrap().next_after(at(after), &TimeZone::UTC).unwrap().to_string()
    }

    #[test]
    fn common_schedules() {
        assert_eq!(next("*/5 * * * *", "2026-11-30T11:02:30Z"), "2026-11-30T11:05:00Z");
        assert_eq!(next("0 * * * *", "2026-11-30T11:00:00Z"), "2026-11-30T12:00:00Z");
        assert_eq!(next("30 2 * * mon-fri", "2026-11-28T00:00:00Z"), "2026-11-30T02:30:00Z", "Saturday → Monday");
        assert_eq!(next("@monthly", "2026-11-30T11:00:00Z"), "2026-12-01T00:00:00Z");
        assert_eq!(next("0 0 1 jan *", "2026-11-30T11:00:00Z"), "2027-01-01T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", "2026-11-30T11:00:00Z"), "2028-02-29T00:00:00Z");
        assert_eq!(next("@every 5s", "2026-11-30T11:00:00Z"), "2026-11-30T11:00:05Z");
    }

    #[test]
    fn day_fields_combine_like_cron() {
        // Both restricted: the 1st of the month OR any Friday.
        assert_eq!(next("0 0 1 * fri", "2026-11-30T00:00:00Z"), "2026-12-01T00:00:00Z");
        assert_eq!(next("0 0 1 * fri", "2026-12-01T00:00:00Z"), "2026-12-04T00:00:00Z");
        // One is `*`: both must match (every Friday).
        assert_eq!(next("0 0 * * fri", "2026-11-30T00:00:00Z"), "2026-12-04T00:00:00Z");
    }

    #[test]
    fn time_zones_move_the_wall_clock() {
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let next = parse("0 9 * * *").unwrap().next_after(at("2026-11-30T00:00:00Z"), &zone).unwrap();
        assert_eq!(next.to_string(), "2026-11-30T08:00:00Z");
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(parse("* * * *").unwrap_err().contains("expected exactly 5 fields"));
        assert!(parse("61 * * * *").unwrap_err().contains("above maximum (59)"));
        assert!(parse("*/0 * * * *").unwrap_err().contains("positive"));
        assert!(parse("TZ=UTC * * * * *").unwrap_err().contains("timeZone"));
        assert!(parse("@often").unwrap_err().contains("unrecognized descriptor"));
        assert!(parse("@every soon").unwrap_err().contains("duration"));
        assert!(parse("5-1 * * * *").unwrap_err().contains("beyond end"));
    }

    #[test]
    fn missed_runs_are_counted_and_the_latest_is_found() {
        let schedule = parse("* * * * *").unwrap();
        let (last, count) =
            schedule.most_recent(at("2026-11-30T10:00:30Z"), at("2026-11-30T10:03:10Z"), &TimeZone::UTC, 100);
        assert_eq!((last.unwrap().to_string().as_str(), count), ("2026-11-30T10:03:00Z", 3));
        let (last, count) =
            schedule.most_recent(at("2026-11-20T00:00:00Z"), at("2026-11-30T10:03:10Z"), &TimeZone::UTC, 100);
        assert_eq!((last.unwrap().to_string().as_str(), count), ("2026-11-30T10:03:00Z", 100));
        let every = parse("@every 10s").unwrap();
        let (last, count) =
            every.most_recent(at("2026-11-30T10:00:00Z"), at("2026-11-30T10:00:35Z"), &TimeZone::UTC, 100);
        assert_eq!((last.unwrap().to_string().as_str(), count), ("2026-11-30T10:00:30Z", 3));
    }
}
