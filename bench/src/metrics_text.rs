//! Reading a counter out of a Prometheus text exposition (`GET /metrics`):
//! the sum of every series of one metric whose labels include the given
//! pairs. `seckill-bench metric` (how scripts/bench counts the buys the
//! edge forwarded) and the end-to-end tests read the origin's metrics
//! through here.

/// One sample line of the exposition.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

/// `None` for comments, blank lines and lines that do not parse.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let Some(open) = line.find('{') else {
        let (name, rest) = line.split_once(char::is_whitespace)?;
        return Some(Sample {
            name,
            labels: Vec::new(),
            value: value(rest)?,
        });
    };
    let name = &line[..open];
    let mut rest = &line[open + 1..];
    let mut labels = Vec::new();
    loop {
        // `key="value",` … `}`; values escape `\`, `"` and newlines.
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some(Sample {
                name,
                labels,
                value: value(after)?,
            });
        }
        let (key, after) = rest.split_once('=')?;
        let quoted = after.strip_prefix('"')?;
        let mut chars = quoted.char_indices();
        let mut text = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                '"' => break i,
                c => text.push(c),
            }
        };
        labels.push((key.trim().to_string(), text));
        rest = &quoted[end + 1..];
    }
}

/// The value after the series (a timestamp may follow it).
fn value(rest: &str) -> Option<f64> {
    rest.split_whitespace().next()?.parse().ok()
}

/// The sum of every series of `name` whose labels include all of `labels`
/// (e.g. `[("route", "/api/seckill/{product_id}/orders")]`); 0 if none.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(sample)
        .filter(|sample| {
            sample.name == name
                && labels.iter().all(|(k, v)| {
                    sample
                        .labels
                        .iter()
                        .any(|(key, value)| key == k && value == v)
                })
        })
        .map(|sample| sample.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum;

    const TEXT: &str = r#"# HELP http_requests_total HTTP requests by route, method and status
# TYPE http_requests_total counter
http_requests_total{method="POST",route="/api/seckill/{product_id}/orders",status="202"} 50
http_requests_total{method="POST",route="/api/seckill/{product_id}/orders",status="409"} 150
http_requests_total{method="GET",route="/api/time",status="200"} 7
http_requests_total_other{route="/api/seckill/{product_id}/orders"} 1000
odd{note="a \"quoted\", comma\\",route="x"} 2 1700000000000
seckill_sold_out_flags 1
"#;

    #[test]
    fn sums_the_series_whose_labels_match() {
        let buys = [("route", "/api/seckill/{product_id}/orders")];
        assert_eq!(sum(TEXT, "http_requests_total", &buys), 200.0);
        assert_eq!(
            sum(TEXT, "http_requests_total", &[buys[0], ("status", "409")]),
            150.0
        );
        assert_eq!(sum(TEXT, "http_requests_total", &[]), 207.0);
        assert_eq!(sum(TEXT, "seckill_sold_out_flags", &[]), 1.0);
        assert_eq!(sum(TEXT, "odd", &[("note", r#"a "quoted", comma\"#)]), 2.0);
        assert_eq!(sum(TEXT, "odd", &[("route", "x")]), 2.0);
        assert_eq!(sum(TEXT, "missing", &[]), 0.0);
    }
}
