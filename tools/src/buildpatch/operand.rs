//! The text of an operand or directive argument, as the generator rewrites it: the
//! addend of a symbol, a symbol replaced as a whole token, a name made usable inside a
//! section name.

/// The number added to a symbol in an operand or directive argument: `28+st@GOTOFF`,
/// `$X@GOTOFF+8`, `X-4`.
pub(super) fn addend_of(operand: &str, token: &str) -> i64 {
    let rest = replace_token(operand, token, "").replace('$', "");
    let mut total = 0i64;
    let mut sign = 1i64;
    let mut num = String::new();
    let flush = |num: &mut String, sign: i64, total: &mut i64| {
        if !num.is_empty() {
            let v = if let Some(h) = num.strip_prefix("0x") { i64::from_str_radix(h, 16) } else { num.parse() };
            *total += sign * v.unwrap_or(0);
            num.clear();
        }
    };
    for c in rest.chars() {
        match c {
            '+' => {
                flush(&mut num, sign, &mut total);
                sign = 1;
            }
            '-' => {
                flush(&mut num, sign, &mut total);
                sign = -1;
            }
            c if c.is_ascii_alphanumeric() => num.push(c),
            _ => {}
        }
    }
    flush(&mut num, sign, &mut total);
    total
}

/// `expr` with every whole-token occurrence of `name` replaced by `with`.
pub(super) fn replace_token(expr: &str, name: &str, with: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$');
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(name) {
        let before_ok = rest[..i].chars().next_back().is_none_or(|c| !is_name(c));
        let after_ok = rest[i + name.len()..].chars().next().is_none_or(|c| !is_name(c));
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { with } else { name });
        rest = &rest[i + name.len()..];
    }
    out.push_str(rest);
    out
}

/// A section name usable inside another section name.
pub(super) fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::addend_of;

    #[test]
    fn addends() {
        assert_eq!(addend_of(" $28+st@GOTOFF", "st@GOTOFF"), 28);
        assert_eq!(addend_of("$st@GOTOFF+8", "st@GOTOFF"), 8);
        assert_eq!(addend_of("\tef", "ef"), 0);
        assert_eq!(addend_of("\ttable-4", "table"), -4);
        assert_eq!(addend_of("0x10+x", "x"), 16);
    }

    #[test]
    fn tokens_are_replaced_whole() {
        assert_eq!(super::replace_token(" .Lfunc_end0-f", "f", "g"), " .Lfunc_end0-g");
        assert_eq!(super::replace_token(" .-f", "f", "__pulp_new_0_f"), " .-__pulp_new_0_f");
    }
}
