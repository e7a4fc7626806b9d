//! Pieces of self-contained HTML: escaped text, tables, images as `data:` URIs and SVG charts
//! inline, so that a page needs no other file and no network (the report, notebook outputs).
use base64::Engine;

/// `text` with the characters HTML gives a meaning escaped (for text and attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// PNG bytes as a `data:image/png;base64,…` URI.
pub fn png_data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// An SVG document as an element to place in a page: without a leading `<?xml …?>`
/// declaration, wrapped in a `<figure class="chart">`.
pub fn inline_svg(svg: &str) -> String {
    let body = match svg.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(svg, |(_, b)| b.trim_start()),
        None => svg,
    };
    format!("<figure class=\"chart\">{body}</figure>\n")
}

/// A table: a header row, then one row per entry of `rows`. Cells are HTML already (escape
/// text with [`escape`]); a cell that reads as a number is aligned right.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table>\n<thead><tr>");
    for h in headers {
        s += &format!("<th>{}</th>", escape(h));
    }
    s += "</tr></thead>\n<tbody>\n";
    for row in rows {
        s += "<tr>";
        for cell in row {
            let numeric = cell.trim_start_matches(['+', '-']).parse::<f64>().is_ok();
            if numeric {
                s += &format!("<td class=\"num\">{cell}</td>");
            } else {
                s += &format!("<td>{cell}</td>");
            }
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_numbers_align_right() {
        assert_eq!(
            escape(r#"<a href="x">T-shirt & 'top'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;T-shirt &amp; &#39;top&#39;&lt;/a&gt;"
        );
        let t = table(&["a<b", "n"], &[vec!["x".into(), "+1.50".into()]]);
        assert!(t.contains("<th>a&lt;b</th>"), "{t}");
        assert!(t.contains("<td>x</td><td class=\"num\">+1.50</td>"), "{t}");
        assert_eq!(
            inline_svg("<?xml version=\"1.0\"?>\n<svg></svg>"),
            "<figure class=\"chart\"><svg></svg></figure>\n"
        );
        assert_eq!(png_data_uri(b"PNG"), "data:image/png;base64,UE5H");
    }
}
