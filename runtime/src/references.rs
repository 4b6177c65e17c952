//! References (`#sym:var` in a `.dsc`, and every reference `pulp build-patch` generates):
//! before a patch is activated, the runtime writes into each of the patch object's
//! reference variables what it needs to know about a symbol of a target (its address,
//! its original code, its TLS index or offset from the thread pointer, or its address
//! relative to the patch's GOT).
//!
//! [`write_references`] checks every reference of every target first (the variable is an
//! exported, writable data object of the patch, big enough, or a file-local one `pulp
//! pack` located in the object's symbol table, inside its writable memory; the target
//! address is mapped; the target has TLS, static TLS for an offset from the thread pointer)
//! and writes nothing unless all of them resolve.

use crate::loader::{self, PatchObject};
use pulp_meta::{PatchMeta, RefKind};

/// glibc's `RTLD_DL_SYMENT`: `dladdr1` returns the matching `ElfW(Sym)`.
const RTLD_DL_SYMENT: libc::c_int = 1;

/// The function the patch object exports for [`RefKind::GotRelative`] references: it
/// returns the address of its own global offset table.
pub const GOT_FUNCTION: &str = "__pulp_got";

/// Resolve every reference of `meta` (whose targets are `targets`, in order) and write
/// them into `patch`'s variables. `original_code(target, entry)` gives where the original
/// code of the function at `entry` goes on, past any redirect (`None`: not code of the
/// target). Nothing is written unless everything resolves; the error names the target,
/// the symbol and the variable.
pub fn write_references(
    meta: &PatchMeta,
    targets: &[loader::Loaded],
    patch: &PatchObject,
    original_code: &dyn Fn(&loader::Loaded, u64) -> Option<u64>,
) -> Result<(), String> {
    let mut writes: Vec<(usize, [u8; 16], usize)> = Vec::new();
    let mut got: Option<u64> = None;
    let writable = loader::writable(patch.base);
    for (t, obj) in meta.targets.iter().zip(targets) {
        for r in &t.references {
            let what = || format!("reference `{}` of {} into `{}`", r.symbol, t.path, r.var);
            let var = match local_variable(patch, &r.var) {
                // A file-local variable: `pulp pack` checked its kind and size in the
                // object's symbol table, which the content hash ties to these bytes; its
                // memory must still be the object's own writable memory.
                Some(var) => {
                    check_writable(var, r.kind.size(), &writable).map_err(|why| format!("{}: {why}", what()))?;
                    var
                }
                None => {
                    let var = patch
                        .symbol(&r.var)
                        .map_err(|_| format!("{}: the patch object exports no variable `{}`", what(), r.var))?;
                    check_variable(var, r.kind.size(), &writable).map_err(|why| format!("{}: {why}", what()))?;
                    var
                }
            };
            if writes.iter().any(|w| w.0 == var) {
                return Err(format!("{}: variable `{}` receives two references", what(), r.var));
            }
            let addr = (obj.base as u64).wrapping_add(r.offset);
            let inside = || {
                if obj.is_mapped(addr, addr + 1) {
                    Ok(())
                } else {
                    Err(format!("{}: address {addr:#x} is outside the target as loaded", what()))
                }
            };
            let mut bytes = [0u8; 16];
            match r.kind {
                RefKind::Address => {
                    inside()?;
                    bytes[..8].copy_from_slice(&addr.to_le_bytes());
                }
                RefKind::Original => {
                    let body = original_code(obj, addr)
                        .ok_or_else(|| format!("{}: address {addr:#x} is not inside the target's code", what()))?;
                    bytes[..8].copy_from_slice(&body.to_le_bytes());
                }
                RefKind::TlsIndex => {
                    if obj.tls_modid == 0 {
                        return Err(format!("{}: the target has no thread-local storage", what()));
                    }
                    bytes[..8].copy_from_slice(&(obj.tls_modid as u64).to_le_bytes());
                    bytes[8..].copy_from_slice(&r.offset.to_le_bytes());
                }
                RefKind::TpOffset => {
                    let base = obj.tls_offset.map_err(|why| format!("{}: {why}", what()))?;
                    bytes[..8].copy_from_slice(&base.wrapping_add(r.offset as i64).to_le_bytes());
                }
                RefKind::GotRelative => {
                    inside()?;
                    let got = match got {
                        Some(g) => g,
                        None => *got.insert(patch_got(patch).map_err(|why| format!("{}: {why}", what()))?),
                    };
                    bytes[..8].copy_from_slice(&addr.wrapping_sub(got).to_le_bytes());
                }
            }
            writes.push((var, bytes, r.kind.size()));
        }
    }
    for (var, bytes, size) in writes {
        // SAFETY: `var` is a defined data object of the patch object of at least `size`
        // bytes lying in its writable (non-RELRO) memory (check_variable), and no code of
        // the patch runs yet, so nobody reads it concurrently.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), var as *mut u8, size) };
    }
    Ok(())
}

