//! Durations as manifests write them: `90s`, `15m`, `2h`, `1d`, or a sum like `1h30m`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration from a manifest; prints back in the same notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManifestDuration(pub Duration);

impl FromStr for ManifestDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("\"{text}\" is not a duration; write it like 90s, 15m, 2h, 1d or 1h30m");
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits == rest.len() {
                return Err(bad());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
            let unit = match rest.as_bytes()[digits] {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                b'd' => 86_400,
                _ => return Err(bad()),
            };
            total = number
                .checked_mul(unit)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(|| format!("\"{text}\" is too long a duration"))?;
            rest = &rest[digits + 1..];
        }
        Ok(Self(Duration::from_secs(total)))
    }
}

impl fmt::Display for ManifestDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        for (text, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("2h", 7200),
            ("1d", 86_400),
            ("1h30m", 5400),
        ] {
            assert_eq!(
                text.parse::<ManifestDuration>().map(|d| d.0.as_secs()),
                Ok(secs),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for text in [
            "",
            "15",
            "m",
            "15x",
            "-5m",
            "1.5h",
            "15 m",
            "99999999999999999999d",
        ] {
            assert!(text.parse::<ManifestDuration>().is_err(), "{text}");
        }
    }

    #[test]
    fn prints_back_in_manifest_notation() {
        for text in ["90s", "15m", "2h", "1d", "1h30m", "0s"] {
            let d: ManifestDuration = text.parse().expect("valid");
            let again: ManifestDuration = d.to_string().parse().expect("printed form parses");
            assert_eq!(d, again);
        }
        assert_eq!(
            "90s".parse::<ManifestDuration>().map(|d| d.to_string()),
            Ok("1m30s".into())
        );
    }
}
