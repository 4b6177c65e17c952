//! GNU assembly as gcc and clang write it (AT&T syntax), read into sections, statements
//! and chunks; the symbol references of a statement; writing statements back.
//!
//! The generator reads the side compiles of `pulp-cc` (`-ffunction-sections
//! -fdata-sections -mcmodel=large`), so every function and variable has a section of its
//! own. A **chunk** is what one label starts: in a code section, a function with all its
//! local labels (up to the next function); in a data section, one labelled object (a
//! variable, a string, a jump table). Symbol attributes (`.globl`, `.type`, `.hidden`,
//! `.size` with a constant) are kept apart from the section contents, so a chunk can be
//! copied alone; `.size X, .-X` stays where it is, since `.` is its position.

use std::collections::HashMap;

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    /// As written, without comment and surrounding whitespace.
    pub text: String,
    pub kind: StmtKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StmtKind {
    Label(String),
    /// `.name args` (`name` without the dot).
    Directive {
        name: String,
        args: String,
    },
    /// An instruction: prefixes and mnemonic, then the operands.
    Insn {
        mnemonic: String,
        operands: String,
    },
}

impl Stmt {
    pub fn directive(&self) -> Option<(&str, &str)> {
        match &self.kind {
            StmtKind::Directive { name, args } => Some((name, args)),
            _ => None,
        }
    }

    pub fn label(&self) -> Option<&str> {
        match &self.kind {
            StmtKind::Label(l) => Some(l),
            _ => None,
        }
    }
}

/// A section and what the unit put in it, in order.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub name: String,
    /// The directive that opens it with its flags, e.g. `.section .text.f,"ax",@progbits`.
    pub header: String,
    /// Its flags (`ax`, `aw`, `aMS`, ...).
    pub flags: String,
    pub stmts: Vec<Stmt>,
}

impl Section {
    pub fn is_code(&self) -> bool {
        self.flags.contains('x')
    }

    pub fn is_writable(&self) -> bool {
        self.flags.contains('w')
    }

    /// Data that never changes once loaded: read-only, or relocated then read-only
    /// (`.data.rel.ro`).
    pub fn is_constant(&self) -> bool {
        !self.is_code() && (!self.is_writable() || self.name.starts_with(".data.rel.ro"))
    }

    /// Debug info and other sections the patch never needs.
    pub fn is_debug(&self) -> bool {
        self.name.starts_with(".debug") || self.name.starts_with(".zdebug")
    }
}

/// What the unit declares about a symbol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymAttrs {
    pub global: bool,
    pub weak: bool,
    pub hidden: bool,
    /// `.type X, @function` / `@object` / `@tls_object` / ...
    pub kind: Option<String>,
    /// Attribute statements as written (`.globl X`, `.type X,@function`, `.size X, 4`).
    pub stmts: Vec<String>,
}

/// One translation unit's assembly.
#[derive(Clone, Debug, Default)]
pub struct Unit {
    /// `.file "name"`: the source file name the object's `STT_FILE` symbol will carry.
    pub file: Option<String>,
    pub sections: Vec<Section>,
    pub attrs: HashMap<String, SymAttrs>,
    /// `.comm`/`.lcomm` lines (common symbols live in no section).
    pub commons: Vec<(String, Stmt)>,
}

/// A labelled piece of a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub section: usize,
    /// Statement indices in the section: `[start, end)`.
    pub start: usize,
    pub end: usize,
    /// The labels that name it (several labels at one address).
    pub labels: Vec<String>,
}

/// Whether a name is a local label (never a symbol of the object file).
pub fn is_local_label(name: &str) -> bool {
    name.starts_with(".L") || name.bytes().all(|b| b.is_ascii_digit()) || name.starts_with("L$")
}

const ATTRIBUTE_DIRECTIVES: &[&str] =
    &["globl", "global", "local", "weak", "hidden", "protected", "internal", "type", "size", "symver"];
const DATA_DIRECTIVES: &[&str] = &[
    "quad",
    "long",
    "int",
    "word",
    "short",
    "value",
    "byte",
    "2byte",
    "4byte",
    "8byte",
    "uleb128",
    "sleb128",
    "set",
    "equ",
    "equiv",
    "weakref",
    "reloc",
    "cfi_personality",
    "cfi_lsda",
];
/// Instruction prefixes written as separate words.
const PREFIXES: &[&str] = &[
    "lock", "rep", "repe", "repz", "repne", "repnz", "data16", "data32", "addr32", "rex64", "rex", "notrack", "bnd",
    "xacquire", "xrelease", "cs", "ds", "es", "ss", "fs", "gs",
];

