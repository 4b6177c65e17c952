//! The summary of a run over many processes: its counts, refusals by reason, skipped
//! processes, its line (text or JSON) and its combined exit status.

use super::{Kind, Operation, ProcessResult, Skipped};
use crate::apply::report::{EXIT_EXITED, EXIT_LEFT_RUNNING, EXIT_OK, EXIT_REFUSED};
use crate::text::{count, printable};
use serde_json::{json, Map, Value};

/// The counts of a run over many processes, its summary line and exit status.
#[derive(Default)]
pub struct Summary {
    counts: Vec<(Kind, usize)>,
    /// Refusals by reason: words, JSON key, count.
    reasons: Vec<(&'static str, &'static str, usize)>,
    skipped: Vec<Skipped>,
    /// Processes never examined because the run was interrupted.
    pub not_attempted: usize,
    /// The signal that interrupted the run.
    pub interrupted: Option<i32>,
    /// Selecting no process is not an error (`--allow-none`).
    pub allow_none: bool,
}

impl Summary {
    pub fn add(&mut self, r: &ProcessResult) {
        match self.counts.iter_mut().find(|(k, _)| *k == r.kind) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((r.kind, 1)),
        }
        if let Some((words, key)) = r.reason {
            match self.reasons.iter_mut().find(|(_, k, _)| *k == key) {
                Some((_, _, n)) => *n += 1,
                None => self.reasons.push((words, key, 1)),
            }
        }
    }

    pub fn skip(&mut self, s: Skipped) {
        self.skipped.push(s);
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.counts.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }

    /// Processes worked on or listed.
    pub fn processes(&self) -> usize {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// Whether any process was changed.
    pub fn changed(&self) -> bool {
        self.counts.iter().any(|(k, n)| k.changed() && *n > 0)
    }

    /// 0 when every selected process ended in the state asked for; otherwise 2 if a
    /// transition was left running, else 1 if one refused or rolled back, else 3 if one
    /// exited (see `report::EXIT_STATUSES`). An interrupted run exits 128 + the signal.
    /// A selection of no process is an error (1): a misspelt target or name must not
    /// read as done.
    pub fn exit_status(&self) -> u8 {
        if let Some(sig) = self.interrupted {
            return 128 + sig as u8;
        }
        if self.processes() == 0 && !self.allow_none {
            return EXIT_REFUSED;
        }
        let worst = |s: u8| self.counts.iter().any(|(k, n)| *n > 0 && k.status() == s);
        [EXIT_LEFT_RUNNING, EXIT_REFUSED, EXIT_EXITED].into_iter().find(|&s| worst(s)).unwrap_or(EXIT_OK)
    }

    /// The summary line, after `subject: ` (what was done, e.g. the patch).
    pub fn to_text(&self, subject: &str) -> String {
        let mut parts = Vec::new();
        for kind in Kind::ALL {
            let n = self.count(kind);
            if n == 0 {
                continue;
            }
            let mut words = kind.words(n);
            if kind == Kind::Refused {
                let reasons: Vec<String> = if self.reasons.len() == 1 {
                    vec![self.reasons[0].0.to_string()]
                } else {
                    self.reasons.iter().map(|(w, _, n)| format!("{n} {w}")).collect()
                };
                words = format!("{words} ({})", reasons.join(", "));
            }
            parts.push(words);
        }
        if parts.is_empty() {
            parts.push("no process selected".into());
        }
        let mut groups: Vec<(&str, usize)> = Vec::new();
        for s in &self.skipped {
            match groups.iter_mut().find(|(w, _)| *w == s.why) {
                Some((_, n)) => *n += 1,
                None => groups.push((&s.why, 1)),
            }
        }
        if !groups.is_empty() {
            let what: Vec<String> = groups.iter().map(|(w, n)| format!("{n} {w}")).collect();
            parts.push(format!("skipped {}: {}", self.skipped.len(), what.join(", ")));
        }
        if let Some(sig) = self.interrupted {
            parts.push(format!(
                "interrupted by signal {sig}: {} not attempted",
                count(self.not_attempted, "process", "processes")
            ));
        }
        format!("{subject}: {}", parts.join(", "))
    }

    /// The summary object (`"type": "summary"`).
    pub fn to_json(&self, op: &Operation, subject: &str, dry_run: bool) -> Value {
        let counts: Map<String, Value> =
            Kind::ALL.iter().map(|k| (k.key().to_string(), json!(self.count(*k)))).collect();
        let reasons: Map<String, Value> = self.reasons.iter().map(|(_, k, n)| (k.to_string(), json!(n))).collect();
        let mut v = json!({
            "type": "summary",
            "operation": op.key(),
            "dry_run": dry_run,
            "processes": self.processes(),
            "changed": self.changed(),
            "exit_status": self.exit_status(),
            "counts": counts,
            "refused_reasons": reasons,
            "skipped": self.skipped.iter().map(|s| json!({
                "pid": s.pid,
                "name": printable(&s.name),
                "reason": s.key,
                "detail": s.detail,
            })).collect::<Vec<_>>(),
            "not_attempted": self.not_attempted,
            "interrupted_by": self.interrupted,
            "message": self.to_text(subject),
        });
        let m = v.as_object_mut().expect("an object");
        match op {
            Operation::Patch { meta, .. } => {
                m.insert("patch".into(), json!(meta.id()));
                m.insert("labels".into(), json!(meta.labels.iter().map(|l| printable(l)).collect::<Vec<_>>()));
            }
            Operation::RevertAll { target } => {
                m.insert("target".into(), json!(printable(target)));
            }
            Operation::Resume => {}
        }
        v
    }
}
