//! The `.dsc` description language, parsed without touching any file: text in, items with
//! their line numbers out (`pulp pack` then resolves them against the objects; a fuzz
//! target can call [`parse`] directly).
//!
//! One item a line, whitespace around it ignored:
//!
//! ```text
//! # a comment: `#` followed by a space (or nothing); `;` and `//` lines are comments too
//! !CVE-2026-1234                 a label kept in the metadata (anywhere, also before the .so)
//! libfix.so                      the patch .so: the first line that is not a label,
//!                                option or comment
//! %immediate                     options: %immediate, %replace, %level N, %state ID VERSION
//! @/usr/lib/libfoo.so            starts a target object
//! foo_parse:foo_parse_fixed      old:new, replaces a function of the current target
//! twin@1130:twin_fixed           old@OFFSET (hex): one of several symbols of that name
//! memcpy@@GLIBC_2.14:memcpy_new   old@@VERSION: the default version of a versioned symbol
//! memcpy@GLIBC_2.2.5:memcpy_old   old@VERSION (not hex): that version, default or not
//! #counter:ref_counter           reference: ref_counter receives the address of counter
//! #lenfix.1@2a40+8:ref           ... of a symbol picked by offset, plus (or minus) an addend
//! #%tls_var:ref_tls              thread-local: ref_tls receives its 16-byte tls_index
//! #helper:ref_h got-relative     ... its address minus the patch's GOT (pulp build-patch)
//! #%errno:ref_e tp-offset        thread-local of a static-TLS target: its 8-byte offset from
//!                                the thread pointer (initial-exec code, pulp build-patch)
//! ```
//!
//! A comment may also end a line: ` # text` (whitespace, `#`, then whitespace or the end of
//! the line) or ` // text`.

use std::fmt;

/// A symbol of a target named in a `.dsc`: `name`, `name@OFFSET`, `name@VERSION` or
/// `name@@VERSION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolName {
    pub name: String,
    /// `@OFFSET`: the symbol's value, to pick one of several of the same name.
    pub at: Option<u64>,
    /// `@VERSION` / `@@VERSION`: one version of a versioned (exported) symbol.
    pub version: Option<VersionName>,
}

/// The version part of `name@VERSION` (`default` false) or `name@@VERSION` (true).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionName {
    pub name: String,
    /// Written with `@@`: it must be the default version.
    pub default: bool,
}

impl SymbolName {
    /// A plain name, without offset or version.
    pub fn plain(name: &str) -> Self {
        SymbolName { name: name.to_owned(), at: None, version: None }
    }
}

impl fmt::Display for SymbolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.version, self.at) {
            (Some(v), _) => write!(f, "{}{}{}", self.name, if v.default { "@@" } else { "@" }, v.name),
            (None, Some(at)) => write!(f, "{}@{at:#x}", self.name),
            (None, None) => f.write_str(&self.name),
        }
    }
}

/// What a reference line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefForm {
    /// `#sym:var`: the address (or the original code, for a function the patch replaces).
    Plain,
    /// `#%sym:var`: a thread-local variable's `tls_index`.
    Tls,
    /// `#sym:var got-relative`: the address minus the patch object's GOT.
    GotRelative,
    /// `#%sym:var tp-offset`: a thread-local variable's address minus the thread pointer.
    TpOffset,
}

/// A `%` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DscOption {
    /// `%immediate`: switch every thread at once.
    Immediate,
    /// `%replace`: a cumulative patch replacing every earlier patch of its targets.
    Replace,
    /// `%level N`.
    Level(u32),
    /// `%state ID VERSION`.
    State { id: u64, version: u32 },
}

/// One meaningful line of a `.dsc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// The patch `.so` (as written; relative to the `.dsc`'s folder when not absolute).
    PatchSo(String),
    /// `@PATH`
    Target(String),
    /// `old:new`
    Replace {
        old: SymbolName,
        new: String,
    },
    /// `#sym:var` and its forms (`#sym+8:var`, `#sym-4:var`).
    Reference {
        symbol: SymbolName,
        addend: i64,
        form: RefForm,
        var: String,
    },
    /// `!label`
    Label(String),
    Option(DscOption),
}