/// Split a line into its statements: `;` separates, `#` starts a comment (outside strings).
fn split_line(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let (mut start, mut i, mut in_str) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'#' if !in_str => {
                out.push(&line[start..i]);
                return out.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect();
            }
            b';' if !in_str => {
                out.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&line[start..]);
    out.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$')
}

/// `name:` at the start of a statement: the label and what follows it.
fn split_label(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.first() == Some(&b'"') {
        let end = s[1..].find('"')? + 1;
        return (b.get(end + 1) == Some(&b':')).then(|| (&s[..=end], s[end + 2..].trim()));
    }
    let n = b.iter().take_while(|&&c| is_name_byte(c) || c == b'@').count();
    (n > 0 && b.get(n) == Some(&b':')).then(|| (&s[..n], s[n + 1..].trim()))
}

fn parse_stmt(s: &str) -> Stmt {
    let kind =
        if let Some(rest) = s.strip_prefix('.').filter(|r| r.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)) {
            let n = rest.bytes().take_while(|&b| is_name_byte(b)).count();
            StmtKind::Directive { name: rest[..n].to_owned(), args: rest[n..].trim().to_owned() }
        } else {
            let mut words = s.splitn(2, char::is_whitespace);
            let mut mnemonic = words.next().unwrap_or_default().to_owned();
            let mut operands = words.next().unwrap_or_default().trim().to_owned();
            while PREFIXES.contains(&mnemonic.as_str()) && !operands.is_empty() {
                let mut more = operands.splitn(2, char::is_whitespace);
                let next = more.next().unwrap_or_default().to_owned();
                mnemonic = format!("{mnemonic} {next}");
                operands = more.next().unwrap_or_default().trim().to_owned();
            }
            StmtKind::Insn { mnemonic, operands }
        };
    Stmt { text: s.to_owned(), kind }
}

/// The first argument of a directive, unquoted (`.section ".note.GNU-stack","",@progbits`).
fn first_arg(args: &str) -> String {
    let a = args.trim();
    if let Some(rest) = a.strip_prefix('"') {
        return rest.split('"').next().unwrap_or_default().to_owned();
    }
    a.split(',').next().unwrap_or_default().trim().to_owned()
}

/// The flags of a `.section` directive's arguments, or the defaults of well-known names.
fn section_flags(name: &str, args: &str) -> String {
    let rest = args.trim();
    let after_name = if let Some(r) = rest.strip_prefix('"') {
        r.split_once('"').map(|x| x.1).unwrap_or("")
    } else {
        rest.split_once(',').map(|x| x.1).map(|r| &rest[rest.len() - r.len() - 1..]).unwrap_or("")
    };
    if let Some(f) = after_name.trim_start_matches(',').trim().strip_prefix('"') {
        return f.split('"').next().unwrap_or_default().to_owned();
    }
    default_flags(name).to_owned()
}

fn default_flags(name: &str) -> &'static str {
    if name.starts_with(".text") {
        "ax"
    } else if name.starts_with(".data") || name.starts_with(".bss") {
        "aw"
    } else if name.starts_with(".tdata") || name.starts_with(".tbss") {
        "awT"
    } else if name.starts_with(".rodata") {
        "a"
    } else {
        ""
    }
}

/// Whether a `.size` expression depends on where it stands (it uses `.`).
fn uses_location(expr: &str) -> bool {
    let b = expr.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'.' && (i == 0 || !is_name_byte(b[i - 1])) && b.get(i + 1).is_none_or(|&n| !is_name_byte(n))
    })
}

