//! The live progress display.

use super::*;

/// The live progress display: one line for ingest and one per stage, drawn only on a terminal.
pub(super) struct Bars {
    pub(super) multi: MultiProgress,
    pub(super) ingest: ProgressBar,
    pub(super) stages: Vec<ProgressBar>,
}

impl Bars {
    pub(super) fn new(events: u64) -> Self {
        let target = if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template(
            "  {prefix:<12} [{bar:30}] {pos:>8}/{len:<8} {per_sec:>14} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = |prefix: &str, len: Option<u64>| {
            let b = multi.add(len.map_or_else(ProgressBar::no_length, ProgressBar::new));
            b.set_style(style.clone());
            b.set_prefix(prefix.to_owned());
            b
        };
        let ingest = bar("ingest", Some(events));
        // The stages' totals are known as ingest goes.
        let stages = STAGES.iter().map(|s| bar(s.label(), None)).collect();
        Bars {
            multi,
            ingest,
            stages,
        }
    }

    pub(super) fn finish(&self) {
        self.ingest.finish_and_clear();
        for b in &self.stages {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}
