//! Durations as Istio resources write them: Go-style strings such as `5s`, `100ms`, `1m30s`, `1.5h`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as a string of number-unit pairs (`ns`, `us`, `µs`, `ms`,
/// `s`, `m`, `h`). It keeps the text it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

impl Duration {
    /// Parses `text`; a bare `0` is accepted, negative or unit-less values are not.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_go_duration(text).map(|value| Duration {
            text: text.to_string(),
            value,
        })
    }

    /// The duration as a `std::time::Duration`.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text the duration was written as.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

const UNITS: [(&str, f64); 8] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("μs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
];

fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| format!("invalid duration `{text}`: {why}");
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if text.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = rest;
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad(
                "expected a number followed by a unit (ns, us, ms, s, m, h)",
            ));
        }
        let amount: f64 = number
            .parse()
            .map_err(|_| bad("expected a number followed by a unit"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let Some((_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                bad("missing unit (ns, us, ms, s, m, h)")
            } else {
                bad(&format!("unknown unit `{unit}` (ns, us, ms, s, m, h)"))
            });
        };
        seconds += amount * scale;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(seconds).map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("5s", Some(Std::from_secs(5))),
            ("100ms", Some(Std::from_millis(100))),
            ("1.5s", Some(Std::from_millis(1500))),
            ("1h", Some(Std::from_secs(3600))),
            ("1m30s", Some(Std::from_secs(90))),
            ("2us", Some(Std::from_micros(2))),
            ("2µs", Some(Std::from_micros(2))),
            ("10ns", Some(Std::from_nanos(10))),
            ("0", Some(Std::ZERO)),
            ("0s", Some(Std::ZERO)),
            ("+5s", Some(Std::from_secs(5))),
            ("", None),
            ("5", None),
            ("-5s", None),
            ("5x", None),
            ("s", None),
            ("1.2.3s", None),
            ("5 s", None),
            ("1d", None),
            ("99999999999999999999999h", None),
        ];
        for (text, want) in cases {
            let got = Duration::parse(text).ok().map(|d| d.get());
            assert_eq!(got, want, "duration {text:?}");
        }
    }
}
