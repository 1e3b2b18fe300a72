//! Progress lines of the tools that run for minutes (scaling experiment, bench, chaos suite):
//! "UNIT k of n: WHAT (about T left)", one per step on stderr, so a run on a terminal or in a
//! CI log says how far it is and how long it still needs. Pure text; the callers print.

/// "UNIT k of n: WHAT (TAIL)", e.g. `point 3 of 17: 2 pods, naive (about 9 min left)`; no
/// parentheses when `tail` is empty.
pub fn line(unit: &str, k: usize, n: usize, what: &str, tail: &str) -> String {
    if tail.is_empty() { format!("{unit} {k} of {n}: {what}") } else { format!("{unit} {k} of {n}: {what} ({tail})") }
}

/// A duration in seconds as a person reads an estimate: `45 s` below 90 s, whole minutes below
/// 90 min (`12 min`), else hours and minutes (`2 h 05 min`). Rounded to the nearest unit;
/// negative or non-finite input reads as `0 s`.
pub fn duration(secs: f64) -> String {
    let secs = if secs.is_finite() { secs.max(0.0).round() as u64 } else { 0 };
    if secs < 90 {
        format!("{secs} s")
    } else if secs < 90 * 60 {
        format!("{} min", (secs + 30) / 60)
    } else {
        let mins = (secs + 30) / 60;
        format!("{} h {:02} min", mins / 60, mins % 60)
    }
}

/// "about T left": the tail of a step's line, `left_s` the estimate for this step and the ones
/// after it.
pub fn about_left(left_s: f64) -> String {
    format!("about {} left", duration(left_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step line names its place and its tail; an empty tail leaves no "()".
    #[test]
    fn step_line() {
        assert_eq!(
            line("step", 2, 16, "webdis-hget", &about_left(150.0)),
            "step 2 of 16: webdis-hget (about 3 min left)"
        );
        assert_eq!(line("point", 1, 1, "1 pod", ""), "point 1 of 1: 1 pod");
    }

    /// Seconds, minutes, hours: each where it reads best; nonsense input is 0 s.
    #[test]
    fn durations_read_as_people_say_them() {
        let cases = [
            (0.0, "0 s"),
            (44.6, "45 s"),
            (89.0, "89 s"),
            (90.0, "2 min"),
            (149.0, "2 min"),
            (150.0, "3 min"),
            (89.0 * 60.0, "89 min"),
            (90.0 * 60.0, "1 h 30 min"),
            (2.0 * 3600.0 + 5.0 * 60.0, "2 h 05 min"),
            (-3.0, "0 s"),
            (f64::NAN, "0 s"),
        ];
        for (secs, text) in cases {
            assert_eq!(duration(secs), text, "{secs}");
        }
    }
}
