//! The patch's assembly for one unit: the changed and new functions (and new data, and
//! whatever of the unit they need that the running object lacks), in which every
//! reference to something the running object has goes to the running object's own.
//!
//! In the large code model every such reference is a 64-bit operand relative to the GOT,
//! or a GOT entry, so each becomes a load from a **slot** the runtime fills before the
//! patch runs (`RefKind`, in `pulp-meta`):
//!
//! ```text
//! movabsq $X@GOTOFF, %reg   ->  movq .Lslot(%rip), %reg    slot = &X - GOT   (got-relative)
//! movabsq $X@PLTOFF, %reg   ->  movq .Lslot(%rip), %reg    slot = &X - GOT   (got-relative)
//! movabsq $X@GOT, %reg      ->  movabsq $.Lslot@GOTOFF, %reg   slot = &X     (address)
//! X@GOTPCREL(%rip)          ->  .Lslot(%rip)                   slot = &X     (address)
//! leaq X@tlsgd(%rip), %rdi  ->  leaq .Lslot(%rip), %rdi        slot = tls_index of X
//! leaq X@tlsld(%rip), %rdi  ->  leaq .Lslot(%rip), %rdi        slot = tls_index of an anchor
//! X@dtpoff                  ->  (offset of X) - (offset of the anchor), a number
//! X@gottpoff(%rip)          ->  .Lslot(%rip)                   slot = &X - %fs:0 (tp-offset)
//! call X / jmp X / jcc X    ->  a local trampoline `jmp *.Lslot(%rip)`, slot = &X
//! .quad X+N (data)          ->  an exported 8-byte variable the runtime fills with &X+N
//! ```
//!
//! Each slot is an exported variable `__pulp_ref_U_K` the `.dsc` names in a reference.
//! No code is written at load time, the distance between the patch and the target does not
//! matter, and the patch is an ordinary `dlopen`ed object (unwinding, gdb, exceptions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use pulp_elf::symbols::cold_parent;
use pulp_elf::{Symbol, SymbolKind};
use pulp_meta::RefKind;

use super::asm::{self, is_local_label, Stmt, StmtKind};
use super::operand::{addend_of, replace_token, sanitize};
use super::target::TargetIndex;
use super::tu::{Diff, Tu};

/// A reference the runtime fills: the `.dsc` line `#symbol@value+addend:var [kind]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The exported variable.
    pub var: String,
    pub kind: RefKind,
    /// The target's symbol and its value.
    pub symbol: String,
    pub value: u64,
    pub addend: u64,
}

/// A function of the target the patch replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The function (its name in the target).
    pub name: String,
    pub target: Symbol,
    /// The exported name of the new version in the patch.
    pub alias: String,
}

/// What one unit contributes to the patch.
#[derive(Debug, Default)]
pub struct UnitOutput {
    pub asm: String,
    pub replaced: Vec<Replaced>,
    pub slots: Vec<Slot>,
    /// Functions the fix adds, kept.
    pub new_functions: Vec<String>,
    /// New functions nothing kept uses (left out).
    pub unused_new: Vec<String>,
    /// Unchanged functions the running object has no copy of (inlined there), copied.
    pub copied: Vec<String>,
    pub new_data: Vec<String>,
    /// Changed functions with no way out (no return, no tail call, no call that ends the
    /// program): a thread inside keeps the old code.
    pub endless: Vec<String>,
    /// C++ (the patch is linked with the C++ driver).
    pub cxx: bool,
}

/// What the generator knows around one unit.
pub struct Input<'a> {
    /// The unit's number (for unique names).
    pub index: usize,
    pub before: &'a Tu,
    pub after: &'a Tu,
    pub diff: &'a Diff,
    pub target: &'a TargetIndex,
    /// The unit's file group in the target's symbol table.
    pub group: Option<u32>,
    /// Global names the patch defines (in any unit): references to them stay in the patch.
    pub patch_globals: &'a BTreeSet<String>,
}

/// How a referenced name resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Resolution {
    /// Kept in the patch.
    Local,
    /// The running object's.
    Target(Symbol),
    /// Another object's (libc, ...): the dynamic linker binds it.
    External,
}

