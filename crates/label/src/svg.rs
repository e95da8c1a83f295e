//! The SVG page: the same marks as the PDF, in points (`viewBox` = the page in points, the
//! `width`/`height` in inches so it prints at its physical size). Each DataMatrix is one `<path>`
//! in module units (`class="datamatrix"`), scaled into place, so the module grid can be read back
//! from the file; text is Helvetica (Arial, sans-serif as fallbacks).

use std::fmt::Write as _;

use crate::{
    QUIET_ZONE_MODULES,
    page::{Anchor, BAR_MODULE_PT, Mark, Page},
    pdf::PDF_MODULE_PT,
    text::HELVETICA_CAP_HEIGHT,
};

/// One laid-out page as an SVG document.
pub(crate) fn page_svg(page: &Page) -> String {
    let mut svg = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail: the `let _` below discard an always-Ok result.
    let _ = write!(
        svg,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{w_in}in\" height=\"{h_in}in\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>\n",
        w_in = num(page.width / 72.0),
        h_in = num(page.height / 72.0),
        w = num(page.width),
        h = num(page.height),
    );
    for mark in &page.marks {
        match mark {
            Mark::DataMatrix { x, y, symbol } => {
                let quiet = QUIET_ZONE_MODULES as f32 * PDF_MODULE_PT;
                let _ = write!(
                    svg,
                    "<path class=\"datamatrix\" transform=\"translate({} {}) scale({})\" d=\"",
                    num(x + quiet),
                    num(y + quiet),
                    num(PDF_MODULE_PT)
                );
                for row in 0..symbol.size() {
                    for (col, len) in symbol.dark_runs(row) {
                        let _ = write!(svg, "M{col} {row}h{len}v1h-{len}z");
                    }
                }
                svg.push_str("\"/>\n");
            }
            Mark::Bars {
                center_x,
                y,
                height,
                modules,
            } => {
                let left = center_x - modules.len() as f32 * BAR_MODULE_PT / 2.0;
                let _ = write!(
                    svg,
                    "<path class=\"impb\" transform=\"translate({} {}) scale({} {})\" d=\"",
                    num(left),
                    num(*y),
                    num(BAR_MODULE_PT),
                    num(*height)
                );
                let mut i = 0;
                while i < modules.len() {
                    if modules.get(i) == Some(&true) {
                        let start = i;
                        while modules.get(i) == Some(&true) {
                            i += 1;
                        }
                        let _ = write!(svg, "M{start} 0h{}v1h-{}z", i - start, i - start);
                    } else {
                        i += 1;
                    }
                }
                svg.push_str("\"/>\n");
            }
            Mark::Rect { x, y, w, h } => {
                let _ = writeln!(
                    svg,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                    num(*x),
                    num(*y),
                    num(*w),
                    num(*h)
                );
            }
            Mark::Text {
                x,
                y,
                size,
                anchor,
                text,
            } => {
                let anchor = match anchor {
                    Anchor::Left => "start",
                    Anchor::Center => "middle",
                };
                let _ = writeln!(
                    svg,
                    "<text x=\"{}\" y=\"{}\" font-family=\"Helvetica, Arial, sans-serif\" \
                     font-size=\"{}\" text-anchor=\"{anchor}\" xml:space=\"preserve\">{}</text>",
                    num(*x),
                    num(y + size * HELVETICA_CAP_HEIGHT / 1000.0),
                    num(*size),
                    escape(text)
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// A coordinate with at most three decimals and no trailing zeros.
fn num(value: f32) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// Text content escaped for XML (label text is printable ASCII, validated before layout).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short_and_text_is_escaped() {
        assert_eq!(num(288.0), "288");
        assert_eq!(num(1.68), "1.68");
        assert_eq!(num(-0.0001), "0");
        assert_eq!(escape("A&B <C> \"D\""), "A&amp;B &lt;C&gt; &quot;D&quot;");
    }
}
