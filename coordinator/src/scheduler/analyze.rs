//! EXPLAIN ANALYZE: what each stage did, summed over its tasks.

use quarry_common::metrics::OperatorMetrics;

use super::{QueryProfile, StageProfile};

/// 1536 → "1.5 KB" (binary units).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn millis(ns: u64) -> String {
    format!("{:.1}ms", ns as f64 / 1e6)
}

/// Operators of a stage with their metrics summed over its tasks, in plan order.
fn summed(tasks: &[&[OperatorMetrics]]) -> Vec<OperatorMetrics> {
    let mut out: Vec<OperatorMetrics> = Vec::new();
    for operators in tasks {
        for (i, op) in operators.iter().enumerate() {
            match out.get_mut(i) {
                Some(sum) => {
                    sum.output_rows += op.output_rows;
                    sum.elapsed_compute_ns += op.elapsed_compute_ns;
                    sum.spill_count += op.spill_count;
                    sum.spilled_bytes += op.spilled_bytes;
                    sum.bytes_scanned += op.bytes_scanned;
                    sum.fetched_bytes += op.fetched_bytes;
                }
                None => out.push(op.clone()),
            }
        }
    }
    out
}

fn operator_lines(out: &mut String, operators: &[OperatorMetrics]) {
    for op in operators {
        let name = op.operator.split(':').next().unwrap_or(&op.operator);
        let detail = op
            .operator
            .strip_prefix(name)
            .unwrap_or("")
            .trim_start_matches(':')
            .trim();
        let mut metrics = format!(
            "rows={}, compute={}",
            op.output_rows,
            millis(op.elapsed_compute_ns)
        );
        if op.bytes_scanned > 0 {
            metrics.push_str(&format!(", scanned={}", human_bytes(op.bytes_scanned)));
        }
        if op.fetched_bytes > 0 {
            metrics.push_str(&format!(", fetched={}", human_bytes(op.fetched_bytes)));
        }
        if op.spill_count > 0 {
            metrics.push_str(&format!(
                ", spills={}, spilled={}",
                op.spill_count,
                human_bytes(op.spilled_bytes)
            ));
        }
        let indent = "  ".repeat(op.depth as usize + 1);
        if detail.is_empty() {
            out.push_str(&format!("{indent}{name} [{metrics}]\n"));
        } else {
            out.push_str(&format!("{indent}{name}: {detail} [{metrics}]\n"));
        }
    }
}

/// One stage: its tasks, rows, bytes, time, spill, attempts and skew, then operators.
pub(super) fn describe_stage(stage: &StageProfile) -> String {
    let tasks = stage.tasks.len();
    let (rows, bytes) = (stage.output_rows(), stage.output_bytes());
    let mut times: Vec<u64> = stage.tasks.iter().map(|t| t.elapsed_ms).collect();
    times.sort_unstable();
    let max = times.last().copied().unwrap_or(0);
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    let skew = if median > 0 {
        max as f64 / median as f64
    } else {
        1.0
    };
    let attempts: usize = stage
        .tasks
        .iter()
        .map(|t| 1 + t.failed_attempts.len())
        .sum();
    let operators = summed(
        &stage
            .tasks
            .iter()
            .map(|t| t.operators.as_slice())
            .collect::<Vec<_>>(),
    );
    let spilled: u64 = operators.iter().map(|o| o.spilled_bytes).sum();
    let mut executors: Vec<&str> = stage.tasks.iter().map(|t| t.executor_id.as_str()).collect();
    executors.sort_unstable();
    executors.dedup();
    let mut out = format!(
        "Stage {} (output: {}): tasks={tasks}, attempts={attempts}, rows={rows}, bytes={}, time max={max}ms median={median}ms, skew={skew:.2}, spilled={}, executors=[{}]\n",
        stage.stage_id,
        stage.output,
        human_bytes(bytes),
        human_bytes(spilled),
        executors.join(", ")
    );
    for note in &stage.notes {
        out.push_str(&format!("  {note}\n"));
    }
    operator_lines(&mut out, &operators);
    out
}

/// The report rows: (what, text).
pub(crate) fn report(profile: &QueryProfile, rows: u64, elapsed_ms: u64) -> Vec<(String, String)> {
    let mut out = vec![(
        "Query".to_string(),
        format!(
            "rows={rows}, time={elapsed_ms}ms, stages={}, tasks={}",
            profile.stages.len() + 1,
            profile.stages.iter().map(|s| s.tasks.len()).sum::<usize>() + 1
        ),
    )];
    let mut root = String::from("Stage root (coordinator)\n");
    operator_lines(&mut root, &profile.root);
    out.push(("Stage root".to_string(), root));
    for stage in profile.stages.iter().rev() {
        out.push((format!("Stage {}", stage.stage_id), describe_stage(stage)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::TaskProfile;

    #[test]
    fn skew_is_largest_over_median() {
        let task = |p: u32, ms: u64| TaskProfile {
            partition: p,
            elapsed_ms: ms,
            output_rows: 10,
            executor_id: format!("e{p}"),
            ..TaskProfile::default()
        };
        let stage = StageProfile {
            stage_id: 1,
            output: "none".to_string(),
            tasks: vec![task(0, 10), task(1, 10), task(2, 30)],
            ..StageProfile::default()
        };
        let text = describe_stage(&stage);
        assert!(text.contains("tasks=3"), "{text}");
        assert!(text.contains("skew=3.00"), "{text}");
        assert!(text.contains("rows=30"), "{text}");
        assert!(text.contains("executors=[e0, e1, e2]"), "{text}");
    }
}
