//! Where a profiled server's time goes (docs/profile/summary.md, written by
//! scripts/profile): the samples of each folded perf profile (inferno's
//! `stack;frames samples` lines) shared out among named parts of the
//! stack, so the shares of a profile add up to 100%.
//!
//! A sample in the kernel (a frame marked `_[k]`) goes to the first kernel
//! part any of its kernel frames names; any other sample to the innermost
//! frame naming a part.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};

const KERNEL_PARTS: &[(&str, &[&str])] = &[
    (
        "kernel: TCP send (incl. loopback delivery to the peer)",
        &["tcp_sendmsg"],
    ),
    ("kernel: TCP receive", &["tcp_recvmsg"]),
    (
        "kernel: epoll, futex, scheduler",
        &["epoll", "futex", "schedule"],
    ),
    ("kernel: other", &[""]),
];

const USER_PARTS: &[(&str, &[&str])] = &[
    ("Redis client (redis-rs)", &["redis::"]),
    ("reserve batcher", &["inventory::batcher"]),
    ("member token check (HMAC)", &["token::verify", "sha2::"]),
    ("rate limiter", &["rate_limit"]),
    ("metrics", &["prometheus::", "metrics::track"]),
    ("allocator", &["malloc", "_int_free", "cfree"]),
    (
        "axum routing, extractors, handlers",
        &["axum::", "seckill_origin::routes"],
    ),
    ("hyper HTTP/1 parsing and encoding", &["hyper::"]),
    ("tokio runtime", &["tokio::"]),
];

const OTHER: &str = "other (std, libc)";

fn names_any(frame: &str, keys: &[&str]) -> bool {
    keys.iter().any(|key| frame.contains(key))
}

/// The part one stack's samples go to.
fn part_of(stack: &str) -> &'static str {
    let frames: Vec<&str> = stack.split(';').collect();
    let kernel: Vec<&str> = frames
        .iter()
        .copied()
        .filter(|frame| frame.ends_with("_[k]"))
        .collect();
    if !kernel.is_empty() {
        return KERNEL_PARTS
            .iter()
            .find(|(_, keys)| kernel.iter().any(|frame| names_any(frame, keys)))
            .map(|(label, _)| *label)
            .expect("the last kernel part names every frame");
    }
    frames
        .iter()
        .rev()
        .find_map(|frame| {
            USER_PARTS
                .iter()
                .find(|(_, keys)| names_any(frame, keys))
                .map(|(label, _)| *label)
        })
        .unwrap_or(OTHER)
}

/// Each part's share of one folded profile, in percent.
fn shares(folded: &str, path: &Path) -> anyhow::Result<HashMap<&'static str, f64>> {
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    let mut total = 0;
    for line in folded.lines().filter(|line| !line.trim().is_empty()) {
        let (stack, samples) = line
            .rsplit_once(' ')
            .with_context(|| format!("{}: not a folded stack: {line}", path.display()))?;
        let samples: u64 = samples
            .trim()
            .parse()
            .with_context(|| format!("{}: no sample count: {line}", path.display()))?;
        total += samples;
        *counts.entry(part_of(stack)).or_default() += samples;
    }
    if total == 0 {
        bail!("{} holds no samples", path.display());
    }
    Ok(counts
        .into_iter()
        .map(|(part, n)| (part, 100.0 * n as f64 / total as f64))
        .collect())
}

/// The Markdown table for the profiles `<dir>/<name>.folded`, a column
/// each.
pub fn table(dir: &Path, names: &[String]) -> anyhow::Result<String> {
    let mut columns = Vec::new();
    for name in names {
        let path = dir.join(format!("{name}.folded"));
        let folded = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        columns.push(shares(&folded, &path)?);
    }
    let mut lines = vec![
        format!("| where the server's time goes | {} |", names.join(" | ")),
        format!("|---|{}", "---|".repeat(names.len())),
    ];
    let labels = KERNEL_PARTS
        .iter()
        .chain(USER_PARTS)
        .map(|(label, _)| *label)
        .chain([OTHER]);
    for label in labels {
        let cells: Vec<String> = columns
            .iter()
            .map(|shares| format!("{:.1}%", shares.get(label).copied().unwrap_or(0.0)))
            .collect();
        lines.push(format!("| {label} | {} |", cells.join(" | ")));
    }
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::part_of;

    #[test]
    fn kernel_samples_go_to_the_first_kernel_part_and_others_to_the_innermost_frame() {
        assert_eq!(
            part_of("tokio::run;hyper::poll;tcp_recvmsg_[k];schedule_[k]"),
            "kernel: TCP receive"
        );
        assert_eq!(part_of("tokio::run;do_syscall_64_[k]"), "kernel: other");
        assert_eq!(
            part_of("tokio::run;hyper::poll;redis::cmd;malloc"),
            "allocator"
        );
        assert_eq!(
            part_of("tokio::run;hyper::poll;redis::cmd"),
            "Redis client (redis-rs)"
        );
        assert_eq!(part_of("main;memcpy"), "other (std, libc)");
    }
}
