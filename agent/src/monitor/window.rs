//! The metric window sent to the collector every send interval: each metric's samples
//! since the last one.

use std::collections::BTreeMap;

use holmes_proto::{Metric, MetricSeries, MetricWindow, Sample};

/// Accumulates samples per metric until the window is sent.
#[derive(Debug, Default)]
pub(super) struct WindowBuilder {
    series: BTreeMap<Metric, Vec<Sample>>,
}

impl WindowBuilder {
    pub(super) fn add(&mut self, unix_nanos: u64, values: &[(Metric, f64)]) {
        for &(metric, value) in values {
            self.series
                .entry(metric)
                .or_default()
                .push(Sample { unix_nanos, value });
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub(super) fn take(&mut self) -> MetricWindow {
        MetricWindow {
            series: std::mem::take(&mut self.series)
                .into_iter()
                .map(|(metric, samples)| MetricSeries { metric, samples })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_group_samples_by_metric_in_order() {
        let mut w = WindowBuilder::default();
        w.add(1, &[(Metric::CpuPercent, 5.0), (Metric::Threads, 3.0)]);
        w.add(2, &[(Metric::CpuPercent, 7.0)]);
        let taken = w.take();
        assert!(w.is_empty());
        assert_eq!(taken.series.len(), 2);
        assert_eq!(taken.series[0].metric, Metric::CpuPercent);
        assert_eq!(
            taken.series[0].samples,
            vec![
                Sample {
                    unix_nanos: 1,
                    value: 5.0
                },
                Sample {
                    unix_nanos: 2,
                    value: 7.0
                }
            ]
        );
    }
}
