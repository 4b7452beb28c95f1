//! Byte counts as recipes write them: whole bytes, or a number with a decimal or binary unit.

/// Reads a byte count: a whole number of bytes, or a number with a unit, decimal
/// (`kB`/`KB`, `MB`, `GB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`: powers of 1024),
/// rounded to whole bytes. A fraction of a byte (`"1.5"`, `"1.5B"`) is no byte count.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    if matches!(unit.as_str(), "" | "b") {
        return number.parse().ok();
    }
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.as_str() {
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (number * scale).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The pattern of a size with a unit, for the schema.
pub const SIZE_PATTERN: &str =
    "^\\s*([0-9]+\\s*[bB]?|[0-9]+(\\.[0-9]+)?\\s*[kKmMgG][iI]?[bB])\\s*$";
