//! PromQL lexer: turns the query text into tokens with byte positions.
//!
//! Follows the token rules of Prometheus' `promql/parser/lex.go` (3.x):
//! case-insensitive keywords, `Inf`/`NaN` as numbers, Go integer literals
//! (hex, octal, underscores), durations such as `1h30m`, Go-style string
//! escapes, `#` comments, and its error texts. A lexing error becomes an
//! [`Tok::Error`] token at the place it happens, so the parser reports it only
//! when it gets there, as Prometheus' on-demand lexer does.

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Eof,
    /// A lexing error with Prometheus' message.
    Error(String),
    /// A word outside braces without `:` (keywords are words too).
    Ident(String),
    /// A word with a `:` in it.
    MetricIdent(String),
    /// A label name inside braces.
    Label(String),
    /// A number literal (value), including `Inf` and `NaN`.
    Number(f64, String),
    /// A duration literal as written (`5m`, `1h30m`).
    Duration(String),
    /// A string literal, unescaped.
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    /// `=` (label matcher).
    Eql,
    /// `=~`
    EqlRegex,
    /// `!~`
    NeqRegex,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    /// `==`
    Eqlc,
    /// `!=`
    Neq,
    Lss,
    Lte,
    Gtr,
    Gte,
    At,
    /// `</`
    TrimUpper,
    /// `>/`
    TrimLower,
}

/// A token with its byte range in the input.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Aggregation operator words.
pub(crate) const AGGREGATORS: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keyword words (besides aggregators and operator words).
pub(crate) const KEYWORDS: &[&str] = &[
    "bool",
    "by",
    "group_left",
    "group_right",
    "ignoring",
    "offset",
    "on",
    "without",
    "start",
    "end",
    "anchored",
    "smoothed",
];

/// Binary operators spelled as words.
pub(crate) const OP_WORDS: &[&str] = &["and", "or", "unless", "atan2"];

impl Token {
    /// The token as Prometheus' `Item.desc()` describes it in errors.
    pub(crate) fn desc(&self) -> String {
        match &self.tok {
            Tok::Eof => "end of input".into(),
            Tok::Error(m) => m.clone(),
            Tok::Ident(w) => {
                let l = w.to_ascii_lowercase();
                if AGGREGATORS.contains(&l.as_str()) {
                    format!("<aggr:{w}>")
                } else if OP_WORDS.contains(&l.as_str()) {
                    format!("<op:{w}>")
                } else if KEYWORDS.contains(&l.as_str()) {
                    format!("<{w}>")
                } else {
                    format!("identifier {}", go_quote(w))
                }
            }
            Tok::Label(w) => format!("identifier {}", go_quote(w)),
            Tok::MetricIdent(w) => format!("metric identifier {}", go_quote(w)),
            Tok::Number(_, t) => format!("number {}", short_quote(t)),
            Tok::Duration(t) => format!("duration {}", short_quote(t)),
            Tok::Str(s) => format!("string {}", short_quote(s)),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::LBrace => "\"{\"".into(),
            Tok::RBrace => "\"}\"".into(),
            Tok::LBracket => "\"[\"".into(),
            Tok::RBracket => "\"]\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Colon => "\":\"".into(),
            Tok::Eql => "\"=\"".into(),
            Tok::EqlRegex => "<op:=~>".into(),
            Tok::NeqRegex => "<op:!~>".into(),
            Tok::Add => "<op:+>".into(),
            Tok::Sub => "<op:->".into(),
            Tok::Mul => "<op:*>".into(),
            Tok::Div => "<op:/>".into(),
            Tok::Mod => "<op:%>".into(),
            Tok::Pow => "<op:^>".into(),
            Tok::Eqlc => "<op:==>".into(),
            Tok::Neq => "<op:!=>".into(),
            Tok::Lss => "<op:<>".into(),
            Tok::Lte => "<op:<=>".into(),
            Tok::Gtr => "<op:>>".into(),
            Tok::Gte => "<op:>=>".into(),
            Tok::At => "<op:@>".into(),
            Tok::TrimUpper => "<op:</>".into(),
            Tok::TrimLower => "<op:>/>".into(),
        }
    }
}

