//! Minimal JSON support: a strict RFC 8259 parser and a compact writer.
//!
//! The project is std-only, so it cannot pull in a JSON crate; this module is
//! the one place that turns request bodies into [`Value`]s and [`Value`]s back
//! into response bodies. Request bodies come from untrusted clients, so the
//! parser is deliberately strict rather than forgiving: anything outside the
//! RFC grammar (comments, trailing commas, `NaN`, duplicate keys, lone
//! surrogates, invalid UTF-8, ...) is rejected with the byte offset at which
//! the problem was found, and nesting is capped so that hostile input cannot
//! exhaust the stack. The parser never panics, whatever the input.
//!
//! The writer emits compact JSON (no insignificant whitespace) that this
//! parser reads back to an equal [`Value`]. Answers assembled field by field
//! (a node's `/health` and `/stats`, the relay's status and events) use
//! [`Object`] and [`array`](fn@array), which place the quotes, escapes and commas.

use std::collections::HashSet;
use std::fmt;

/// A parsed JSON document, or one being built for a response.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    /// Members in document order; duplicate keys are rejected by `parse`.
    Object(Vec<(String, Value)>),
}

/// Deepest nesting of arrays/objects accepted.
///
/// The parser recurses once per level, so an unbounded depth would let a body
/// of a few kilobytes of `[` overflow the stack. Real request bodies in this
/// project are a handful of levels deep; 64 leaves ample headroom.
pub const MAX_DEPTH: usize = 64;

/// Reason reported when [`MAX_DEPTH`] is exceeded; kept next to the constant
/// (and checked by a test) because `Error::reason` must be `&'static str`.
const DEPTH_REASON: &str = "nesting deeper than 64";

/// Object size up to which duplicate keys are found by scanning the members.
///
/// A linear scan is faster than hashing for the small objects that make up
/// almost all traffic, but it is quadratic in the member count, so beyond this
/// size the parser switches to a `HashSet` of the keys seen so far.
const LINEAR_DUP_SCAN_LIMIT: usize = 16;

/// Why and where parsing failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Byte offset into the input at which the problem was detected.
    pub offset: usize,
    /// Short description, e.g. `"duplicate key"`.
    pub reason: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for Error {}

