//! The request target split into what the scorer sees: the path without the query, and the
//! query parameters percent-decoded (lossily) and bounded.

use palisade_proto::v1::QueryParam;

use crate::config::QueryLimits;

/// Query parameters for the scorer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundedQuery {
    /// Kept parameters, in request order.
    pub params: Vec<QueryParam>,
    /// True when a parameter was dropped or a name or value cut.
    pub truncated: bool,
}

/// Splits `:path` into the path (up to the first `?`) and the raw query (after it).
pub fn split_path(full: &str) -> (&str, Option<&str>) {
    match full.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (full, None),
    }
}

/// Parses `a=1&b=x%20y`: `&`-separated, name and value split at the first `=`, `+` and
/// `%XX` decoded (form encoding), invalid UTF-8 replaced with U+FFFD. Empty segments are
/// skipped. Keeps at most `max_params` parameters and cuts names and values to their byte
/// limits on character boundaries.
pub fn parse(query: &str, limits: &QueryLimits) -> BoundedQuery {
    let mut out = BoundedQuery::default();
    for segment in query.split('&').filter(|s| !s.is_empty()) {
        if out.params.len() >= limits.max_params {
            out.truncated = true;
            break;
        }
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        let (name, cut_name) = bounded(decode(name), limits.max_name_bytes);
        let (value, cut_value) = bounded(decode(value), limits.max_value_bytes);
        out.truncated |= cut_name || cut_value;
        out.params.push(QueryParam { name, value });
    }
    out
}

/// `+` to space and `%XX` to its byte; a `%` not followed by two hex digits is kept as is.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).and_then(|c| hex_val(*c)),
                    bytes.get(i + 2).and_then(|c| hex_val(*c)),
                ) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `s` cut to at most `max` bytes on a character boundary, and whether it was cut.
pub fn bounded(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn limits(p: usize, n: usize, v: usize) -> QueryLimits {
        QueryLimits {
            max_params: p,
            max_name_bytes: n,
            max_value_bytes: v,
        }
    }

    fn pairs(q: &BoundedQuery) -> Vec<(&str, &str)> {
        q.params
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn splits_path_and_query() {
        assert_eq!(split_path("/a/b?x=1&y"), ("/a/b", Some("x=1&y")));
        assert_eq!(split_path("/a/b"), ("/a/b", None));
        assert_eq!(split_path("/a?"), ("/a", Some("")));
        assert_eq!(split_path("/a?b?c"), ("/a", Some("b?c")));
    }

    #[test]
    fn parses_and_decodes() {
        let q = parse("a=1&b=x%20y+z&&c&=v&d=e=f", &QueryLimits::default());
        assert_eq!(
            pairs(&q),
            vec![
                ("a", "1"),
                ("b", "x y z"),
                ("c", ""),
                ("", "v"),
                ("d", "e=f")
            ]
        );
        assert!(!q.truncated);
    }

    #[test]
    fn percent_decoding_is_lossy_and_lenient() {
        assert_eq!(decode("%41%62"), "Ab");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
        assert_eq!(decode("%FF%fe"), "\u{fffd}\u{fffd}");
        assert_eq!(decode("%00"), "\0");
    }

    #[test]
    fn count_is_bounded() {
        let q = parse("a=1&b=2&c=3", &limits(2, 64, 64));
        assert_eq!(pairs(&q), vec![("a", "1"), ("b", "2")]);
        assert!(q.truncated);

        let q = parse("a=1&b=2&&", &limits(2, 64, 64));
        assert!(!q.truncated, "trailing empty segments are not parameters");

        let q = parse("a=1", &limits(0, 64, 64));
        assert!(q.params.is_empty() && q.truncated);
    }

    #[test]
    fn names_and_values_are_cut_on_char_boundaries() {
        let q = parse("abcdef=%C3%A9%C3%A9%C3%A9", &limits(8, 4, 5));
        assert_eq!(pairs(&q), vec![("abcd", "éé")]);
        assert!(q.truncated);

        let (s, cut) = bounded("€€".into(), 4);
        assert_eq!((s.as_str(), cut), ("€", true));
        let (s, cut) = bounded("€".into(), 2);
        assert_eq!((s.as_str(), cut), ("", true));
        let (s, cut) = bounded("ab".into(), 2);
        assert_eq!((s.as_str(), cut), ("ab", false));
    }

    #[test]
    fn exact_limits_are_not_truncation() {
        let q = parse("abcd=12345", &limits(1, 4, 5));
        assert!(!q.truncated);
    }
}
