//! The little SVG both charts need, written by hand with std only: escaping and a readable
//! axis top.

/// Escapes text for SVG.
pub fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// 1, 2 or 5 times a power of ten, at or above `value`: a readable axis top.
pub fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&top| top >= value)
        .unwrap_or(10.0 * magnitude)
}

/// The opening of a chart: the `<svg>` element with its size, a white
/// background and a bold title.
pub fn open(width: f64, height: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12"><rect width="{width}" height="{height}" fill="white"/><text x="20" y="28" font-size="14" font-weight="bold">{}</text>"#,
        xml(title)
    )
}