/// Parses one complete JSON document (optionally surrounded by whitespace).
pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
    // Validating UTF-8 once up front means every later slice of the input is
    // already known to be valid, and string contents can be copied verbatim.
    let src = std::str::from_utf8(bytes).map_err(|e| Error {
        offset: e.valid_up_to(),
        reason: "invalid UTF-8",
    })?;
    let mut p = Parser {
        src,
        bytes: src.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let value = p.parse_value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> Error {
        self.err_at(self.pos, reason)
    }

    fn err_at(&self, offset: usize, reason: &'static str) -> Error {
        Error { offset, reason }
    }

    fn eof(&self) -> Error {
        self.err_at(self.bytes.len(), "unexpected end of input")
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// `depth` is the number of arrays/objects already open around this value.
    fn parse_value(&mut self, depth: usize) -> Result<Value, Error> {
        match self.peek() {
            None => Err(self.eof()),
            Some(b'{') => self.parse_object(depth + 1),
            Some(b'[') => self.parse_array(depth + 1),
            Some(b'"') => self.parse_string().map(Value::String),
            Some(b't') => self.parse_literal("true", Value::Bool(true)),
            Some(b'f') => self.parse_literal("false", Value::Bool(false)),
            Some(b'n') => self.parse_literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.parse_number(),
            Some(_) => Err(self.err("expected a value")),
        }
    }

    fn parse_literal(&mut self, word: &'static str, value: Value) -> Result<Value, Error> {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else if word.as_bytes().starts_with(rest) {
            // A truncated literal ("tru") is an early end, not a typo.
            Err(self.eof())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn parse_number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("leading zero"));
                }
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            None => return Err(self.eof()),
            Some(_) => return Err(self.err("expected digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            match self.peek() {
                Some(b'0'..=b'9') => self.skip_digits(),
                None => return Err(self.eof()),
                Some(_) => return Err(self.err("expected digit after '.'")),
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            match self.peek() {
                Some(b'0'..=b'9') => self.skip_digits(),
                None => return Err(self.eof()),
                Some(_) => return Err(self.err("expected digit in exponent")),
            }
        }
        // The scanned text matches the JSON number grammar, which is a subset
        // of what `f64::from_str` accepts, so a parse failure cannot happen;
        // it is still mapped to an error rather than unwrapped.
        let text = &self.src[start..self.pos];
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            _ => Err(self.err_at(start, "number out of range")),
        }
    }

    /// Parses a string starting at the opening quote and returns its contents.
    fn parse_string(&mut self) -> Result<String, Error> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.eof());
            };
            match b {
                b'"' | b'\\' => {
                    // Both bytes are ASCII, so they always sit on a char
                    // boundary of the (already validated) input.
                    out.push_str(&self.src[run_start..self.pos]);
                    if b == b'"' {
                        self.pos += 1;
                        return Ok(out);
                    }
                    out.push(self.parse_escape()?);
                    run_start = self.pos;
                }
                0x00..=0x1f => return Err(self.err("control character in string")),
                _ => self.pos += 1,
            }
        }
    }

    /// Parses an escape sequence starting at the backslash.
    fn parse_escape(&mut self) -> Result<char, Error> {
        let start = self.pos;
        self.pos += 1; // backslash
        let Some(b) = self.peek() else {
            return Err(self.eof());
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.parse_unicode_escape(start),
            _ => return Err(self.err_at(start, "invalid escape")),
        };
        Ok(c)
    }

    /// Finishes a `\uXXXX` escape whose backslash is at `start` and whose `u`
    /// has been consumed, combining a surrogate pair into one char.
    fn parse_unicode_escape(&mut self, start: usize) -> Result<char, Error> {
        let first = self.parse_hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                let second_start = self.pos;
                let rest = &self.bytes[self.pos..];
                if !rest.starts_with(b"\\u") {
                    // Input cut off mid-pair is an early end, not a lone half.
                    if b"\\u".starts_with(rest) {
                        return Err(self.eof());
                    }
                    return Err(self.err_at(start, "lone surrogate"));
                }
                self.pos += 2;
                let second = self.parse_hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.err_at(second_start, "lone surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.err_at(start, "lone surrogate")),
            _ => first,
        };
        char::from_u32(code).ok_or_else(|| self.err_at(start, "lone surrogate"))
    }

    fn parse_hex4(&mut self) -> Result<u32, Error> {
        let mut code = 0;
        for _ in 0..4 {
            let Some(b) = self.peek() else {
                return Err(self.eof());
            };
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.err("invalid \\u escape")),
            };
            code = code * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(code)
    }

    fn enter(&self, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            Err(self.err(DEPTH_REASON))
        } else {
            Ok(())
        }
    }

    fn parse_array(&mut self, depth: usize) -> Result<Value, Error> {
        self.enter(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.parse_value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        return Err(self.err("trailing comma"));
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.eof()),
                Some(_) => return Err(self.err("expected ',' or ']' in array")),
            }
        }
    }

    fn parse_object(&mut self, depth: usize) -> Result<Value, Error> {
        self.enter(depth)?;
        self.pos += 1; // '{'
        let mut members: Vec<(String, Value)> = Vec::new();
        // Built only once the object outgrows the linear scan.
        let mut seen: Option<HashSet<String>> = None;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            let key_start = self.pos;
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.eof()),
                Some(_) => return Err(self.err("expected string key")),
            }
            let key = self.parse_string()?;
            let duplicate = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => members.iter().any(|(k, _)| *k == key),
            };
            if duplicate {
                return Err(self.err_at(key_start, "duplicate key"));
            }
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.pos += 1,
                None => return Err(self.eof()),
                Some(_) => return Err(self.err("expected ':' after object key")),
            }
            self.skip_ws();
            let value = self.parse_value(depth)?;
            members.push((key, value));
            if seen.is_none() && members.len() > LINEAR_DUP_SCAN_LIMIT {
                seen = Some(members.iter().map(|(k, _)| k.clone()).collect());
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        return Err(self.err("trailing comma"));
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                None => return Err(self.eof()),
                Some(_) => return Err(self.err("expected ',' or '}' in object")),
            }
        }
    }
}

impl Value {
    /// Looks up an object member by key; `None` for missing keys and for
    /// values that are not objects.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Appends compact JSON (no whitespace) to `out`.
    ///
    /// Recurses per nesting level; values built in code are trusted not to be
    /// absurdly deep, and parsed values are bounded by [`MAX_DEPTH`].
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => write_number(out, *n),
            Value::String(s) => write_str(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Compact JSON in a fresh `String`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }
}

