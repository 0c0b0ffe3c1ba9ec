//! Runaway statements stop at the gateway's budget (`[limits] statement_timeout`, per upstream
//! overridable). Postgres enforces it: the gateway logs in with `statement_timeout` set to the
//! budget (or the client's lower one) and refuses every change above it — `SET`, `SET LOCAL`,
//! `set_config`, a function's `SET` clause, `options` at login. Postgres is not trusted to be
//! the only guard: a statement the parser cannot see into (a DO block, a function body) could
//! still lift the setting, so the session also watches the upstream itself and cancels a
//! request that has run past the budget and a grace period, as a client's CancelRequest would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::analysis::{SettingChange, SettingValue};

/// A `statement_timeout` value as Postgres reads it: a number, milliseconds unless a unit
/// (`us`, `ms`, `s`, `min`, `h`, `d`) follows. `None` when Postgres would refuse it or it is
/// negative.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "" | "ms" => number,
        "us" => number / 1000.0,
        "s" => number * 1000.0,
        "min" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        "d" => number * 86_400_000.0,
        _ => return None,
    };
    // One too long for any clock is not one this gateway can compare: none, so the budget
    // stands.
    Duration::try_from_secs_f64(millis / 1000.0).ok()
}

/// Whether a session may ask for `statement_timeout = value` under `budget`: set, and no
/// longer (0 means none, so it never is). A zero budget allows anything.
pub fn within(value: &str, budget: Duration) -> bool {
    // Postgres keeps whole milliseconds, rounding half to even: `0.4` and `400us` are 0, no
    // timeout at all.
    let whole_millis = |d: Duration| (d.as_secs_f64() * 1000.0).round_ties_even();
    budget.is_zero()
        || parse_timeout(value).is_some_and(|asked| whole_millis(asked) >= 1.0 && asked <= budget)
}

/// Why `change` would lift the session's statement budget, if it would.
pub fn refused_change(change: &SettingChange, budget: Duration) -> Option<String> {
    if change.name != "statement_timeout" || budget.is_zero() {
        return None;
    }
    let shown = humantime::format_duration(budget);
    match &change.value {
        // The session's default is the budget (or the client's lower value at login).
        SettingValue::Default => None,
        SettingValue::Literal(v) if within(v, budget) => None,
        SettingValue::Literal(v) => Some(format!(
            "statement_timeout \"{v}\" is above this gateway's budget of {shown} ([limits] statement_timeout)"
        )),
        SettingValue::Computed => Some(format!(
            "statement_timeout may only be set to a constant within this gateway's budget of {shown}"
        )),
    }
}

/// Cancels what the upstream runs once one request has run longer than `limit`. `sent` counts
/// requests forwarded, `done` requests answered (ReadyForQuery relayed); the request at the
/// head started when the one before it was answered, or when it was sent. Never returns.
pub async fn watch<F, Fut>(limit: Duration, sent: &AtomicU64, done: &AtomicU64, cancel: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let tick = (limit / 20).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut head = (done.load(Ordering::Acquire), Instant::now());
    let mut cancelled = None;
    loop {
        tokio::time::sleep(tick).await;
        let answered = done.load(Ordering::Acquire);
        let busy = sent.load(Ordering::Acquire) > answered;
        if !busy || answered != head.0 {
            head = (answered, Instant::now());
            continue;
        }
        if head.1.elapsed() > limit && cancelled != Some(answered) {
            tracing::warn!(
                running = ?head.1.elapsed(),
                budget = ?limit,
                "a request ran past the statement budget; cancelling it upstream"
            );
            cancel().await;
            cancelled = Some(answered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn timeouts_read_as_postgres_reads_them() {
        assert_eq!(parse_timeout("5000"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("5 min"), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("0"), Some(Duration::ZERO));
        assert_eq!(parse_timeout("5 weeks"), None);
        assert_eq!(parse_timeout("-1"), None);
        assert_eq!(parse_timeout(""), None);
    }

    #[test]
    fn a_timeout_too_long_for_any_clock_is_none_and_within_no_budget() {
        let huge = "99999999999999999999999999";
        assert_eq!(parse_timeout(huge), None);
        assert!(!within(huge, Duration::from_secs(300)));
    }

    #[test]
    fn only_a_set_timeout_within_the_budget_passes() {
        let budget = Duration::from_secs(300);
        assert!(within("1min", budget));
        assert!(within("300000", budget));
        assert!(!within("0", budget), "0 is no timeout");
        assert!(!within("0.4", budget), "rounds to 0");
        assert!(!within("400us", budget), "rounds to 0");
        assert!(!within("0.5", budget), "rounds half to even: 0");
        assert!(within("1.5", budget));
        assert!(!within("6min", budget));
        assert!(!within("1d", budget));
        assert!(within("0", Duration::ZERO), "no budget");
        let change = |value| SettingChange {
            name: "statement_timeout".into(),
            value,
            at_run_time: false,
        };
        assert!(refused_change(&change(SettingValue::Literal("0".into())), budget).is_some());
        assert!(refused_change(&change(SettingValue::Computed), budget).is_some());
        assert!(refused_change(&change(SettingValue::Default), budget).is_none());
        assert!(refused_change(&change(SettingValue::Literal("30s".into())), budget).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_limit_is_cancelled_once_and_a_progressing_one_never() {
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let cancels = Arc::new(AtomicUsize::new(0));
        let watcher = tokio::spawn({
            let (sent, done, cancels) = (sent.clone(), done.clone(), cancels.clone());
            async move {
                watch(Duration::from_secs(10), &sent, &done, || {
                    cancels.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(())
                })
                .await
            }
        });
        // A pipeline of requests each answered in 5 s: the whole takes 30 s, none runs long.
        sent.store(6, Ordering::Release);
        for answered in 1..=6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            done.store(answered, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(cancels.load(Ordering::SeqCst), 0, "idle and progressing");
        // One that hangs is cancelled once.
        sent.store(7, Ordering::Release);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(cancels.load(Ordering::SeqCst), 1);
        watcher.abort();
    }
}