/// Functions that end the program or unwind: a function calling them needs no return.
const NO_RETURN: &[&str] = &[
    "abort",
    "exit",
    "_exit",
    "_Exit",
    "quick_exit",
    "__assert_fail",
    "__assert_perror_fail",
    "__stack_chk_fail",
    "__fortify_fail",
    "__chk_fail",
    "longjmp",
    "siglongjmp",
    "_longjmp",
    "__longjmp_chk",
    "pthread_exit",
    "__cxa_throw",
    "__cxa_rethrow",
    "_Unwind_Resume",
    "err",
    "errx",
    "verr",
    "verrx",
    "__cxa_bad_cast",
    "__cxa_pure_virtual",
    "_ZSt9terminatev",
];

struct Generator<'a> {
    input: &'a Input<'a>,
    resolved: HashMap<String, Resolution>,
    /// Functions and data objects kept (after-names).
    keep: BTreeSet<String>,
    work: Vec<String>,
    out: UnitOutput,
    slots: BTreeMap<(u8, u64, u64), usize>,
    /// Label per slot, and trampolines wanted (slot index).
    tramps: BTreeSet<usize>,
    tls_anchor: Option<Symbol>,
    /// Local-dynamic TLS accesses of the patch's own new variables were seen (they share
    /// one module base with the running object's in the compiler's code: not both).
    ld_local: bool,
}

/// Generate the patch assembly of one unit (whose diff is not empty).
pub fn generate(input: &Input<'_>) -> Result<UnitOutput, String> {
    let mut g = Generator {
        input,
        resolved: HashMap::new(),
        keep: BTreeSet::new(),
        work: Vec::new(),
        out: UnitOutput::default(),
        slots: BTreeMap::new(),
        tramps: BTreeSet::new(),
        tls_anchor: None,
        ld_local: false,
    };
    let a = input.after;
    for f in &input.diff.changed {
        g.add(f);
    }
    // New global functions may be used by other units of the patch.
    for f in &input.diff.new_functions {
        if a.unit.attrs.get(f).is_some_and(|x| x.global) {
            g.add(f);
        }
    }
    while let Some(name) = g.work.pop() {
        for r in a.references(&a.group(&name)) {
            g.resolve(&r)?;
        }
    }
    g.out.new_functions = input.diff.new_functions.iter().filter(|f| g.keep.contains(*f)).cloned().collect();
    g.out.unused_new = input.diff.new_functions.iter().filter(|f| !g.keep.contains(*f)).cloned().collect();
    g.out.new_data = input.diff.new_data.iter().filter(|d| g.keep.contains(*d)).cloned().collect();
    g.emit()?;
    Ok(g.out)
}

