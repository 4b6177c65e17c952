//! What a tool's request asks (`pulp_meta::abi::Op`), served on top of the registry; and,
//! where the process may write its own code, writing it right here, in the request.

use crate::code::{self, CodeWriter};
use crate::messages;
use crate::registry::{self, Registry};
use pulp_meta::abi::{self, EntryStatus, Request};
use std::sync::atomic::Ordering;

/// Serve a request (see `pulp_meta::abi::Op`).
pub fn serve(reg: &mut Registry, req: &Request<'_>, buf: &mut [u8]) -> Result<EntryStatus, String> {
    use abi::Op;
    if let Some(why) = reg.refusal() {
        if !matches!(req.op, Op::SetPatchable | Op::Finish | Op::Reverse | Op::SyncCore | Op::Resume) {
            return Err(format!("this process refuses live patches: {why}"));
        }
    }
    let status = match req.op {
        Op::Apply => registry::apply(reg, req.meta, &req.gates, &req.inside, registry::Object::Bytes(req.object), buf),
        Op::Revert => registry::revert(reg, req, buf),
        Op::RevertAll => registry::revert_all(reg, req, buf),
        Op::Finish => registry::finish(reg, req.arg != 0, buf),
        Op::Reverse => reg.reverse(buf),
        Op::SyncCore => Ok(code::sync_core()),
        Op::Resume => reg.resume(buf),
        Op::SetPatchable => reg.set_patchable(req.arg != 0, buf),
    }?;
    if matches!(req.op, Op::Apply | Op::Revert | Op::RevertAll | Op::Resume | Op::Finish) {
        // The tool is about to put int3s on unpadded entries: our SIGTRAP handler must
        // be the process's (the program may have installed its own since).
        if abi::decode_reply(buf).is_some_and(|r| r.iter().any(|f| f.kind == pulp_meta::Prologue::Unpadded)) {
            crate::trampoline::install()?;
        }
        return Ok(write_own_code(reg, status, buf));
    }
    Ok(status)
}

/// Where the process may write its own code (`code::CodeWriter`), write what the reply
/// in `buf` asks for right here, in the entry: the tool then finds nothing left to write
/// (and needs no second call for the barrier). A transition whose entries are all
/// written is armed at once; an immediate one is finished at once (`Done`). Where the
/// process cannot, or a write fails, the tool writes the code as before: the status is
/// left as it was.
fn write_own_code(reg: &mut Registry, status: EntryStatus, buf: &mut [u8]) -> EntryStatus {
    if status == EntryStatus::Refused || status == EntryStatus::Busy {
        return status;
    }
    let Some(writer) = CodeWriter::open() else { return status };
    if let Err(e) = writer.write_reply(buf) {
        messages::log(&format!("writing code from inside the process failed, the tool writes it: {e}"));
        return status;
    }
    if status != EntryStatus::Transition {
        return status;
    }
    // Unpadded entries are written by the tool alone: until it has, nobody may move.
    if abi::decode_reply(buf).is_some_and(|r| r.iter().any(|f| f.kind == pulp_meta::Prologue::Unpadded)) {
        return status;
    }
    if reg.immediate_running() {
        if registry::finish(reg, true, buf).is_err() || writer.write_reply(buf).is_err() {
            return status;
        }
        return EntryStatus::Done;
    }
    // Every entry is redirected: threads may move from now on.
    pulp_trm::armed().store(1, Ordering::Release);
    status
}