/// Go's `%.10q...` for long values, `%q` otherwise.
fn short_quote(s: &str) -> String {
    if s.chars().count() > 10 {
        let head: String = s.chars().take(10).collect();
        format!("{}...", go_quote(&head))
    } else {
        go_quote(s)
    }
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Go's `%q` of a rune: `'x'`.
pub(crate) fn go_quote_rune(c: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if crate::value::raw_byte(c).is_some() => {
            out.push_str(&format!(
                "\\x{:02x}",
                crate::value::raw_byte(c).unwrap_or(0)
            ));
        }
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if is_go_printable(c) => out.push(c),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// An approximation of Go's `strconv.IsPrint` (letters, marks, numbers,
/// punctuation, symbols and the ASCII space).
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    // Unassigned/format/private-use ranges that Go does not print verbatim.
    !matches!(u, 0x00AD | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xE000..=0xF8FF | 0xFFF0..=0xFFFF | 0xF0000..)
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alnum(c: char) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

/// Lexes the whole input. The last token is always `Eof` or `Error`.
pub(crate) fn lex(input: &str) -> Vec<Token> {
    let mut l = Lexer {
        src: input,
        pos: 0,
        out: Vec::new(),
        paren_depth: 0,
        bracket_open: false,
    };
    l.run();
    l.out
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    out: Vec<Token>,
    paren_depth: usize,
    bracket_open: bool,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src.get(self.pos..)?.chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn emit(&mut self, tok: Tok, start: usize) {
        self.out.push(Token {
            tok,
            start,
            end: self.pos,
        });
    }

    /// Emits an error token; lexing stops.
    fn error(&mut self, msg: String, start: usize) {
        self.out.push(Token {
            tok: Tok::Error(msg),
            start,
            end: self.pos.max(start),
        });
    }

    fn run(&mut self) {
        loop {
            let start = self.pos;
            let Some(c) = self.bump() else {
                if self.paren_depth != 0 {
                    return self.error("unclosed left parenthesis".into(), start);
                }
                if self.bracket_open {
                    return self.error("unclosed left bracket".into(), start);
                }
                self.emit(Tok::Eof, start);
                return;
            };
            let tok = match c {
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                    continue;
                }
                c if c.is_whitespace() => continue,
                ',' => Tok::Comma,
                '*' => Tok::Mul,
                '/' => Tok::Div,
                '%' => Tok::Mod,
                '+' => Tok::Add,
                '-' => Tok::Sub,
                '^' => Tok::Pow,
                '@' => Tok::At,
                '=' => match self.peek() {
                    Some('=') => {
                        self.bump();
                        Tok::Eqlc
                    }
                    Some('~') => {
                        return self.error(
                            format!("unexpected character after '=': {}", go_quote_rune('~')),
                            start,
                        );
                    }
                    _ => Tok::Eql,
                },
                '!' => match self.bump() {
                    Some('=') => Tok::Neq,
                    other => {
                        return self.error(
                            format!(
                                "unexpected character after '!': {}",
                                other.map(go_quote_rune).unwrap_or_else(|| "EOF".into())
                            ),
                            start,
                        );
                    }
                },
                '<' => {
                    if self.peek() == Some('/') {
                        self.bump();
                        Tok::TrimUpper
                    } else if self.peek() == Some('=') {
                        self.bump();
                        Tok::Lte
                    } else {
                        Tok::Lss
                    }
                }
                '>' => {
                    if self.peek() == Some('/') {
                        self.bump();
                        Tok::TrimLower
                    } else if self.peek() == Some('=') {
                        self.bump();
                        Tok::Gte
                    } else {
                        Tok::Gtr
                    }
                }
                '(' => {
                    self.paren_depth += 1;
                    Tok::LParen
                }
                ')' => {
                    if self.paren_depth == 0 {
                        // Prometheus reports this after the parenthesis.
                        return self.error(
                            format!("unexpected right parenthesis {}", go_quote_rune(')')),
                            self.pos,
                        );
                    }
                    self.paren_depth -= 1;
                    Tok::RParen
                }
                '[' => {
                    if self.bracket_open {
                        return self.error(
                            format!("unexpected left bracket {}", go_quote_rune('[')),
                            start,
                        );
                    }
                    self.bracket_open = true;
                    Tok::LBracket
                }
                ']' => {
                    if !self.bracket_open {
                        return self.error(
                            format!("unexpected right bracket {}", go_quote_rune(']')),
                            start,
                        );
                    }
                    self.bracket_open = false;
                    Tok::RBracket
                }
                '}' => {
                    return self.error(
                        format!("unexpected right brace {}", go_quote_rune('}')),
                        start,
                    );
                }
                ':' if self.bracket_open => Tok::Colon,
                '{' => {
                    self.emit(Tok::LBrace, start);
                    if !self.inside_braces() {
                        return;
                    }
                    continue;
                }
                '"' | '\'' => match self.string(c, start) {
                    Some(s) => Tok::Str(s),
                    None => return,
                },
                '`' => match self.raw_string(start) {
                    Some(s) => Tok::Str(s),
                    None => return,
                },
                c if c.is_ascii_digit()
                    || (c == '.' && self.peek().is_some_and(|d| d.is_ascii_digit())) =>
                {
                    match self.number_or_duration(start) {
                        Some(t) => t,
                        None => return,
                    }
                }
                c if is_alpha(c) || c == ':' => {
                    while let Some(c) = self.peek() {
                        if is_alnum(c) || c == ':' {
                            self.bump();
                        } else {
                            break;
                        }
                    }
                    let w = &self.src[start..self.pos];
                    let lw = w.to_ascii_lowercase();
                    if lw == "inf" {
                        Tok::Number(f64::INFINITY, w.to_string())
                    } else if lw == "nan" {
                        Tok::Number(f64::NAN, w.to_string())
                    } else if w.contains(':') {
                        Tok::MetricIdent(w.to_string())
                    } else {
                        Tok::Ident(w.to_string())
                    }
                }
                c => {
                    let msg = if self.bracket_open {
                        format!("unexpected character inside brackets: {}", go_quote_rune(c))
                    } else {
                        format!("unexpected character: {}", go_quote_rune(c))
                    };
                    return self.error(msg, start);
                }
            };
            self.emit(tok, start);
        }
    }

    /// Lexes after `{` up to and including `}`; false on error.
    fn inside_braces(&mut self) -> bool {
        loop {
            let start = self.pos;
            let Some(c) = self.bump() else {
                self.error("unexpected end of input inside braces".into(), start);
                return false;
            };
            let tok = match c {
                c if c.is_whitespace() => continue,
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                    continue;
                }
                ',' => Tok::Comma,
                '=' => {
                    if self.peek() == Some('~') {
                        self.bump();
                        Tok::EqlRegex
                    } else {
                        Tok::Eql
                    }
                }
                '!' => match self.bump() {
                    Some('~') => Tok::NeqRegex,
                    Some('=') => Tok::Neq,
                    other => {
                        self.error(
                            format!(
                                "unexpected character after '!' inside braces: {}",
                                other.map(go_quote_rune).unwrap_or_else(|| "EOF".into())
                            ),
                            start,
                        );
                        return false;
                    }
                },
                '{' => {
                    self.error(
                        format!("unexpected left brace {}", go_quote_rune('{')),
                        start,
                    );
                    return false;
                }
                '}' => {
                    self.emit(Tok::RBrace, start);
                    return true;
                }
                '"' | '\'' => match self.string(c, start) {
                    Some(s) => Tok::Str(s),
                    None => return false,
                },
                '`' => match self.raw_string(start) {
                    Some(s) => Tok::Str(s),
                    None => return false,
                },
                c if is_alpha(c) => {
                    while let Some(c) = self.peek() {
                        if is_alnum(c) {
                            self.bump();
                        } else {
                            break;
                        }
                    }
                    Tok::Label(self.src[start..self.pos].to_string())
                }
                c => {
                    self.error(
                        format!("unexpected character inside braces: {}", go_quote_rune(c)),
                        start,
                    );
                    return false;
                }
            };
            self.emit(tok, start);
        }
    }

    /// A quoted string with Go escapes; the opening quote is consumed.
    fn string(&mut self, quote: char, start: usize) -> Option<String> {
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                self.error("unterminated quoted string".into(), start);
                return None;
            };
            match c {
                '\n' => {
                    self.error("unterminated quoted string".into(), start);
                    return None;
                }
                '\\' => {
                    let esc_start = self.pos - 1;
                    let Some(e) = self.bump() else {
                        self.error("escape sequence not terminated".into(), esc_start);
                        return None;
                    };
                    let simple = match e {
                        'a' => Some(7u8),
                        'b' => Some(8),
                        'f' => Some(12),
                        'n' => Some(b'\n'),
                        'r' => Some(b'\r'),
                        't' => Some(b'\t'),
                        'v' => Some(11),
                        '\\' => Some(b'\\'),
                        e if e == quote => Some(e as u8),
                        _ => None,
                    };
                    if let Some(b) = simple {
                        bytes.push(b);
                        continue;
                    }
                    let (n, base, max, first) = match e {
                        '0'..='7' => (2, 8, 255u32, e.to_digit(8)),
                        'x' => (2, 16, 255, Some(0)),
                        'u' => (4, 16, 0x10FFFF, Some(0)),
                        'U' => (8, 16, 0x10FFFF, Some(0)),
                        _ => {
                            self.error(
                                format!("unknown escape sequence {}", go_unicode(e)),
                                esc_start,
                            );
                            return None;
                        }
                    };
                    let mut v = first.unwrap_or(0);
                    for _ in 0..n {
                        match self.bump() {
                            Some(d) if d.is_digit(base) => {
                                v = v * base + d.to_digit(base).unwrap_or(0);
                            }
                            Some(d) if d != quote => {
                                self.error(
                                    format!(
                                        "illegal character {} in escape sequence",
                                        go_quote_rune(d)
                                    ),
                                    esc_start,
                                );
                                return None;
                            }
                            _ => {
                                self.error("escape sequence not terminated".into(), esc_start);
                                return None;
                            }
                        }
                    }
                    if v > max || (0xD800..0xE000).contains(&v) {
                        self.error(
                            "escape sequence is an invalid Unicode code point".into(),
                            esc_start,
                        );
                        return None;
                    }
                    if max == 255 {
                        // \x and octal escapes are raw bytes.
                        bytes.push(v as u8);
                    } else if let Some(ch) = char::from_u32(v) {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                }
                c if c == quote => break,
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Some(crate::value::bytes_to_string(&bytes))
    }

    fn raw_string(&mut self, start: usize) -> Option<String> {
        let body = self.pos;
        loop {
            match self.bump() {
                None => {
                    self.error("unterminated raw string".into(), start);
                    return None;
                }
                Some('`') => return Some(self.src[body..self.pos - 1].to_string()),
                Some(_) => {}
            }
        }
    }

    fn accept_digits(&mut self, radix: u32) -> bool {
        let mut any = false;
        while let Some(c) = self.peek() {
            if c.is_digit(radix) {
                any = true;
                self.bump();
            } else if c == '_' && any && self.peek2().is_some_and(|d| d.is_digit(radix)) {
                self.bump();
            } else {
                break;
            }
        }
        any
    }

    /// A number or duration; the first character is consumed.
    fn number_or_duration(&mut self, start: usize) -> Option<Tok> {
        self.pos = start;
        let mut is_int = true;
        if self.src[start..].starts_with("0x") || self.src[start..].starts_with("0X") {
            self.pos += 2;
            if self.peek() == Some('_') {
                self.bump();
            }
            if !self.accept_digits(16) {
                return self.bad_number(start);
            }
        } else {
            self.accept_digits(10);
            if self.peek() == Some('.') {
                is_int = false;
                self.bump();
                self.accept_digits(10);
            }
            if matches!(self.peek(), Some('e' | 'E'))
                && (self.peek2().is_some_and(|d| d.is_ascii_digit())
                    || (matches!(self.peek2(), Some('+' | '-'))
                        && self.src[self.pos..]
                            .chars()
                            .nth(2)
                            .is_some_and(|d| d.is_ascii_digit())))
            {
                is_int = false;
                self.bump();
                if matches!(self.peek(), Some('+' | '-')) {
                    self.bump();
                }
                self.accept_digits(10);
            }
        }
        match self.peek() {
            Some(c) if is_alnum(c) => {
                // A duration: units and further number-unit pairs.
                let _ = is_int;
                if !"smhdwy".contains(c) {
                    self.bump();
                    return self.bad_number(start);
                }
                loop {
                    match self.peek() {
                        Some(c) if "smhdwy".contains(c) => {
                            self.bump();
                        }
                        _ => return self.bad_number(start),
                    }
                    if self.peek() == Some('s') {
                        self.bump();
                    }
                    if !self.peek().is_some_and(|d| d.is_ascii_digit()) {
                        break;
                    }
                    while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                        self.bump();
                    }
                }
                if let Some(c) = self.peek() {
                    if is_alnum(c) || c == '.' {
                        self.bump();
                        return self.bad_number(start);
                    }
                }
                Some(Tok::Duration(self.src[start..self.pos].to_string()))
            }
            Some('.') => {
                self.bump();
                self.bad_number(start)
            }
            _ => {
                let text = &self.src[start..self.pos];
                match parse_number(text) {
                    Some(v) => Some(Tok::Number(v, text.to_string())),
                    None => self.bad_number(start),
                }
            }
        }
    }

    fn bad_number(&mut self, start: usize) -> Option<Tok> {
        let text = self.src[start..self.pos].to_string();
        self.error(
            format!("bad number or duration syntax: {}", go_quote(&text)),
            start,
        );
        None
    }
}

