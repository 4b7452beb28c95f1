//! The values goals are written in: an improvement over the source model (absolute or a
//! percentage of the source's value) and a byte count (`1048576`, `"20MB"`, `"1.5 MiB"`).

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::node::HINT;

/// How much better than the source model a candidate must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Improvement {
    /// In the metric's unit: milliseconds for latency, bytes for size.
    Absolute(f64),
    /// A fraction of the source model's value: `"20%"` is `Relative(0.2)`.
    Relative(f64),
}

impl Improvement {
    /// The least improvement, in the metric's unit, for a source model of value `baseline`.
    pub fn required(&self, baseline: f64) -> f64 {
        match self {
            Improvement::Absolute(amount) => *amount,
            Improvement::Relative(fraction) => fraction * baseline,
        }
    }
}

impl fmt::Display for Improvement {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Improvement::Absolute(amount) => write!(f, "{amount}"),
            Improvement::Relative(fraction) => write!(f, "{}%", percent_text(*fraction)),
        }
    }
}

/// A fraction as a percentage without float noise: `0.55` is `55`, not `55.00000000000001`,
/// with at most four decimals and no trailing zeros.
pub(crate) fn percent_text(fraction: f64) -> String {
    let text = format!("{:.4}", fraction * 100.0);
    let text =
        if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// Reads a percentage such as `"20%"` or `" 1.5 %"` as a number of percent.
pub(super) fn parse_percent(text: &str) -> Option<f64> {
    text.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok())
}

pub use pipeline_passes::bytes::parse_bytes;
use pipeline_passes::bytes::SIZE_PATTERN;

/// Which metric an improvement belongs to: it decides the absolute unit and what the
/// messages say.
#[derive(Clone, Copy)]
enum Unit {
    Milliseconds,
    Bytes,
}

impl Unit {
    fn hint(self) -> &'static str {
        match self {
            Unit::Milliseconds => {
                "write milliseconds like `2`, or a share of the source's latency like `\"20%\"`"
            }
            Unit::Bytes => {
                "write bytes like `1000000` or `\"1MB\"`, or a share of the source's \
                            size like `\"20%\"`"
            }
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Unit::Milliseconds => "latency",
            Unit::Bytes => "size",
        }
    }
}

struct ImprovementVisitor(Unit);

impl ImprovementVisitor {
    fn absolute<E: de::Error>(&self, amount: f64, written: &str) -> Result<Improvement, E> {
        if amount.is_finite() && amount >= 0.0 {
            return Ok(Improvement::Absolute(amount));
        }
        Err(E::custom(format!(
            "expected an improvement of 0 or more, found {written}{HINT}{}",
            self.0.hint()
        )))
    }
}

impl<'de> Visitor<'de> for ImprovementVisitor {
    type Value = Improvement;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or a percentage like `\"20%\"`")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Improvement, E> {
        self.absolute(v, &v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Improvement, E> {
        self.absolute(v as f64, &v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Improvement, E> {
        self.absolute(v as f64, &v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Improvement, E> {
        let unit = self.0;
        if let Some(percent) = parse_percent(v) {
            if !(0.0..100.0).contains(&percent) {
                return Err(E::custom(format!(
                    "an improvement of {v} makes no sense: it must be at least 0% and below \
                     100% (100% would be a {} of zero){HINT}{}",
                    unit.metric(),
                    unit.hint()
                )));
            }
            return Ok(Improvement::Relative(percent / 100.0));
        }
        if let (Unit::Bytes, Some(bytes)) = (unit, parse_bytes(v)) {
            return Ok(Improvement::Absolute(bytes as f64));
        }
        Err(E::custom(format!(
            "expected a number or a percentage, found string `{v}`{HINT}{}",
            unit.hint()
        )))
    }
}

/// An improvement in milliseconds or percent, as a recipe writes `metrics.latency`'s.
pub(super) struct LatencyImprovement(Improvement);

/// An improvement in bytes (a number or a size like `"1MB"`) or percent, as a recipe writes
/// `metrics.size`'s.
pub(super) struct SizeImprovement(Improvement);

/// A byte count written as a number or a size like `"20MB"`.
pub(super) struct ByteCount(u64);

impl<'de> Deserialize<'de> for LatencyImprovement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ImprovementVisitor(Unit::Milliseconds)).map(LatencyImprovement)
    }
}

impl<'de> Deserialize<'de> for SizeImprovement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ImprovementVisitor(Unit::Bytes)).map(SizeImprovement)
    }
}

