//! What a running runtime says about itself, readable from outside without stopping
//! anything: the applied patches and the transition in progress.
//!
//! In memory (`RuntimeInfo::status`): a `u64` sequence counter, odd while the runtime
//! rewrites the area, then a `u32` length and the encoded [`Status`]. A reader reads
//! the counter, the data, the counter again, and retries unless both are the same even
//! number.

use crate::format::{put_bytes, put_u32, Reader};
use crate::{MetaError, PatchMeta};

const MAGIC: [u8; 8] = *b"PULPSTA2";

/// Where a patch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PatchState {
    /// Every thread runs it.
    Applied = 1,
    /// A transition towards it is running.
    Applying = 2,
    /// A transition away from it is running.
    Reverting = 3,
    /// A cumulative (`%replace`) patch applied later replaced it: none of its functions
    /// runs any more. It stays listed; reverting it does nothing.
    Replaced = 4,
}

impl PatchState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Applying => "applying",
            Self::Reverting => "reverting",
            Self::Replaced => "replaced",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchStatus {
    pub state: PatchState,
    /// Unix time (seconds) of the last change of state.
    pub since: u64,
    pub meta: PatchMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Empty when the process accepts patches; otherwise why it refuses them (an
    /// operator's exclusion).
    pub refusing: String,
    /// Id of the running transition, 0 when none.
    pub transition: u64,
    /// 1: threads move to the patch's side; 0: a reversed transition moves them back.
    pub goal: u64,
    /// Executable ranges of the targets of the running transition (`[start, end)`).
    pub ranges: Vec<(u64, u64)>,
    pub patches: Vec<PatchStatus>,
}

impl Status {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        put_bytes(&mut out, self.refusing.as_bytes());
        out.extend_from_slice(&self.transition.to_le_bytes());
        out.extend_from_slice(&self.goal.to_le_bytes());
        put_u32(&mut out, self.ranges.len() as u32);
        for (s, e) in &self.ranges {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        put_u32(&mut out, self.patches.len() as u32);
        for p in &self.patches {
            out.push(p.state as u8);
            out.extend_from_slice(&p.since.to_le_bytes());
            let meta = p.meta.encode();
            put_u32(&mut out, meta.len() as u32);
            out.extend_from_slice(&meta);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, MetaError> {
        let mut r = Reader { buf: b };
        if r.take(8, "status magic")? != MAGIC {
            return Err(MetaError::BadMagic);
        }
        let refusing = r.string("status.refusing")?;
        let transition = r.u64("status.transition")?;
        let goal = r.u64("status.goal")?;
        let n = r.count("status.ranges")?;
        let mut ranges = Vec::with_capacity(n);
        for i in 0..n {
            ranges.push((r.u64(&format!("status.ranges[{i}].start"))?, r.u64(&format!("status.ranges[{i}].end"))?));
        }
        let n = r.count("status.patches")?;
        let mut patches = Vec::with_capacity(n);
        for i in 0..n {
            let field = format!("status.patches[{i}]");
            let state = match r.u8(&format!("{field}.state"))? {
                1 => PatchState::Applied,
                2 => PatchState::Applying,
                3 => PatchState::Reverting,
                4 => PatchState::Replaced,
                value => return Err(MetaError::UnknownValue { field: format!("{field}.state"), value }),
            };
            let since = r.u64(&format!("{field}.since"))?;
            let len = r.u32(&format!("{field}.meta length"))? as usize;
            let meta = PatchMeta::decode(r.take(len, &format!("{field}.meta"))?)?;
            patches.push(PatchStatus { state, since, meta });
        }
        Ok(Self { refusing, transition, goal, ranges, patches })
    }
}

/// Put an encoded status into an area: `[u64 seq][u32 len][bytes]`; the sequence
/// counter is handled by the writer (the runtime), this only lays out the rest.
pub fn frame(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + encoded.len());
    put_bytes(&mut out, encoded);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Function, Prologue, Target};

    #[test]
    fn round_trips() {
        let meta = PatchMeta {
            flags: 0,
            level: 0,
            patch_so: "/p/fix.so".into(),
            patch_build_id: vec![1, 2],
            patch_sha256: [0; 32],
            labels: vec!["CVE-1".into()],
            states: vec![],
            targets: vec![Target {
                path: "/p/lib.so".into(),
                build_id: vec![3],
                functions: vec![Function {
                    old: "f".into(),
                    offset: 0x10,
                    prologue: Prologue::NopPad66,
                    displaced: None,
                    new: "g".into(),
                }],
                references: vec![],
            }],
        };
        let s = Status {
            refusing: String::new(),
            transition: 7,
            goal: 1,
            ranges: vec![(0x1000, 0x2000)],
            patches: vec![PatchStatus { state: PatchState::Applying, since: 99, meta }],
        };
        let b = s.encode();
        assert_eq!(Status::decode(&b), Ok(s));
        for cut in 0..b.len() {
            assert!(Status::decode(&b[..cut]).is_err());
        }
    }
}
