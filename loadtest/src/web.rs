//! The aggregator's pages, compiled into the binary (no CDN, no files at run time): the live
//! dashboard at `/`, the currency page at `/currency`, their scripts and style under `/static/`.

/// `(path, content type, body)` of every page and asset.
pub const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../web/dashboard.html")),
    ("/currency", "text/html; charset=utf-8", include_str!("../web/currency.html")),
    ("/static/style.css", "text/css; charset=utf-8", include_str!("../web/style.css")),
    ("/static/chart.js", "text/javascript; charset=utf-8", include_str!("../web/chart.js")),
    ("/static/dashboard.js", "text/javascript; charset=utf-8", include_str!("../web/dashboard.js")),
    ("/static/currency.js", "text/javascript; charset=utf-8", include_str!("../web/currency.js")),
];

/// The file served at `path`, if any.
pub fn file(path: &str) -> Option<(&'static str, &'static str)> {
    FILES.iter().find(|(p, _, _)| *p == path).map(|(_, ct, body)| (*ct, *body))
}