/// Reads `metrics.latency.min_improvement`.
pub(super) fn latency_improvement<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Improvement>, D::Error> {
    Option::<LatencyImprovement>::deserialize(d).map(|v| v.map(|v| v.0))
}

/// Reads `metrics.size.min_improvement`.
pub(super) fn size_improvement<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Improvement>, D::Error> {
    Option::<SizeImprovement>::deserialize(d).map(|v| v.map(|v| v.0))
}

/// Reads `metrics.size.max_bytes`.
pub(super) fn byte_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<ByteCount>::deserialize(d).map(|v| v.map(|v| v.0))
}

const BYTES_HINT: &str = "write bytes like `20000000`, or a size like `\"20MB\"` or `\"1.5GiB\"`";

struct ByteCountVisitor;

impl<'de> Visitor<'de> for ByteCountVisitor {
    type Value = ByteCount;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number of bytes, or a size like `\"20MB\"`")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteCount, E> {
        ByteCount::above_zero(v, &v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteCount, E> {
        match u64::try_from(v) {
            Ok(bytes) => ByteCount::above_zero(bytes, &v.to_string()),
            Err(_) => Err(ByteCount::not_above_zero(&v.to_string())),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteCount, E> {
        Err(E::custom(format!("expected a whole number of bytes, found {v}{HINT}{BYTES_HINT}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteCount, E> {
        match parse_bytes(v) {
            Some(bytes) => ByteCount::above_zero(bytes, &format!("`{v}`")),
            None => Err(E::custom(format!(
                "`{v}` is not a size: expected whole bytes or a number with a unit{HINT}\
                 {BYTES_HINT}"
            ))),
        }
    }
}

impl ByteCount {
    /// A limit of 0 bytes no model can meet, so it is refused as a latency limit of 0 is.
    fn above_zero<E: de::Error>(bytes: u64, written: &str) -> Result<ByteCount, E> {
        if bytes == 0 {
            return Err(Self::not_above_zero(written));
        }
        Ok(ByteCount(bytes))
    }

    fn not_above_zero<E: de::Error>(written: &str) -> E {
        E::custom(format!(
            "expected a size above 0 bytes, found {written}: no model is that small{HINT}\
             {BYTES_HINT}"
        ))
    }
}

impl<'de> Deserialize<'de> for ByteCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ByteCountVisitor)
    }
}

/// The pattern of a percentage below 100, for the schema.
const PERCENT_PATTERN: &str = "^\\s*[0-9]{1,2}(\\.[0-9]+)?\\s*%\\s*$";

impl JsonSchema for ByteCount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteCount".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of bytes, or a size with a unit: kB, MB, GB (powers of \
                            1000) or KiB, MiB, GiB (powers of 1024), like \"20MB\"",
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
        })
    }
}

impl JsonSchema for LatencyImprovement {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LatencyImprovement".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Milliseconds, like 2, or a share of the source model's latency \
                            below 100%, like \"20%\"",
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ],
        })
    }
}

impl JsonSchema for SizeImprovement {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SizeImprovement".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, like 1000000 or \"1MB\", or a share of the source model's \
                            size below 100%, like \"20%\"",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("20MB"), Some(20_000_000));
        assert_eq!(parse_bytes(" 1.5 MiB "), Some(1_572_864));
        assert_eq!(parse_bytes("2kb"), Some(2000));
        assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("20 megabytes"), None);
        assert_eq!(parse_bytes("MB"), None);
        assert_eq!(parse_bytes("-3MB"), None);
        assert_eq!(parse_bytes("1.5"), None);
        assert_eq!(parse_bytes("1.5 B"), None);
        assert_eq!(parse_bytes("1.5kB"), Some(1500));
    }

    #[test]
    fn percentages_print_without_float_noise() {
        // 55 / 100 * 100 is 55.00000000000001 in floating point.
        assert_eq!(percent_text(55.0 / 100.0), "55");
        assert_eq!(percent_text(0.2), "20");
        assert_eq!(percent_text(0.015), "1.5");
        assert_eq!(percent_text(0.123456), "12.3456");
        assert_eq!(percent_text(0.0), "0");
        assert_eq!(Improvement::Relative(0.55).to_string(), "55%");
    }

    #[test]
    fn improvements_scale_with_the_source() {
        assert_eq!(Improvement::Relative(0.2).required(10.0), 2.0);
        assert_eq!(Improvement::Absolute(3.0).required(10.0), 3.0);
        assert_eq!(Improvement::Relative(0.25).to_string(), "25%");
    }
}