/// An item and the 1-based line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub line: usize,
    pub item: Item,
}

/// Why a `.dsc` text is malformed, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line; `None` for the text as a whole.
    pub line: Option<usize>,
    pub kind: ParseErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("no patch .so: the first line that is not a label, option or comment must name the .so holding the new functions")]
    NoPatchSo,
    #[error("malformed line `{line}`: {reason}")]
    Malformed { line: String, reason: &'static str },
    #[error("`{line}` comes before any `@TARGET` line")]
    NoTargetYet { line: String },
    #[error("`{option}` is given twice (first at line {first_line})")]
    DuplicateOption { option: String, first_line: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ParseError {}

/// Whether a (trimmed) line is a whole-line comment.
fn is_comment(line: &str) -> bool {
    line.starts_with(';') || line.starts_with("//") || line == "#" || line.starts_with("# ") || line.starts_with("#\t")
}

/// The line without a trailing ` # text` or ` // text` comment.
fn strip_trailing_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, w) in bytes.windows(2).enumerate() {
        if !w[0].is_ascii_whitespace() {
            continue;
        }
        let rest = &line[i + 1..];
        let hash = rest.starts_with('#') && rest[1..].chars().next().is_none_or(char::is_whitespace);
        if hash || rest.starts_with("//") {
            return line[..i].trim_end();
        }
    }
    line
}

fn malformed(line: &str, reason: &'static str) -> ParseErrorKind {
    ParseErrorKind::Malformed { line: line.to_owned(), reason }
}

/// A name as a `.dsc` accepts it: not empty, no whitespace, no `:`.
fn bad_name(s: &str) -> bool {
    s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == ':')
}

/// `name`, `name@HEX` (an offset: hex digits, `0x` allowed), `name@VERSION` (anything
/// else) or `name@@VERSION`.
fn symbol_name(s: &str, line: &str) -> Result<SymbolName, ParseErrorKind> {
    let Some((name, rest)) = s.split_once('@') else { return Ok(SymbolName::plain(s)) };
    if bad_name(name) {
        return Err(malformed(line, "empty symbol name before `@`"));
    }
    let (default, after) = match rest.strip_prefix('@') {
        Some(v) => (true, v),
        None => (false, rest),
    };
    if after.is_empty() || after.contains('@') {
        return Err(malformed(
            line,
            "`@` must be followed by the symbol's offset in hex or a version (`name@VERSION`, `name@@VERSION`)",
        ));
    }
    let hex = after.strip_prefix("0x").unwrap_or(after);
    match u64::from_str_radix(hex, 16) {
        Ok(at) if !default => Ok(SymbolName { name: name.to_owned(), at: Some(at), version: None }),
        _ => Ok(SymbolName {
            name: name.to_owned(),
            at: None,
            version: Some(VersionName { name: after.to_owned(), default }),
        }),
    }
}

fn number<T: TryFrom<u64>>(s: &str) -> Option<T> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => s.parse().ok()?,
    };
    T::try_from(v).ok()
}

fn option(text: &str, line: &str) -> Result<DscOption, ParseErrorKind> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["immediate"] => Ok(DscOption::Immediate),
        ["replace"] => Ok(DscOption::Replace),
        ["level", n] => number(n).map(DscOption::Level).ok_or_else(|| malformed(line, "`%level` takes a number")),
        ["state", id, version] => match (number(id), number(version)) {
            (Some(id), Some(version)) => Ok(DscOption::State { id, version }),
            _ => Err(malformed(line, "`%state` takes an id and a version (numbers)")),
        },
        ["level", ..] => Err(malformed(line, "`%level` takes one number")),
        ["state", ..] => Err(malformed(line, "`%state` takes an id and a version")),
        _ => Err(malformed(line, "unknown option (known: `%immediate`, `%replace`, `%level N`, `%state ID VERSION`)")),
    }
}