/// Go's `%#U` of a rune: `U+0027 '''`.
fn go_unicode(c: char) -> String {
    format!("U+{:04X} '{}'", c as u32, c)
}

/// Parses a number the way Prometheus does: Go integer syntax (base
/// prefixes, leading-zero octal, underscores), else a float.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let t = text.replace('_', "");
    let lower = t.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16)
            .ok()
            .map(|v| v as f64)
            .or_else(|| big_radix(hex, 16));
    }
    if lower.len() > 1
        && lower.starts_with('0')
        && lower.bytes().all(|b| b.is_ascii_digit())
        && lower.bytes().all(|b| b < b'8')
    {
        return u64::from_str_radix(&lower[1..], 8)
            .ok()
            .map(|v| v as f64)
            .or_else(|| big_radix(&lower[1..], 8));
    }
    lower.parse::<f64>().ok()
}

fn big_radix(digits: &str, radix: u32) -> Option<f64> {
    let mut v = 0f64;
    for c in digits.chars() {
        v = v * radix as f64 + c.to_digit(radix)? as f64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        lex(s).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(
            kinds("0x1F 1_000 .5 2. 1e3 010"),
            vec![
                Tok::Number(31.0, "0x1F".into()),
                Tok::Number(1000.0, "1_000".into()),
                Tok::Number(0.5, ".5".into()),
                Tok::Number(2.0, "2.".into()),
                Tok::Number(1000.0, "1e3".into()),
                Tok::Number(8.0, "010".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            kinds("1h30m 5ms"),
            vec![
                Tok::Duration("1h30m".into()),
                Tok::Duration("5ms".into()),
                Tok::Eof
            ]
        );
        assert!(
            matches!(&kinds("1mm")[0], Tok::Error(m) if m == "bad number or duration syntax: \"1mm\"")
        );
        assert!(matches!(kinds("InF")[0], Tok::Number(v, _) if v.is_infinite()));
    }

    #[test]
    fn strings_and_braces() {
        assert_eq!(
            kinds(r#"{a="\x41\u00e9\n", "b.c"!~`x\y`}"#),
            vec![
                Tok::LBrace,
                Tok::Label("a".into()),
                Tok::Eql,
                Tok::Str("Aé\n".into()),
                Tok::Comma,
                Tok::Str("b.c".into()),
                Tok::NeqRegex,
                Tok::Str("x\\y".into()),
                Tok::RBrace,
                Tok::Eof
            ]
        );
        assert!(
            matches!(&kinds("{a~")[2], Tok::Error(m) if m == "unexpected character inside braces: '~'")
        );
        assert!(matches!(&kinds("(")[1], Tok::Error(m) if m == "unclosed left parenthesis"));
        assert!(
            matches!(&kinds("'\\q'")[0], Tok::Error(m) if m.starts_with("unknown escape sequence U+0071"))
        );
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            kinds("foo # comment\n+ bar"),
            vec![
                Tok::Ident("foo".into()),
                Tok::Add,
                Tok::Ident("bar".into()),
                Tok::Eof
            ]
        );
    }
}