/// One JSON object written field by field, in the order given:
/// `Object::new().str("node", "a").uint("requests", 7).finish()` is
/// `{"node":"a","requests":7}`.
#[derive(Debug, Default)]
pub struct Object {
    out: String,
}

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    fn key(mut self, key: &str) -> Object {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        write_str(&mut self.out, key);
        self.out.push(':');
        self
    }

    pub fn str(self, key: &str, value: &str) -> Object {
        let mut this = self.key(key);
        write_str(&mut this.out, value);
        this
    }

    /// A string, or `null` for `None`.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Object {
        match value {
            Some(value) => self.str(key, value),
            None => self.raw(key, "null"),
        }
    }

    pub fn uint(self, key: &str, value: u64) -> Object {
        self.raw(key, &value.to_string())
    }

    /// A whole number, or `null` for `None`.
    pub fn opt_uint(self, key: &str, value: Option<u64>) -> Object {
        match value {
            Some(value) => self.uint(key, value),
            None => self.raw(key, "null"),
        }
    }

    pub fn bool(self, key: &str, value: bool) -> Object {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// A value already written as JSON (a nested object, an array, a number
    /// formatted by the caller).
    pub fn raw(self, key: &str, json: &str) -> Object {
        let mut this = self.key(key);
        this.out.push_str(json);
        this
    }

    pub fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

/// A JSON array of values already written as JSON.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// Appends `s` as a JSON string literal.
///
/// Only what JSON requires is escaped (quote, backslash, controls below
/// U+0020); everything else, including non-ASCII, is written literally since
/// responses are always UTF-8.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut run_start = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\u{0}'..='\u{1f}' => "",
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        if escaped.is_empty() {
            push_u_escape(out, c);
        } else {
            out.push_str(escaped);
        }
        run_start = i + c.len_utf8();
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Writes a control character as `\u00XX`.
fn push_u_escape(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let code = c as usize;
    out.push_str("\\u00");
    out.push(char::from(HEX[(code >> 4) & 0xf]));
    out.push(char::from(HEX[code & 0xf]));
}

/// Appends `n` as a JSON number.
///
/// Rust's `Display` for `f64` prints the shortest digits that round-trip and
/// never uses exponent notation, so the output is always valid JSON
/// (`12.0` -> `12`). JSON has no NaN or infinity, so those become `null`.
pub fn write_number(out: &mut String, n: f64) {
    use fmt::Write as _;
    if n.is_finite() {
        // Writing into a String cannot fail.
        let _ = write!(out, "{n}");
    } else {
        out.push_str("null");
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(opt: Option<T>) -> Self {
        opt.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ok(text: &str) -> Value {
        match parse(text.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{text:?} should parse, got {e}"),
        }
    }

    fn rejects(input: &[u8]) -> Error {
        match parse(input) {
            Ok(v) => panic!(
                "{:?} should be rejected, got {v:?}",
                String::from_utf8_lossy(input)
            ),
            Err(e) => e,
        }
    }

    fn assert_rejected(input: &str, reason: &str, offset: usize) {
        let e = rejects(input.as_bytes());
        assert_eq!((e.reason, e.offset), (reason, offset), "input {input:?}");
    }

    fn obj(members: &[(&str, Value)]) -> Value {
        Value::Object(
            members
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn string_json(s: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, s);
        out
    }

    fn number_json(n: f64) -> String {
        let mut out = String::new();
        write_number(&mut out, n);
        out
    }

    // ---- literals, whitespace, top level ----

    #[test]
    fn literals_parse_to_their_values() {
        assert_eq!(ok("true"), Value::Bool(true));
        assert_eq!(ok("false"), Value::Bool(false));
        assert_eq!(ok("null"), Value::Null);
    }

    #[test]
    fn literals_must_match_exactly() {
        assert_rejected("True", "expected a value", 0);
        assert_rejected("nul", "unexpected end of input", 3);
        assert_rejected("nulx", "invalid literal", 0);
        assert_rejected("nulll", "trailing characters after the value", 4);
        assert_rejected("falsy", "invalid literal", 0);
        assert_rejected("[tru]", "invalid literal", 1);
    }

    #[test]
    fn any_scalar_is_a_valid_top_level_document() {
        assert_eq!(ok("\"x\""), Value::String("x".into()));
        assert_eq!(ok("7"), Value::Number(7.0));
    }

    #[test]
    fn json_whitespace_around_and_inside_values_is_allowed() {
        let v = ok(" \t\r\n{ \"a\" :\n[ 1 ,\t2 ] } \r\n");
        assert_eq!(v, obj(&[("a", Value::Array(vec![1.0.into(), 2.0.into()]))]));
    }

    #[test]
    fn non_json_whitespace_is_rejected() {
        assert_rejected("\u{c}1", "expected a value", 0);
        assert_rejected("\u{b}1", "expected a value", 0);
        assert_rejected("\u{a0}1", "expected a value", 0);
        assert_rejected("1\u{c}", "trailing characters after the value", 1);
        assert_rejected("\u{feff}1", "expected a value", 0);
    }

    #[test]
    fn empty_or_blank_input_is_rejected() {
        assert_rejected("", "unexpected end of input", 0);
        assert_rejected(" \n\t ", "unexpected end of input", 4);
    }

    #[test]
    fn trailing_characters_after_the_value_are_rejected() {
        assert_rejected("{} {}", "trailing characters after the value", 3);
        assert_rejected("1 2", "trailing characters after the value", 2);
        assert_rejected("[]]", "trailing characters after the value", 2);
        assert_rejected("\"a\"x", "trailing characters after the value", 3);
        assert_rejected("null\0", "trailing characters after the value", 4);
    }

    #[test]
    fn comments_are_rejected() {
        assert_rejected("// c\n1", "expected a value", 0);
        assert_rejected("[1 /* c */]", "expected ',' or ']' in array", 3);
    }

    // ---- numbers ----

    #[test]
    fn numbers_in_json_grammar_parse() {
        assert_eq!(ok("0"), Value::Number(0.0));
        assert_eq!(ok("1e5"), Value::Number(1e5));
        assert_eq!(ok("1E5"), Value::Number(1e5));
        assert_eq!(ok("1.5E-3"), Value::Number(1.5e-3));
        assert_eq!(ok("1e+2"), Value::Number(100.0));
        assert_eq!(ok("-12.25"), Value::Number(-12.25));
        assert_eq!(ok("0.5"), Value::Number(0.5));
        assert_eq!(ok("0e0"), Value::Number(0.0));
        assert_eq!(ok("-0.0e-0"), Value::Number(-0.0));
        assert_eq!(ok("10"), Value::Number(10.0));
        assert_eq!(ok("1.7976931348623157e308"), Value::Number(f64::MAX));
    }

    #[test]
    fn negative_zero_keeps_its_sign() {
        let n = ok("-0").as_f64().unwrap();
        assert_eq!(n, 0.0);
        assert!(n.is_sign_negative());
        assert_eq!(number_json(n), "-0");
    }

    #[test]
    fn big_integers_parse_to_nearest_f64() {
        assert_eq!(
            ok("12345678901234567890"),
            Value::Number(12_345_678_901_234_567_890.0)
        );
        assert_eq!(
            ok("9007199254740993"),
            Value::Number(9_007_199_254_740_992.0)
        );
        let long = format!("1{}", "0".repeat(300));
        assert_eq!(ok(&long), Value::Number(1e300));
    }

    #[test]
    fn leading_zeros_are_rejected() {
        assert_rejected("01", "leading zero", 1);
        assert_rejected("-01", "leading zero", 2);
        assert_rejected("00", "leading zero", 1);
        assert_rejected("[007]", "leading zero", 2);
    }

    #[test]
    fn numbers_outside_json_grammar_are_rejected() {
        assert_rejected("+1", "expected a value", 0);
        assert_rejected(".5", "expected a value", 0);
        assert_rejected("1.", "unexpected end of input", 2);
        assert_rejected("[1.]", "expected digit after '.'", 3);
        assert_rejected("1.e5", "expected digit after '.'", 2);
        assert_rejected("1e", "unexpected end of input", 2);
        assert_rejected("1e+", "unexpected end of input", 3);
        assert_rejected("1e+x", "expected digit in exponent", 3);
        assert_rejected("1E-]", "expected digit in exponent", 3);
        assert_rejected("-", "unexpected end of input", 1);
        assert_rejected("-a", "expected digit", 1);
        assert_rejected("- 1", "expected digit", 1);
        assert_rejected("--1", "expected digit", 1);
        assert_rejected("NaN", "expected a value", 0);
        assert_rejected("Infinity", "expected a value", 0);
        assert_rejected("-Infinity", "expected digit", 1);
        assert_rejected("0x10", "trailing characters after the value", 1);
        assert_rejected("1.5.3", "trailing characters after the value", 3);
        assert_rejected("1_000", "trailing characters after the value", 1);
    }

    #[test]
    fn numbers_that_overflow_f64_are_rejected() {
        assert_rejected("1e400", "number out of range", 0);
        assert_rejected("[-1e400]", "number out of range", 1);
        let huge = format!("1{}", "0".repeat(400));
        assert_rejected(&huge, "number out of range", 0);
    }

    #[test]
    fn numbers_that_underflow_become_zero() {
        assert_eq!(ok("1e-400"), Value::Number(0.0));
    }

    // ---- strings ----

    #[test]
    fn every_escape_is_decoded() {
        assert_eq!(
            ok(r#""\"\\\/\b\f\n\r\t""#),
            Value::String("\"\\/\u{8}\u{c}\n\r\t".into())
        );
        assert_eq!(ok(r#""a\u0041b""#), Value::String("aAb".into()));
        assert_eq!(ok(r#""\u0000""#), Value::String("\0".into()));
    }

    #[test]
    fn unicode_escape_hex_is_case_insensitive() {
        assert_eq!(ok(r#""\u00e9\u00E9\u00Ea""#), Value::String("ééê".into()));
        assert_eq!(ok(r#""\uFFFF""#), Value::String("\u{ffff}".into()));
    }

    #[test]
    fn surrogate_pairs_combine_into_one_char() {
        assert_eq!(ok(r#""\uD83D\uDE00""#), Value::String("😀".into()));
        assert_eq!(ok(r#""x\ud83d\ude00y""#), Value::String("x😀y".into()));
        assert_eq!(ok(r#""\uDBFF\uDFFF""#), Value::String("\u{10ffff}".into()));
        assert_eq!(ok(r#""\uD800\uDC00""#), Value::String("\u{10000}".into()));
    }

    #[test]
    fn lone_surrogates_are_rejected() {
        assert_rejected(r#""\uD83D""#, "lone surrogate", 1);
        assert_rejected(r#""\uD83Dx""#, "lone surrogate", 1);
        assert_rejected(r#""\uD83D\n""#, "lone surrogate", 1);
        assert_rejected(r#""\uD83D\u0041""#, "lone surrogate", 7);
        assert_rejected(r#""\uD83D\uD83D""#, "lone surrogate", 7);
        assert_rejected(r#""\uDE00""#, "lone surrogate", 1);
        assert_rejected(r#""a\uDE00\uD83D""#, "lone surrogate", 2);
        assert_rejected("\"\\uD83D", "unexpected end of input", 7);
        assert_rejected("\"\\uD83D\\", "unexpected end of input", 8);
        assert_rejected("\"\\uD83D\\u", "unexpected end of input", 9);
    }

    #[test]
    fn unknown_escapes_are_rejected() {
        assert_rejected(r#""\x41""#, "invalid escape", 1);
        assert_rejected(r#""\'""#, "invalid escape", 1);
        assert_rejected(r#""ab\U0041""#, "invalid escape", 3);
        assert_rejected(r#""\0""#, "invalid escape", 1);
        assert_rejected("\"\\\u{e9}\"", "invalid escape", 1);
        assert_rejected("\"\\", "unexpected end of input", 2);
    }

    #[test]
    fn malformed_unicode_escapes_are_rejected() {
        assert_rejected(r#""\u12G4""#, "invalid \\u escape", 5);
        assert_rejected(r#""\u12""#, "invalid \\u escape", 5);
        assert_rejected(r#""\u+123""#, "invalid \\u escape", 3);
        assert_rejected("\"\\u12", "unexpected end of input", 5);
    }

    #[test]
    fn raw_control_characters_in_strings_are_rejected() {
        for b in 0u8..0x20 {
            let input = [b'"', b'a', b, b'"'];
            let e = rejects(&input);
            assert_eq!((e.reason, e.offset), ("control character in string", 2));
        }
        assert_eq!(ok("\"\u{7f}\""), Value::String("\u{7f}".into()));
    }

    #[test]
    fn unterminated_strings_are_rejected() {
        assert_rejected("\"abc", "unexpected end of input", 4);
        assert_rejected("\"", "unexpected end of input", 1);
    }

    #[test]
    fn non_ascii_text_in_strings_is_kept() {
        let v = ok("\"héllo wörld ✓ 😀\"");
        assert_eq!(v, Value::String("héllo wörld ✓ 😀".into()));
    }

    #[test]
    fn invalid_utf8_is_rejected_with_its_offset() {
        let cases: &[(&[u8], usize)] = &[
            (b"\"ab\xff\"", 3),
            (b"\xff", 0),
            (b"[1, \xc3]", 4),
            (b"\"\xc0\x80\"", 1),            // overlong NUL
            (b"\"\xed\xa0\x80\"", 1),        // UTF-8 encoded surrogate
            (b"\"\xe2\x82\"", 1),            // truncated sequence
            (b"\"ok\" \xf4\x90\x80\x80", 5), // above U+10FFFF
        ];
        for (input, offset) in cases {
            let e = rejects(input);
            assert_eq!(
                (e.reason, e.offset),
                ("invalid UTF-8", *offset),
                "{input:?}"
            );
        }
    }

    // ---- arrays and objects ----

    #[test]
    fn arrays_and_objects_parse_in_document_order() {
        let v = ok(r#"{"b":[1,"x",null,true,{}],"a":{"c":[]}}"#);
        assert_eq!(
            v,
            obj(&[
                (
                    "b",
                    Value::Array(vec![
                        1.0.into(),
                        "x".into(),
                        Value::Null,
                        true.into(),
                        Value::Object(vec![]),
                    ])
                ),
                ("a", obj(&[("c", Value::Array(vec![]))])),
            ])
        );
        assert_eq!(ok("[ ]"), Value::Array(vec![]));
        assert_eq!(ok("{ }"), Value::Object(vec![]));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert_rejected(r#"{"a":1,"a":2}"#, "duplicate key", 7);
        assert_rejected(r#"{"a":1,"b":{"a":1},"b":2}"#, "duplicate key", 19);
        // Escapes are decoded before comparing.
        assert_rejected(r#"{"a":1,"\u0061":2}"#, "duplicate key", 7);
    }

    #[test]
    fn same_key_in_different_objects_is_allowed() {
        let v = ok(r#"[{"a":1},{"a":2,"b":{"a":3}}]"#);
        assert_eq!(v.as_array().unwrap().len(), 2);
    }

    #[test]
    fn duplicate_keys_are_rejected_in_large_objects() {
        // Exercise both sides of the switch from linear scan to HashSet.
        for n in [
            LINEAR_DUP_SCAN_LIMIT - 1,
            LINEAR_DUP_SCAN_LIMIT,
            LINEAR_DUP_SCAN_LIMIT + 1,
            LINEAR_DUP_SCAN_LIMIT + 2,
            100,
        ] {
            let mut text = String::from("{");
            for i in 0..n {
                text.push_str(&format!("\"k{i}\":{i},"));
            }
            let dup_offset = text.len();
            text.push_str("\"k0\":0}");
            assert_rejected(&text, "duplicate key", dup_offset);
            // Without the duplicate the same object is fine.
            let fine = format!("{}\"last\":0}}", &text[..dup_offset]);
            assert_eq!(ok(&fine).as_object().unwrap().len(), n + 1);
        }
    }

    #[test]
    fn object_with_50000_keys_parses_without_quadratic_slowdown() {
        let n = 50_000;
        let mut text = String::from("{");
        for i in 0..n {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"key{i}\":{i}"));
        }
        text.push('}');
        let start = Instant::now();
        let v = ok(&text);
        assert_eq!(v.as_object().unwrap().len(), n);
        assert_eq!(v.get("key49999"), Some(&Value::Number(49_999.0)));

        let with_dup = format!("{},\"key0\":1}}", &text[..text.len() - 1]);
        assert_eq!(rejects(with_dup.as_bytes()).reason, "duplicate key");
        // A quadratic scan would take ~1.25e9 comparisons here.
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn trailing_commas_are_rejected() {
        assert_rejected("[1,]", "trailing comma", 3);
        assert_rejected("[1, ]", "trailing comma", 4);
        assert_rejected(r#"{"a":1,}"#, "trailing comma", 7);
        assert_rejected(r#"{"a":1 , }"#, "trailing comma", 9);
    }

    #[test]
    fn missing_or_extra_separators_are_rejected() {
        assert_rejected("[,1]", "expected a value", 1);
        assert_rejected("[1,,2]", "expected a value", 3);
        assert_rejected("[1 2]", "expected ',' or ']' in array", 3);
        assert_rejected(r#"{"a" 1}"#, "expected ':' after object key", 5);
        assert_rejected(r#"{"a":1 "b":2}"#, "expected ',' or '}' in object", 7);
        assert_rejected(r#"{"a":}"#, "expected a value", 5);
        assert_rejected(r#"{,}"#, "expected string key", 1);
        assert_rejected(r#"{"a"::1}"#, "expected a value", 5);
        assert_rejected("[1:2]", "expected ',' or ']' in array", 2);
        assert_rejected(r#"{"a":1]"#, "expected ',' or '}' in object", 6);
        assert_rejected(r#"[1}"#, "expected ',' or ']' in array", 2);
    }

    #[test]
    fn object_keys_must_be_strings() {
        assert_rejected("{1:2}", "expected string key", 1);
        assert_rejected("{a:2}", "expected string key", 1);
        assert_rejected("{'a':2}", "expected string key", 1);
        assert_rejected("{null:2}", "expected string key", 1);
    }

    #[test]
    fn unterminated_containers_are_rejected() {
        assert_rejected("[", "unexpected end of input", 1);
        assert_rejected("[1", "unexpected end of input", 2);
        assert_rejected("[1,", "unexpected end of input", 3);
        assert_rejected("{", "unexpected end of input", 1);
        assert_rejected(r#"{"a""#, "unexpected end of input", 4);
        assert_rejected(r#"{"a":"#, "unexpected end of input", 5);
        assert_rejected(r#"{"a":1"#, "unexpected end of input", 6);
        assert_rejected(r#"{"a":1,"#, "unexpected end of input", 7);
    }

    // ---- depth limit ----

    fn nested_arrays(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_reason_mentions_max_depth() {
        assert_eq!(DEPTH_REASON, format!("nesting deeper than {MAX_DEPTH}"));
    }

    #[test]
    fn nesting_exactly_at_max_depth_is_accepted() {
        assert!(parse(nested_arrays(MAX_DEPTH).as_bytes()).is_ok());
        let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(parse(objects.as_bytes()).is_ok());
    }

    #[test]
    fn nesting_one_past_max_depth_is_rejected() {
        assert_rejected(&nested_arrays(MAX_DEPTH + 1), DEPTH_REASON, MAX_DEPTH);
        let objects = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_rejected(&objects, DEPTH_REASON, 5 * MAX_DEPTH);
        // Arrays and objects count towards the same limit.
        let mixed = format!("{}{}", "[{\"a\":".repeat(33), "}]".repeat(33));
        assert_rejected(&mixed, DEPTH_REASON, 6 * 32);
    }

    #[test]
    fn hundred_thousand_open_brackets_are_rejected_quickly() {
        let start = Instant::now();
        let input = vec![b'['; 100_000];
        assert_eq!(rejects(&input).reason, DEPTH_REASON);
        let input = "{\"a\":".repeat(100_000);
        assert_eq!(rejects(input.as_bytes()).reason, DEPTH_REASON);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    // ---- errors ----

    #[test]
    fn error_display_names_offset_and_reason() {
        let e = rejects(b"[1,]");
        assert_eq!(e.to_string(), "invalid JSON at byte 3: trailing comma");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().starts_with("invalid JSON at byte 3"));
    }

    // ---- writer ----

    #[test]
    fn write_str_escapes_quotes_backslashes_and_named_controls() {
        assert_eq!(string_json("\"\\\n\r\t\u{8}\u{c}"), r#""\"\\\n\r\t\b\f""#);
        assert_eq!(string_json(""), r#""""#);
        assert_eq!(string_json("plain"), r#""plain""#);
    }

    #[test]
    fn write_str_escapes_other_controls_as_lowercase_u00xx() {
        assert_eq!(string_json("\0"), r#""\u0000""#);
        assert_eq!(string_json("a\u{1}b"), r#""a\u0001b""#);
        assert_eq!(string_json("\u{b}"), r#""\u000b""#);
        assert_eq!(string_json("\u{1f}"), r#""\u001f""#);
        for c in (0u8..0x20).map(char::from) {
            let json = string_json(&c.to_string());
            assert!(
                json.is_ascii() && !json.bytes().any(|b| b < 0x20),
                "{json:?}"
            );
            assert_eq!(ok(&json), Value::String(c.to_string()));
        }
    }

    #[test]
    fn write_str_keeps_slash_html_and_non_ascii_literal() {
        assert_eq!(string_json("a/b<c>&d"), r#""a/b<c>&d""#);
        assert_eq!(string_json("\u{7f}"), "\"\u{7f}\"");
        assert_eq!(string_json("é😀\u{2028}"), "\"é😀\u{2028}\"");
        assert_eq!(string_json("ü\"ü"), "\"ü\\\"ü\"");
    }

    #[test]
    fn write_str_appends_to_existing_content() {
        let mut out = String::from("x=");
        write_str(&mut out, "y");
        assert_eq!(out, "x=\"y\"");
    }

    #[test]
    fn write_number_uses_shortest_round_trip_form() {
        assert_eq!(number_json(12.0), "12");
        assert_eq!(number_json(12.5), "12.5");
        assert_eq!(number_json(0.0), "0");
        assert_eq!(number_json(-3.25), "-3.25");
        assert_eq!(number_json(0.1), "0.1");
        assert_eq!(number_json(1e21), "1000000000000000000000");
        assert_eq!(number_json(1.5e-7), "0.00000015");
        for n in [
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            0.1 + 0.2,
            -1e300,
            1.0 / 3.0,
        ] {
            assert_eq!(ok(&number_json(n)), Value::Number(n));
        }
    }

    #[test]
    fn write_number_writes_non_finite_as_null() {
        assert_eq!(number_json(f64::NAN), "null");
        assert_eq!(number_json(f64::INFINITY), "null");
        assert_eq!(number_json(f64::NEG_INFINITY), "null");
        assert_eq!(Value::Number(f64::NAN).to_json(), "null");
    }

    #[test]
    fn to_json_is_compact() {
        let v = obj(&[
            (
                "a",
                Value::Array(vec![1.0.into(), Value::Null, false.into()]),
            ),
            ("b", obj(&[])),
            ("c", "x y".into()),
        ]);
        assert_eq!(v.to_json(), r#"{"a":[1,null,false],"b":{},"c":"x y"}"#);
    }

    #[test]
    fn write_json_appends() {
        let mut out = String::from("[");
        Value::Bool(true).write_json(&mut out);
        assert_eq!(out, "[true");
    }

    #[test]
    fn values_round_trip_through_to_json_and_parse() {
        let samples = vec![
            Value::Null,
            true.into(),
            false.into(),
            0.0.into(),
            (-0.0).into(),
            1.5e-3.into(),
            (-123_456_789.125).into(),
            f64::MAX.into(),
            5e-324.into(),
            "".into(),
            "quote \" backslash \\ slash / controls \u{0}\u{1f}\n\t é 😀 \u{ffff}".into(),
            Value::Array(vec![]),
            Value::Object(vec![]),
            obj(&[
                ("nested", Value::Array(vec![obj(&[("k", Value::Null)])])),
                ("", "empty key".into()),
                ("😀\"", 1.0.into()),
            ]),
        ];
        for v in samples {
            let json = v.to_json();
            assert_eq!(ok(&json), v, "via {json}");
        }
    }

    #[test]
    fn parsed_documents_reserialise_canonically() {
        let text = " { \"a\" : [ 1.50 , 2e2 , \"\\u0041\\/\" ] , \"b\" : null } ";
        assert_eq!(ok(text).to_json(), r#"{"a":[1.5,200,"A/"],"b":null}"#);
    }

    // ---- accessors and conversions ----

    #[test]
    fn accessors_return_contents_only_for_matching_variant() {
        let v = ok(r#"{"s":"x","n":2,"a":[1],"o":{"k":true},"z":null}"#);
        assert_eq!(v.get("s").and_then(Value::as_str), Some("x"));
        assert_eq!(v.get("n").and_then(Value::as_f64), Some(2.0));
        assert_eq!(
            v.get("a").and_then(Value::as_array),
            Some(&[1.0.into()][..])
        );
        assert_eq!(
            v.get("o").and_then(|o| o.get("k")),
            Some(&Value::Bool(true))
        );
        assert_eq!(
            v.get("o").and_then(Value::as_object).map(<[_]>::len),
            Some(1)
        );
        assert!(v.get("z").is_some_and(Value::is_null));
        assert_eq!(v.get("missing"), None);

        let s = Value::from("x");
        assert_eq!(s.as_f64(), None);
        assert_eq!(s.as_array(), None);
        assert_eq!(s.as_object(), None);
        assert_eq!(s.get("x"), None);
        assert!(!s.is_null());
        assert_eq!(Value::Number(1.0).as_str(), None);
        assert_eq!(Value::Array(vec![]).get("0"), None);
    }

    #[test]
    fn from_impls_build_the_matching_variant() {
        assert_eq!(Value::from("a"), Value::String("a".into()));
        assert_eq!(Value::from(String::from("b")), Value::String("b".into()));
        assert_eq!(Value::from(2.5), Value::Number(2.5));
        assert_eq!(Value::from(true), Value::Bool(true));
        assert_eq!(Value::from(None::<&str>), Value::Null);
        assert_eq!(Value::from(Some("c")), Value::String("c".into()));
        assert_eq!(Value::from(Some(1.0)), Value::Number(1.0));
        assert_eq!(Value::from(Some(Some(false))), Value::Bool(false));
        assert_eq!(Value::from(Some(None::<bool>)), Value::Null);
    }

    // ---- robustness ----

    /// xorshift64: tiny deterministic PRNG so the test needs no dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        const SEEDS: &[&str] = &[
            r#"{"a":[1,2.5e-3,-0,true,false,null],"b":{"c":"d\n\u00e9\ud83d\ude00"}}"#,
            r#"[[[[{"k":[{}]}]]]]"#,
            r#""esc \" \\ \/ \b \f \n \r \t""#,
            "{\"é\":\"😀\",\"x\":[1e308,123456789012345678901234567890]}",
            "  [ 0 , -1.5E+10 , \"\" , { } , [ ] ]  ",
        ];
        // Bytes that are interesting to the grammar, mixed with random ones.
        const ALPHABET: &[u8] =
            b"{}[]\",:\\/ubfnrt0123456789-+.eE \t\r\naxyz\xc3\xa9\xed\xf0\xff\x00\x1f";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for i in 0..20_000 {
            let input: Vec<u8> = if i % 4 == 0 {
                let len = rng.below(40);
                (0..len)
                    .map(|_| {
                        if rng.below(2) == 0 {
                            ALPHABET[rng.below(ALPHABET.len())]
                        } else {
                            rng.next() as u8
                        }
                    })
                    .collect()
            } else {
                let mut bytes = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len() + 1);
                    let byte = ALPHABET[rng.below(ALPHABET.len())];
                    match rng.below(4) {
                        0 if at < bytes.len() => bytes[at] = byte,
                        1 => bytes.insert(at, byte),
                        2 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => bytes.truncate(at),
                    }
                }
                bytes
            };
            match parse(&input) {
                Ok(v) => {
                    accepted += 1;
                    assert_eq!(ok(&v.to_json()), v, "round trip of {input:?}");
                }
                Err(e) => assert!(e.offset <= input.len(), "{e} for {input:?}"),
            }
        }
        // Guards against the mutator degenerating into only-garbage input.
        assert!(accepted > 100, "only {accepted} inputs parsed");
    }

    #[test]
    fn megabyte_string_parses() {
        let body = "ab\\n😀".repeat(1 << 17);
        let text = format!("\"{body}\"");
        assert!(text.len() > 1 << 20);
        let v = ok(&text);
        assert_eq!(v.as_str().map(str::len), Some((1 << 17) * 7));
    }

    #[test]
    fn objects_and_arrays_are_written_field_by_field() {
        assert_eq!(Object::new().finish(), "{}");
        let object = Object::new()
            .str("name", "be\"ta")
            .opt_str("node", None)
            .uint("n", 7)
            .opt_uint("hits", None)
            .bool("up", true)
            .raw("list", &array(["1".to_string(), "2".to_string()]))
            .finish();
        assert_eq!(
            object,
            r#"{"name":"be\"ta","node":null,"n":7,"hits":null,"up":true,"list":[1,2]}"#
        );
        assert_eq!(array(Vec::new()), "[]");
        assert!(parse(object.as_bytes()).is_ok());
    }
}