impl Unit {
    /// Parse a unit's assembly text.
    pub fn parse(text: &str) -> Unit {
        let mut u = Unit::default();
        let mut current = u.section_index(".text", ".text", "ax");
        let mut previous = current;
        let mut stack: Vec<usize> = Vec::new();
        for line in text.lines() {
            for raw in split_line(line) {
                let mut s = raw;
                while let Some((label, rest)) = split_label(s) {
                    u.sections[current]
                        .stmts
                        .push(Stmt { text: format!("{label}:"), kind: StmtKind::Label(label.to_owned()) });
                    s = rest;
                }
                if s.is_empty() {
                    continue;
                }
                let stmt = parse_stmt(s);
                let Some((name, args)) = stmt.directive() else {
                    u.sections[current].stmts.push(stmt);
                    continue;
                };
                let (name, args) = (name.to_owned(), args.to_owned());
                let mut to: Option<usize> = None;
                match name.as_str() {
                    "text" | "data" | "bss" => {
                        let sec = format!(".{name}");
                        to = Some(u.section_index(&sec, &sec, default_flags(&sec)));
                    }
                    "section" | "pushsection" => {
                        let sec = first_arg(&args);
                        let flags = section_flags(&sec, &args);
                        let header = format!(".section {args}");
                        if name == "pushsection" {
                            stack.push(current);
                        }
                        to = Some(u.section_index(&sec, &header, &flags));
                    }
                    "popsection" => to = stack.pop(),
                    "previous" => to = Some(previous),
                    "file" if !args.starts_with(|c: char| c.is_ascii_digit()) => {
                        if u.file.is_none() {
                            u.file = Some(first_arg(&args));
                        }
                    }
                    "file" | "loc" | "loc_mark_labels" | "ident" | "addrsig" | "addrsig_sym" | "subsection" => {}
                    "comm" | "lcomm" => {
                        let sym = first_arg(&args);
                        u.commons.push((sym, stmt));
                    }
                    "size" if uses_location(args.split_once(',').map(|x| x.1).unwrap_or("")) => {
                        u.sections[current].stmts.push(stmt);
                    }
                    _ if ATTRIBUTE_DIRECTIVES.contains(&name.as_str()) => u.attribute(&name, &args, &stmt.text),
                    _ => u.sections[current].stmts.push(stmt),
                }
                if let Some(to) = to.filter(|&t| t != current) {
                    previous = current;
                    current = to;
                }
            }
        }
        u
    }

    fn section_index(&mut self, name: &str, header: &str, flags: &str) -> usize {
        if let Some(i) = self.sections.iter().position(|s| s.name == name) {
            if self.sections[i].flags.is_empty() && !flags.is_empty() {
                self.sections[i].flags = flags.to_owned();
                self.sections[i].header = header.to_owned();
            }
            return i;
        }
        self.sections.push(Section {
            name: name.to_owned(),
            header: header.to_owned(),
            flags: flags.to_owned(),
            stmts: Vec::new(),
        });
        self.sections.len() - 1
    }

    fn attribute(&mut self, name: &str, args: &str, text: &str) {
        let syms: Vec<String> = match name {
            "type" | "size" | "symver" => vec![first_arg(args)],
            _ => args.split(',').map(|s| s.trim().trim_matches('"').to_owned()).filter(|s| !s.is_empty()).collect(),
        };
        for sym in syms {
            let a = self.attrs.entry(sym).or_default();
            match name {
                "globl" | "global" => a.global = true,
                "weak" => a.weak = true,
                "hidden" | "internal" => a.hidden = true,
                "type" => {
                    let t =
                        args.split(',').nth(1).unwrap_or("").trim().trim_start_matches(['@', '%']).trim_matches('"');
                    a.kind = Some(t.to_owned());
                }
                _ => {}
            }
            a.stmts.push(text.to_owned());
        }
    }