fn reference(text: &str, line: &str) -> Result<Item, ParseErrorKind> {
    const SHAPE: &str = "expected `#symbol:variable`, `#%symbol:variable`, `#%symbol:variable tp-offset` or \
                         `#symbol:variable got-relative`";
    let mut words = text.split_whitespace();
    let main = words.next().unwrap_or_default();
    let modifier = words.next();
    if words.next().is_some() {
        return Err(malformed(line, SHAPE));
    }
    let (tls, main) = match main.strip_prefix('%') {
        Some(rest) => (true, rest),
        None => (false, main),
    };
    let form = match (tls, modifier) {
        (false, None) => RefForm::Plain,
        (true, None) => RefForm::Tls,
        (false, Some("got-relative")) => RefForm::GotRelative,
        (true, Some("tp-offset")) => RefForm::TpOffset,
        (true, Some(_)) => {
            return Err(malformed(line, "unknown modifier of a thread-local reference (`#%`; known: `tp-offset`)"))
        }
        (false, Some("tp-offset")) => {
            return Err(malformed(line, "`tp-offset` is for thread-locals: write `#%symbol:variable tp-offset`"))
        }
        (false, Some(_)) => return Err(malformed(line, "unknown modifier (known: `got-relative`)")),
    };
    let Some((sym, var)) = main.split_once(':') else { return Err(malformed(line, SHAPE)) };
    let (sym, addend) = match sym.rfind(['+', '-']) {
        Some(i) => {
            let n: u64 =
                number(&sym[i + 1..]).ok_or_else(|| malformed(line, "`+`/`-` must be followed by a number"))?;
            let n = i64::try_from(n).map_err(|_| malformed(line, "the addend is too large"))?;
            (&sym[..i], if sym.as_bytes()[i] == b'-' { -n } else { n })
        }
        None => (sym, 0),
    };
    if bad_name(var) || sym.is_empty() {
        return Err(malformed(line, SHAPE));
    }
    let symbol = symbol_name(sym, line)?;
    if bad_name(&symbol.name) {
        return Err(malformed(line, SHAPE));
    }
    Ok(Item::Reference { symbol, addend, form, var: var.to_owned() })
}