/// Call the patch's `__pulp_got()`.
fn patch_got(patch: &PatchObject) -> Result<u64, String> {
    let f = patch.symbol(GOT_FUNCTION).map_err(|_| {
        format!("the patch object exports no `{GOT_FUNCTION}` function (GOT-relative references need it)")
    })?;
    // SAFETY: `__pulp_got` is a function of the patch object taking nothing and returning
    // a pointer (`void *__pulp_got(void)`, emitted by `pulp build-patch`); the object is
    // loaded and relocated.
    let got = unsafe { std::mem::transmute::<usize, extern "C" fn() -> u64>(f)() };
    Ok(got)
}

/// The address of a receiving variable the patch object does not export (a `static`
/// one): `pulp pack` names it `NAME@OFFSET`, OFFSET (hex) its value in the object's own
/// symbol table, relative to the object's load base.
fn local_variable(patch: &PatchObject, var: &str) -> Option<usize> {
    let (_, offset) = var.rsplit_once('@')?;
    let offset = usize::from_str_radix(offset, 16).ok()?;
    patch.base.checked_add(offset)
}

/// Check that `[var, var + size)` lies in the patch object's writable memory.
fn check_writable(var: usize, size: usize, writable: &[(usize, usize)]) -> Result<(), String> {
    if writable.iter().any(|&(s, e)| s <= var && var.checked_add(size).is_some_and(|end| end <= e)) {
        Ok(())
    } else {
        Err("it lies outside the patch object's writable memory".into())
    }
}

/// Check that `var` is the start of a data object of at least `size` bytes in writable
/// memory.
fn check_variable(var: usize, size: usize, writable: &[(usize, usize)]) -> Result<(), String> {
    let mut info: libc::Dl_info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let mut sym: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: dladdr1 only reads the loader's tables and fills `info` and `sym`.
    let found = unsafe { libc::dladdr1(var as *const libc::c_void, &mut info, &mut sym, RTLD_DL_SYMENT) };
    if found == 0 || sym.is_null() || info.dli_saddr as usize != var {
        return Err("the dynamic linker knows no symbol at its address".into());
    }
    // SAFETY: with RTLD_DL_SYMENT, a successful dladdr1 stores a pointer to the symbol's
    // `Elf64_Sym` in the loaded object's dynamic symbol table, which stays mapped.
    let sym = unsafe { &*(sym as *const libc::Elf64_Sym) };
    const STT_OBJECT: u8 = 1;
    if sym.st_info & 0xf != STT_OBJECT {
        return Err("it is not a data object (declare it as a variable, e.g. `void *var;`)".into());
    }
    if (sym.st_size as usize) < size {
        return Err(format!("it has {} bytes, the reference needs {size}", sym.st_size));
    }
    check_writable(var, size, writable).map_err(|_| "it lies in read-only memory (make it a non-const variable)".into())
}
