//! The lexer of the layer checker: Rust source as identifiers, `::` and
//! punctuation, with comments, strings, characters and lifetimes dropped,
//! and with test-only modules (`#[cfg(test)] mod ..`) taken out.

/// One token of Rust source; comments, strings, characters and lifetimes
/// are dropped by the lexer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

pub(crate) fn lex(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i);
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if (c == 'r' || c == 'b') && starts_raw_string(&chars, i) {
            i = skip_raw_string(&chars, i);
        } else if c == 'b' && next == Some('"') {
            i = skip_string(&chars, i + 2);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            toks.push(Tok::PathSep);
            i += 2;
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

fn skip_block_comment(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i + 1 < chars.len() {
        if chars[i] == '/' && chars[i + 1] == '*' {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars[i + 1] == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn starts_raw_string(chars: &[char], i: usize) -> bool {
    let mut j = i + 1;
    if chars[i] == 'b' {
        if chars.get(j) != Some(&'r') {
            return false;
        }
        j += 1;
    }
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
        && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
}

fn skip_raw_string(chars: &[char], mut i: usize) -> usize {
    while chars[i] != '#' && chars[i] != '"' {
        i += 1;
    }
    let mut hashes = 0;
    while chars[i] == '#' {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// `'x'`, `'\n'` and `'\u{..}'` are characters; `'a` is a lifetime.
fn skip_char_or_lifetime(chars: &[char], i: usize) -> usize {
    if chars.get(i + 1) == Some(&'\\') {
        let mut j = i + 2;
        while j < chars.len() && chars[j] != '\'' {
            j += 1;
        }
        j + 1
    } else if chars.get(i + 2) == Some(&'\'') {
        i + 3
    } else {
        i + 1
    }
}

/// Whether the attribute starting at `toks[i]` (`#`) is a `cfg` that
/// holds only in tests; returns the index after it either way.
fn attribute_end(toks: &[Tok], i: usize) -> (usize, bool) {
    let mut depth = 0;
    let mut j = i + 1;
    let mut words = Vec::new();
    while j < toks.len() {
        match &toks[j] {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    j += 1;
                    break;
                }
            }
            Tok::Ident(w) => words.push(w.as_str()),
            _ => {}
        }
        j += 1;
    }
    let test_only =
        words.first() == Some(&"cfg") && words.contains(&"test") && !words.contains(&"not");
    (j, test_only)
}

/// The index after the `{ .. }` group opened at `toks[i]`.
fn group_end(toks: &[Tok], i: usize) -> usize {
    let mut depth = 0;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The tokens without their test-only modules, and the names of the
/// test-only modules declared as files (`#[cfg(test)] mod tests;`).
pub(crate) fn strip_test_modules(toks: Vec<Tok>) -> (Vec<Tok>, Vec<String>) {
    let mut kept = Vec::new();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i] != Tok::Punct('#') {
            kept.push(toks[i].clone());
            i += 1;
            continue;
        }
        let (after, test_only) = attribute_end(&toks, i);
        let mut j = after;
        while toks.get(j) == Some(&Tok::Punct('#')) {
            j = attribute_end(&toks, j).0;
        }
        if let Some(Tok::Ident(v)) = toks.get(j) {
            if v == "pub" {
                j += 1;
                if toks.get(j) == Some(&Tok::Punct('(')) {
                    while toks.get(j) != Some(&Tok::Punct(')')) {
                        j += 1;
                    }
                    j += 1;
                }
            }
        }
        let is_mod = toks.get(j) == Some(&Tok::Ident("mod".into()));
        if test_only && is_mod {
            if let (Some(Tok::Ident(name)), Some(t)) = (toks.get(j + 1), toks.get(j + 2)) {
                if *t == Tok::Punct(';') {
                    test_files.push(name.clone());
                    i = j + 3;
                } else {
                    i = group_end(&toks, j + 2);
                }
                continue;
            }
        }
        kept.extend_from_slice(&toks[i..after]);
        i = after;
    }
    (kept, test_files)
}