/// Parse a `.dsc` text. Checks the shape of every line and their order (the patch `.so`
/// first, `old:new` and references after an `@TARGET`), nothing that needs a file.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut out = Vec::new();
    let mut have_so = false;
    let mut have_target = false;
    let mut seen_options: Vec<(&'static str, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let err = |kind| ParseError { line: Some(n), kind };
        let full = raw.trim();
        if full.is_empty() || is_comment(full) {
            continue;
        }
        let line = strip_trailing_comment(full);
        let item = if let Some(label) = line.strip_prefix('!') {
            let label = label.trim();
            if label.is_empty() {
                return Err(err(malformed(line, "empty label")));
            }
            Item::Label(label.to_owned())
        } else if let Some(text) = line.strip_prefix('%') {
            let o = option(text, line).map_err(err)?;
            let key = match o {
                DscOption::Immediate => Some("%immediate"),
                DscOption::Replace => Some("%replace"),
                DscOption::Level(_) => Some("%level"),
                DscOption::State { .. } => None,
            };
            if let Some(key) = key {
                if let Some(&(_, first_line)) = seen_options.iter().find(|(k, _)| *k == key) {
                    return Err(err(ParseErrorKind::DuplicateOption { option: key.into(), first_line }));
                }
                seen_options.push((key, n));
            }
            Item::Option(o)
        } else if !have_so {
            if line.starts_with(['@', '#']) || line.contains(':') {
                return Err(err(ParseErrorKind::NoPatchSo));
            }
            have_so = true;
            Item::PatchSo(line.to_owned())
        } else if let Some(path) = line.strip_prefix('@') {
            let path = path.trim();
            if path.is_empty() {
                return Err(err(malformed(line, "`@` must be followed by the target's path")));
            }
            have_target = true;
            Item::Target(path.to_owned())
        } else if let Some(text) = line.strip_prefix('#') {
            if !have_target {
                return Err(err(ParseErrorKind::NoTargetYet { line: line.to_owned() }));
            }
            reference(text, line).map_err(err)?
        } else if let Some((old, new)) = line.split_once(':') {
            let (old, new) = (old.trim(), new.trim());
            if bad_name(old) || bad_name(new) {
                return Err(err(malformed(line, "expected `old_function:new_function`")));
            }
            if !have_target {
                return Err(err(ParseErrorKind::NoTargetYet { line: line.to_owned() }));
            }
            Item::Replace { old: symbol_name(old, line).map_err(err)?, new: new.to_owned() }
        } else {
            return Err(err(malformed(
                line,
                "expected `@TARGET`, `old_function:new_function`, `!label`, `%option` or `#symbol:variable`",
            )));
        };
        out.push(Line { line: n, item });
    }
    if !have_so {
        return Err(ParseError { line: None, kind: ParseErrorKind::NoPatchSo });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<(usize, Item)> {
        parse(text).unwrap().into_iter().map(|l| (l.line, l.item)).collect()
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn sym(name: &str, at: Option<u64>) -> SymbolName {
        SymbolName { name: name.into(), at, version: None }
    }

    fn versioned(name: &str, version: &str, default: bool) -> SymbolName {
        SymbolName { name: name.into(), at: None, version: Some(VersionName { name: version.into(), default }) }
    }

    #[test]
    fn versions_and_offsets_after_at() {
        let text = "fix.so\n@libc.so.6\nmemcpy@@GLIBC_2.14:a\nmemcpy@GLIBC_2.2.5:b\nf@0x1a:c\nf@1b:d\n\
                    #memcpy@GLIBC_2.2.5+4:v\ng@@ABC:e\n";
        let old = |i: usize| match &items(text)[i].1 {
            Item::Replace { old, .. } => old.clone(),
            Item::Reference { symbol, .. } => symbol.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(old(2), versioned("memcpy", "GLIBC_2.14", true));
        assert_eq!(old(2).to_string(), "memcpy@@GLIBC_2.14");
        assert_eq!(old(3), versioned("memcpy", "GLIBC_2.2.5", false));
        assert_eq!(old(4), sym("f", Some(0x1a)));
        assert_eq!(old(5), sym("f", Some(0x1b)));
        assert_eq!(old(6).to_string(), "memcpy@GLIBC_2.2.5");
        // After `@@` even hex digits are a version.
        assert_eq!(old(7), versioned("g", "ABC", true));
        for bad in ["f@:x", "f@@:x", "f@a@b:x"] {
            assert!(err(&format!("fix.so\n@t.so\n{bad}\n")).contains("line 3: malformed line"), "{bad}");
        }
    }

    #[test]
    fn every_item_with_its_line() {
        let text = "# header comment\n\n!CVE-1 # trailing\n%level 3\nlibfix.so // the patch\n; old comment\n\
                    @/usr/lib/libfoo.so\nfoo:foo_new\ntwin@0x1130:twin_new\n#counter:ref_counter\n\
                    #lenfix.1@2a40+8:ref_len\n#%tls:ref_tls\n#helper:ref_h got-relative\n%immediate\n%replace\n\
                    %state 7 2\n!fix #123\n";
        assert_eq!(
            items(text),
            [
                (3, Item::Label("CVE-1".into())),
                (4, Item::Option(DscOption::Level(3))),
                (5, Item::PatchSo("libfix.so".into())),
                (7, Item::Target("/usr/lib/libfoo.so".into())),
                (8, Item::Replace { old: sym("foo", None), new: "foo_new".into() }),
                (9, Item::Replace { old: sym("twin", Some(0x1130)), new: "twin_new".into() }),
                (
                    10,
                    Item::Reference {
                        symbol: sym("counter", None),
                        addend: 0,
                        form: RefForm::Plain,
                        var: "ref_counter".into()
                    }
                ),
                (
                    11,
                    Item::Reference {
                        symbol: sym("lenfix.1", Some(0x2a40)),
                        addend: 8,
                        form: RefForm::Plain,
                        var: "ref_len".into()
                    }
                ),
                (
                    12,
                    Item::Reference { symbol: sym("tls", None), addend: 0, form: RefForm::Tls, var: "ref_tls".into() }
                ),
                (
                    13,
                    Item::Reference {
                        symbol: sym("helper", None),
                        addend: 0,
                        form: RefForm::GotRelative,
                        var: "ref_h".into()
                    }
                ),
                (14, Item::Option(DscOption::Immediate)),
                (15, Item::Option(DscOption::Replace)),
                (16, Item::Option(DscOption::State { id: 7, version: 2 })),
                (17, Item::Label("fix #123".into())),
            ]
        );
    }

    #[test]
    fn a_hash_line_is_a_reference_unless_a_space_follows() {
        assert!(matches!(items("fix.so\n@t.so\n#x:y\n")[2].1, Item::Reference { .. }));
        assert_eq!(items("fix.so\n@t.so\n# x:y\n#\n#\tz\n").len(), 2);
    }

    #[test]
    fn a_thread_pointer_offset_reference() {
        assert_eq!(
            items("fix.so\n@t.so\n#%errno:ref_e tp-offset\n")[2],
            (
                3,
                Item::Reference { symbol: sym("errno", None), addend: 0, form: RefForm::TpOffset, var: "ref_e".into() }
            )
        );
        assert!(err("fix.so\n@t.so\n#errno:ref_e tp-offset\n").contains("write `#%symbol:variable tp-offset`"));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(err("@t.so\n"), "line 1: no patch .so: the first line that is not a label, option or comment must name the .so holding the new functions");
        assert!(err("!only a label\n").starts_with("no patch .so"), "no line: the whole text lacks it");
        assert_eq!(err("fix.so\nfoo:bar\n"), "line 2: `foo:bar` comes before any `@TARGET` line");
        assert_eq!(err("fix.so\n#x:y\n"), "line 2: `#x:y` comes before any `@TARGET` line");
        assert!(err("fix.so\n@t.so\nfoo:bar # trailing\nfoo: bar baz\n").starts_with("line 4: malformed line"));
        assert!(err("fix.so\n@t.so\n#x\n").contains("expected `#symbol:variable`"));
        assert!(err("fix.so\n@t.so\n#x:y z\n").contains("unknown modifier"));
        assert!(err("fix.so\n@t.so\n#%x:y got-relative\n").contains("known: `tp-offset`"));
        assert!(err("fix.so\n@t.so\n#x@:y\n").contains("offset in hex or a version"));
        assert!(err("fix.so\n@t.so\n#x+q:y\n").contains("`+`/`-` must be followed by a number"));
        assert!(matches!(items("fix.so\n@t.so\n#x-4:y\n")[2].1, Item::Reference { addend: -4, .. }));
        assert!(err("fix.so\n%level\n").contains("`%level` takes one number"));
        assert!(err("fix.so\n%state 1\n").contains("`%state` takes an id and a version"));
        assert!(err("fix.so\n%frobnicate\n").contains("unknown option"));
        assert_eq!(err("fix.so\n%immediate\n%immediate\n"), "line 3: `%immediate` is given twice (first at line 2)");
        assert!(err("fix.so\n!\n").contains("empty label"));
        assert!(err("fix.so\n@\n").contains("`@` must be followed by the target's path"));
        assert!(err("fix.so\nwhat is this\n").contains("expected `@TARGET`"));
    }

    #[test]
    fn never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"#%@:!;/ \t\nabx09+.";
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize] as char);
            }
            let _ = parse(&s);
        }
        let _ = parse("fix.so\n@t\n#é@ü+€:ä\n");
    }
}
