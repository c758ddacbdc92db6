//! Reading the files a benchmark run leaves behind: the JSON results this
//! generator writes and the CSV redis-benchmark writes. The summary, the
//! audit and drain of a finished run, and `seckill-bench field` (what
//! scripts/bench reads a figure with) all read them through here.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

/// A JSON result file, parsed.
pub fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The value at `pointer` (RFC 6901, e.g. `/summary/requests_per_second`).
pub fn json_field<'a>(json: &'a Value, pointer: &str, path: &Path) -> anyhow::Result<&'a Value> {
    json.pointer(pointer)
        .with_context(|| format!("{} has no {pointer}", path.display()))
}

/// A number at `pointer`.
pub fn json_number(json: &Value, pointer: &str, path: &Path) -> anyhow::Result<f64> {
    json_field(json, pointer, path)?
        .as_f64()
        .with_context(|| format!("{pointer} of {} is not a number", path.display()))
}

/// The product a `rush`, `tail` or `mixed` result file loaded, and the
/// members it got `202` for.
pub struct RunOutcome {
    pub product_id: i64,
    pub accepted_members: Vec<i64>,
}

pub fn run_outcome(path: &Path) -> anyhow::Result<RunOutcome> {
    let json = read_json(path)?;
    let product_id = json_field(&json, "/product_id", path)?
        .as_i64()
        .with_context(|| format!("product_id of {} is not an integer", path.display()))?;
    let accepted_members =
        serde_json::from_value(json_field(&json, "/accepted_members", path)?.clone())
            .with_context(|| format!("accepted_members of {} is not a list", path.display()))?;
    Ok(RunOutcome {
        product_id,
        accepted_members,
    })
}

/// Every product a result file loaded with its members answered `202`:
/// the `products` of a rush over several (`rush --products`), else the
/// one product of [`run_outcome`].
pub fn run_outcomes(path: &Path) -> anyhow::Result<Vec<RunOutcome>> {
    let json = read_json(path)?;
    let Some(products) = json.get("products") else {
        return Ok(vec![run_outcome(path)?]);
    };
    let products: Vec<ProductOutcome> = serde_json::from_value(products.clone())
        .with_context(|| format!("products of {} is not a list of products", path.display()))?;
    Ok(products
        .into_iter()
        .map(|p| RunOutcome {
            product_id: p.product_id,
            accepted_members: p.accepted_members,
        })
        .collect())
}

#[derive(serde::Deserialize)]
struct ProductOutcome {
    product_id: i64,
    accepted_members: Vec<i64>,
}

/// Splits one CSV line (quoted fields, `""` for a quote inside one).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// `column` of the last row of a CSV file with a header line, as
/// redis-benchmark `--csv` writes it; `None` if the file is empty (a
/// redis-benchmark that failed).
pub fn csv_last_row_field(path: &Path, column: &str) -> anyhow::Result<Option<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let Some(header) = lines.next() else {
        return Ok(None);
    };
    let index = csv_fields(header)
        .iter()
        .position(|name| name == column)
        .with_context(|| format!("{} has no column {column}", path.display()))?;
    let Some(last) = lines.next_back() else {
        bail!("{} has a header but no row", path.display());
    };
    let fields = csv_fields(last);
    let value = fields
        .get(index)
        .with_context(|| format!("the last row of {} has no {column}", path.display()))?;
    Ok(Some(value.clone()))
}

/// A number in `column` of the last CSV row (see [`csv_last_row_field`]).
pub fn csv_last_row_number(path: &Path, column: &str) -> anyhow::Result<Option<f64>> {
    csv_last_row_field(path, column)?
        .map(|value| {
            value
                .parse()
                .with_context(|| format!("{column} of {} is not a number", path.display()))
        })
        .transpose()
}

/// What `seckill-bench field` prints: a string as is, anything else as
/// JSON; a number rounded half to even when `round` is set.
pub fn field_text(path: &Path, key: &str, round: bool) -> anyhow::Result<String> {
    let is_csv = path.extension().is_some_and(|ext| ext == "csv");
    let value = if is_csv {
        let text = csv_last_row_field(path, key)?
            .with_context(|| format!("{} is empty", path.display()))?;
        Value::String(text)
    } else {
        let json = read_json(path)?;
        let pointer = if key.starts_with('/') {
            key.to_string()
        } else {
            format!("/{}", key.replace('.', "/"))
        };
        json_field(&json, &pointer, path)?.clone()
    };
    if round {
        let number = match &value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .with_context(|| format!("{key} of {} is not a number", path.display()))?;
        return Ok(format!("{}", number.round_ties_even() as i64));
    }
    Ok(match value {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::csv_fields;

    #[test]
    fn csv_fields_keep_quoted_commas_and_quotes() {
        assert_eq!(
            csv_fields(r#""EVALSHA a,b ""x""","55096.42",1"#),
            vec![r#"EVALSHA a,b "x""#, "55096.42", "1"]
        );
    }
}