    /// The section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The chunks of every section (debug sections excluded).
    pub fn chunks(&self) -> Vec<Chunk> {
        let mut out = Vec::new();
        for (si, sec) in self.sections.iter().enumerate() {
            if sec.is_debug() {
                continue;
            }
            let code = sec.is_code();
            // An exception table is one structure whose local labels its entries use.
            let whole = sec.name.starts_with(".gcc_except_table");
            let mut current: Option<Chunk> = None;
            // Statements after the last content statement that belong to the label that
            // follows, if any.
            let mut pending_from: Option<usize> = None;
            for (i, st) in sec.stmts.iter().enumerate() {
                let is_boundary = match &st.kind {
                    StmtKind::Label(l) if whole => {
                        // Every label of it names it.
                        if let Some(c) = current.as_mut() {
                            c.labels.push(l.clone());
                        }
                        current.is_none()
                    }
                    StmtKind::Label(l) => {
                        if code {
                            !is_local_label(l)
                        } else {
                            true
                        }
                    }
                    _ => false,
                };
                if is_boundary {
                    let l = st.label().unwrap_or_default().to_owned();
                    // Several labels at one address name one chunk.
                    if let Some(c) = current.as_mut().filter(|c| has_no_content(sec, c.start, i)) {
                        c.labels.push(l);
                        continue;
                    }
                    // What a code section holds before its first function (gcc's
                    // `.LCOLDB` labels, which its exception tables use) is the function's.
                    let start = if code && current.is_none() { 0 } else { pending_from.unwrap_or(i) };
                    if let Some(mut c) = current.take() {
                        c.end = start;
                        out.push(c);
                    }
                    current = Some(Chunk { section: si, start, end: sec.stmts.len(), labels: vec![l] });
                    pending_from = None;
                    continue;
                }
                // Alignment, and the `.cfi_startproc` (with its personality and LSDA) gcc
                // writes before a cold part's label, belong to the label that follows.
                let attaches = matches!(
                    st.directive(),
                    Some(("align" | "p2align" | "balign" | "cfi_startproc" | "cfi_personality" | "cfi_lsda", _))
                );
                if attaches {
                    pending_from.get_or_insert(i);
                } else {
                    pending_from = None;
                }
            }
            if let Some(c) = current.take() {
                out.push(c);
            }
        }
        out
    }
}

/// Whether statements `[from, to)` of `sec` hold nothing but labels and alignment.
fn has_no_content(sec: &Section, from: usize, to: usize) -> bool {
    sec.stmts[from..to].iter().all(|s| {
        matches!(s.kind, StmtKind::Label(_)) || matches!(s.directive(), Some(("align" | "p2align" | "balign", _)))
    })
}

/// A symbol named in a statement: `name`, its relocation specifier (`GOTOFF`, `PLT`,
/// `tlsgd`, ... in lower case) and where the whole `name@spec` token lies in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymRef {
    pub name: String,
    pub spec: Option<String>,
    pub start: usize,
    pub end: usize,
}

/// The symbols a statement names (not registers, numbers or directive keywords).
pub fn refs(stmt: &Stmt) -> Vec<SymRef> {
    let (text, base) = match &stmt.kind {
        StmtKind::Label(_) => return Vec::new(),
        StmtKind::Insn { operands, .. } => {
            let at = stmt.text.len() - operands.len();
            (operands.as_str(), at)
        }
        StmtKind::Directive { name, args } => {
            if !DATA_DIRECTIVES.contains(&name.as_str()) {
                return Vec::new();
            }
            let at = stmt.text.len() - args.len();
            (args.as_str(), at)
        }
    };
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == b'%' {
            // A register.
            i += 1;
            while i < b.len() && is_name_byte(b[i]) {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() {
            while i < b.len() && is_name_byte(b[i]) {
                i += 1;
            }
            // `1b` / `1f`: numeric local labels.
            continue;
        }
        if c == b'$' {
            // An immediate operand.
            i += 1;
            continue;
        }
        if is_name_byte(c) {
            let start = i;
            while i < b.len() && is_name_byte(b[i]) {
                i += 1;
            }
            let name = &text[start..i];
            if name == "." {
                continue;
            }
            let mut spec = None;
            if b.get(i) == Some(&b'@') {
                let s = i + 1;
                let mut e = s;
                while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                    e += 1;
                }
                spec = Some(text[s..e].to_ascii_lowercase());
                i = e;
            }
            out.push(SymRef { name: name.to_owned(), spec, start: base + start, end: base + i });
            continue;
        }
        i += 1;
    }
    out
}

/// Whether an instruction is a branch whose target is its operand.
pub fn is_branch(mnemonic: &str) -> bool {
    let m = mnemonic.rsplit(' ').next().unwrap_or(mnemonic);
    m.starts_with('j') || m.starts_with("call") || m.starts_with("loop") || m == "xbegin"
}

/// Whether an instruction leaves the function for good: a return, or a jump that is a
/// tail call or indirect.
pub fn is_return(mnemonic: &str) -> bool {
    let m = mnemonic.rsplit(' ').next().unwrap_or(mnemonic);
    m.starts_with("ret") || m == "iretq" || m == "sysret"
}

#[cfg(test)]
#[path = "asm_tests.rs"]
mod tests;