impl Generator<'_> {
    fn add(&mut self, name: &str) {
        if self.keep.insert(name.to_owned()) {
            self.work.push(name.to_owned());
        }
    }

    /// The target's symbol for a name of the unit (through its before-name).
    fn target_symbol(&self, name: &str) -> Option<Symbol> {
        let i = self.input;
        let before = i.diff.before_name.get(name)?;
        let global = i.after.unit.attrs.get(name).is_some_and(|a| a.global || a.weak);
        let s = if global { i.target.global(before) } else { i.target.local(i.group, before) };
        s.cloned()
    }

    fn resolve(&mut self, name: &str) -> Result<Resolution, String> {
        if let Some(r) = self.resolved.get(name) {
            return Ok(r.clone());
        }
        let r = self.classify(name)?;
        self.resolved.insert(name.to_owned(), r.clone());
        Ok(r)
    }

    fn classify(&mut self, name: &str) -> Result<Resolution, String> {
        let i = self.input;
        let a = i.after;
        if name == "_GLOBAL_OFFSET_TABLE_" || is_local_label(name) {
            return Ok(Resolution::Local);
        }
        if a.is_function(name) {
            if self.keep.contains(name) || cold_parent(name).is_some_and(|p| self.keep.contains(p)) {
                return Ok(Resolution::Local);
            }
            if i.diff.new_functions.contains(name) {
                self.add(name);
                return Ok(Resolution::Local);
            }
            return Ok(match self.target_symbol(name).filter(|s| s.kind == SymbolKind::Function) {
                Some(s) => Resolution::Target(s),
                None => {
                    // The running object has no copy (the compiler inlined it there, or
                    // dropped it): the patch gets one.
                    self.out.copied.push(name.to_owned());
                    self.add(name);
                    Resolution::Local
                }
            });
        }
        if a.defines(name) {
            let constant = a.by_label.get(name).is_some_and(|&c| a.unit.sections[a.chunks[c].section].is_constant());
            if name.starts_with("DW.ref.") || a.is_private_constant(name) {
                self.add(name);
                return Ok(Resolution::Local);
            }
            if i.diff.new_data.contains(name) {
                self.add(name);
                return Ok(Resolution::Local);
            }
            return match self.target_symbol(name) {
                Some(s) => Ok(Resolution::Target(s)),
                None if constant => {
                    self.add(name);
                    Ok(Resolution::Local)
                }
                None => Err(format!(
                    "`{name}` is state of {} the running object does not have (no symbol of that name in its \
                     file's symbols)",
                    i.after.key
                )),
            };
        }
        if i.patch_globals.contains(name) {
            return Ok(Resolution::External);
        }
        Ok(match i.target.global(name) {
            Some(s) => Resolution::Target(s.clone()),
            None => Resolution::External,
        })
    }

    /// The slot for (kind, symbol + addend), shared by every use; its index.
    fn slot(&mut self, kind: RefKind, sym: &Symbol, addend: i64) -> usize {
        let key = (kind as u8, sym.value, addend as u64);
        if let Some(&k) = self.slots.get(&key) {
            return k;
        }
        let k = self.push_slot(kind, sym, addend);
        self.slots.insert(key, k);
        k
    }

    /// A new slot for (kind, symbol + addend), its variable named after its index; its index.
    fn push_slot(&mut self, kind: RefKind, sym: &Symbol, addend: i64) -> usize {
        let k = self.out.slots.len();
        self.out.slots.push(Slot {
            var: format!("__pulp_ref_{}_{k}", self.input.index),
            kind,
            symbol: sym.name.clone(),
            value: sym.value,
            addend: addend as u64,
        });
        k
    }

    fn emit(&mut self) -> Result<(), String> {
        let a = self.input.after;
        self.out.cxx = a
            .unit
            .file
            .as_deref()
            .is_some_and(|f| [".cc", ".cpp", ".cxx", ".C", ".c++"].iter().any(|e| f.ends_with(e)));
        // The chunks to write, in the unit's order.
        let mut chunks: BTreeSet<usize> = BTreeSet::new();
        for k in &self.keep {
            chunks.extend(a.group(k));
        }
        let kept_labels: BTreeSet<&String> = chunks.iter().flat_map(|&c| &a.chunks[c].labels).collect();
        let replaced = self.replaced(&kept_labels)?;
        let mut text = String::new();
        let _ = writeln!(text, "# pulp build-patch: the patched code of {}", a.key);
        let _ = writeln!(text, "\t.file\t\"{}\"", a.unit.file.clone().unwrap_or_else(|| a.key.clone()));
        // Symbol attributes of what is kept; globals become hidden (the patch exports only
        // its aliases and slots).
        for label in &kept_labels {
            if is_local_label(label) {
                continue;
            }
            let Some(attrs) = a.unit.attrs.get(*label) else { continue };
            for s in &attrs.stmts {
                let _ = writeln!(text, "\t{s}");
                if let (Some(r), Some(expr)) = (replaced.get(*label), s.strip_prefix(".size")) {
                    let expr = expr.split_once(',').map(|x| x.1).unwrap_or("");
                    let _ = writeln!(text, "\t.size\t{},{}", r.alias, replace_token(expr, label, &r.alias));
                }
            }
            if attrs.global || attrs.weak {
                let _ = writeln!(text, "\t.hidden\t{label}");
            }
        }
        for (name, st) in &a.unit.commons {
            if self.keep.contains(name) {
                let _ = writeln!(text, "\t{}", st.text);
            }
        }
        let mut data_slots: Vec<(String, usize)> = Vec::new();
        for &ci in &chunks {
            let c = &a.chunks[ci];
            let sec = &a.unit.sections[c.section];
            let mut body = String::new();
            let mut needs_writable = false;
            for st in &sec.stmts[c.start..c.end] {
                self.statement(st, sec.is_code(), &replaced, &mut body, &mut needs_writable, &mut data_slots)?;
            }
            if needs_writable {
                let _ = writeln!(text, "\t.section\t.data.pulp{},\"aw\",@progbits", sanitize(&sec.name));
            } else {
                let _ = writeln!(text, "\t{}", sec.header);
            }
            text.push_str(&body);
        }
        // Trampolines and slots.
        if !self.tramps.is_empty() {
            let _ = writeln!(text, "\t.section\t.text.pulp_trampolines,\"ax\",@progbits");
            for &k in &self.tramps {
                let _ =
                    writeln!(text, ".Lpulp_tramp_{k}:\n\t.cfi_startproc\n\tjmp\t*.Lpulp_ref_{k}(%rip)\n\t.cfi_endproc");
            }
        }
        let data_slot_vars: BTreeSet<usize> = data_slots.iter().map(|d| d.1).collect();
        let code_slots: Vec<usize> = (0..self.out.slots.len()).filter(|k| !data_slot_vars.contains(k)).collect();
        if !code_slots.is_empty() {
            let _ = writeln!(text, "\t.section\t.data.pulp_refs,\"aw\",@progbits");
            for k in code_slots {
                let s = &self.out.slots[k];
                let size = s.kind.size();
                let _ = writeln!(
                    text,
                    "\t.balign\t{size}\n\t.globl\t{v}\n\t.type\t{v}, @object\n\t.size\t{v}, {size}\n{v}:\n.Lpulp_ref_{k}:\n\t.zero\t{size}",
                    v = s.var
                );
            }
        }
        if self.ld_local && self.tls_anchor.is_some() {
            return Err(format!(
                "{}: the changed code uses both thread-local variables the fix adds and ones the running \
                 object has, in the local-dynamic model: not supported (make the new variables shadow \
                 variables or non-static)",
                a.key
            ));
        }
        let _ = writeln!(text, "\t.section\t.note.GNU-stack,\"\",@progbits");
        self.out.asm = text;
        self.out.replaced = replaced.into_values().collect();
        for f in &self.input.diff.changed {
            if !self.returns(f) {
                self.out.endless.push(f.clone());
            }
        }
        Ok(())
    }

    /// The kept functions that replace the target's: changed, in the target.
    fn replaced(&self, kept: &BTreeSet<&String>) -> Result<BTreeMap<String, Replaced>, String> {
        let mut out = BTreeMap::new();
        for f in &self.input.diff.changed {
            if !kept.contains(f) {
                continue;
            }
            let Some(target) = self.target_symbol(f).filter(|s| s.kind == SymbolKind::Function) else {
                return Err(format!(
                    "function `{f}` of {} changed, but the running object has no copy of it (the compiler \
                     inlined it there, or made it differently): its callers cannot be found",
                    self.input.after.key
                ));
            };
            let alias = format!("__pulp_new_{}_{}", self.input.index, f);
            out.insert(f.clone(), Replaced { name: target.name.clone(), target, alias });
        }
        Ok(out)
    }

    /// Whether function `f` (after-name) can return: a `ret`, a jump out of it (tail call,
    /// indirect), or a call that ends the program.
    fn returns(&self, f: &str) -> bool {
        let a = self.input.after;
        let group = a.group(f);
        for &c in &group {
            if !a.is_code(c) {
                continue;
            }
            for st in a.stmts(c) {
                let StmtKind::Insn { mnemonic, operands } = &st.kind else { continue };
                if asm::is_return(mnemonic) || mnemonic.ends_with("ud2") {
                    return true;
                }
                let m = mnemonic.rsplit(' ').next().unwrap_or(mnemonic);
                if m.starts_with("jmp")
                    && (operands.starts_with('*') || asm::refs(st).iter().any(|r| !is_local_label(&r.name)))
                {
                    return true;
                }
                if m.starts_with("call") && asm::refs(st).iter().any(|r| NO_RETURN.contains(&r.name.as_str())) {
                    return true;
                }
            }
        }
        // An indirect call through a register to a no-return function cannot be seen.
        group.iter().any(|&c| {
            a.stmts(c).iter().any(|st| {
                asm::refs(st).iter().any(|r| {
                    NO_RETURN.contains(&r.name.as_str()) && matches!(r.spec.as_deref(), Some("pltoff" | "got" | "plt"))
                })
            })
        })
    }

    /// Write one statement of a kept chunk, rewritten.
    fn statement(
        &mut self,
        st: &Stmt,
        code: bool,
        replaced: &BTreeMap<String, Replaced>,
        out: &mut String,
        needs_writable: &mut bool,
        data_slots: &mut Vec<(String, usize)>,
    ) -> Result<(), String> {
        match &st.kind {
            StmtKind::Label(l) => {
                let _ = writeln!(out, "{l}:");
                if let Some(r) = replaced.get(l) {
                    let _ = writeln!(out, "\t.globl\t{a}\n\t.type\t{a}, @function\n{a}:", a = r.alias);
                }
                return Ok(());
            }
            StmtKind::Directive { name, args } if name == "size" => {
                let sym = args.split(',').next().unwrap_or("").trim();
                if !self.keep.contains(sym) && cold_parent(sym).is_none_or(|p| !self.keep.contains(p)) {
                    return Ok(());
                }
                let _ = writeln!(out, "\t{}", st.text);
                if let Some(r) = replaced.get(sym) {
                    let expr = replace_token(args.split_once(',').map(|x| x.1).unwrap_or(""), sym, &r.alias);
                    let _ = writeln!(out, "\t.size\t{},{expr}", r.alias);
                }
                return Ok(());
            }
            _ => {}
        }
        let refs = asm::refs(st);
        let mut text = String::new();
        let mut at = 0;
        for r in &refs {
            let res = self.resolve(&r.name)?;
            if matches!(r.spec.as_deref(), Some("tlsld" | "dtpoff")) && res == Resolution::Local {
                self.ld_local = true;
            }
            let Resolution::Target(sym) = res else { continue };
            let spec = r.spec.as_deref();
            if let StmtKind::Insn { mnemonic, operands } = &st.kind {
                let m = mnemonic.rsplit(' ').next().unwrap_or(mnemonic);
                match spec {
                    Some("gotoff" | "pltoff") => {
                        if !m.starts_with("movabs") || refs.len() != 1 {
                            return Err(self.unexpected(st, &r.name));
                        }
                        let (imm, dest) = operands.rsplit_once(',').ok_or_else(|| self.unexpected(st, &r.name))?;
                        let addend = addend_of(imm, &st.text[r.start..r.end]);
                        let k = self.slot(RefKind::GotRelative, &sym, addend);
                        let _ = writeln!(out, "\tmovq\t.Lpulp_ref_{k}(%rip),{dest}");
                        return Ok(());
                    }
                    Some("got") => {
                        let k = self.slot(RefKind::Address, &sym, 0);
                        text.push_str(&st.text[at..r.start]);
                        let _ = write!(text, ".Lpulp_ref_{k}@GOTOFF");
                    }
                    Some("gotpcrel") => {
                        let k = self.slot(RefKind::Address, &sym, 0);
                        text.push_str(&st.text[at..r.start]);
                        let _ = write!(text, ".Lpulp_ref_{k}");
                    }
                    Some("tlsgd") => {
                        self.tls(&sym, st)?;
                        let k = self.slot(RefKind::TlsIndex, &sym, 0);
                        text.push_str(&st.text[at..r.start]);
                        let _ = write!(text, ".Lpulp_ref_{k}");
                    }
                    Some("tlsld") | Some("dtpoff") => {
                        self.tls(&sym, st)?;
                        let anchor = self.tls_anchor.get_or_insert_with(|| sym.clone()).clone();
                        text.push_str(&st.text[at..r.start]);
                        if spec == Some("tlsld") {
                            let k = self.slot(RefKind::TlsIndex, &anchor, 0);
                            let _ = write!(text, ".Lpulp_ref_{k}");
                        } else {
                            let _ = write!(text, "{}", sym.value as i64 - anchor.value as i64);
                        }
                    }
                    Some("plt") | None if asm::is_branch(mnemonic) && !operands.starts_with('*') => {
                        let k = self.slot(RefKind::Address, &sym, 0);
                        self.tramps.insert(k);
                        text.push_str(&st.text[at..r.start]);
                        let _ = write!(text, ".Lpulp_tramp_{k}");
                    }
                    // Initial-exec: the GOT entry holds the variable's offset from the thread
                    // pointer; the slot holds the running object's (static TLS: the same in
                    // every thread, the runtime checks the object's TLS is static).
                    Some("gottpoff") => {
                        self.tls(&sym, st)?;
                        if !operands.contains(&format!("{}(%rip)", &st.text[r.start..r.end])) {
                            return Err(self.unexpected(st, &r.name));
                        }
                        let k = self.slot(RefKind::TpOffset, &sym, 0);
                        text.push_str(&st.text[at..r.start]);
                        let _ = write!(text, ".Lpulp_ref_{k}");
                    }
                    Some("tpoff" | "ntpoff") => {
                        return Err(format!(
                            "`{}` in {} uses the thread-local variable `{}` of the running object in the \
                             local-exec model (its offset from the thread pointer is an immediate operand, \
                             fixed when the executable was linked; build with -fPIC or -fPIE, or declare it \
                             `extern`): not supported",
                            st.text, self.input.after.key, r.name
                        ));
                    }
                    Some("tlsdesc" | "tlscall" | "dtpmod") => {
                        return Err(format!(
                            "`{}` in {} uses the thread-local variable `{}` of the running object through a \
                             TLS descriptor (-mtls-dialect=gnu2) or a module id a patch cannot fill: not \
                             supported (build with -mtls-dialect=gnu)",
                            st.text, self.input.after.key, r.name
                        ));
                    }
                    _ => return Err(self.unexpected(st, &r.name)),
                }
                at = r.end;
                continue;
            }
            // Data: an address stored in a kept object becomes a variable the runtime fills.
            let Some((dir, args)) = st.directive() else { continue };
            if !code && matches!(dir, "quad" | "8byte") && spec.is_none() {
                let addend = addend_of(args, &st.text[r.start..r.end]);
                // A slot of its own: it lives inside this object, not among the others.
                let k = self.push_slot(RefKind::Address, &sym, addend);
                let v = self.out.slots[k].var.clone();
                let _ = writeln!(out, "\t.globl\t{v}\n\t.type\t{v}, @object\n\t.size\t{v}, 8\n{v}:\n\t.quad\t0");
                *needs_writable = true;
                data_slots.push((v, k));
                return Ok(());
            }
            return Err(format!(
                "`{}` in {} stores where `{}` of the running object is in a way a patch cannot (only 8-byte \
                 addresses can be filled in)",
                st.text, self.input.after.key, r.name
            ));
        }
        text.push_str(&st.text[at..]);
        let _ = writeln!(out, "\t{text}");
        Ok(())
    }

    fn tls(&self, sym: &Symbol, st: &Stmt) -> Result<(), String> {
        if sym.kind != SymbolKind::Tls {
            return Err(format!(
                "`{}` in {}: `{}` is not a thread-local variable",
                st.text, self.input.after.key, sym.name
            ));
        }
        Ok(())
    }

    fn unexpected(&self, st: &Stmt, name: &str) -> String {
        format!(
            "`{}` in {}: cannot point this use of `{name}` at the running object (was the unit compiled with \
             -mcmodel=large -fPIC?)",
            st.text, self.input.after.key
        )
    }
}
