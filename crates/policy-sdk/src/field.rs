//! Reading one top-level string field of an object's spec JSON without
//! parsing the rest.
//!
//! A policy that needs one or two fields of the spec (vm-guard reads
//! `machineType`) would otherwise pay for parsing every field it ignores,
//! which is most of what a small policy costs per evaluation. This reader
//! walks the top-level keys, skips the values it passes over without
//! decoding them, and stops at the field: it does not validate the part of
//! the document it skips or does not reach. `spec-json` is written by the
//! host, always as one JSON object with unique keys, so for it the answer
//! is the one a full parse gives. Escaped strings are decoded with
//! `serde_json`.

use alloc::borrow::Cow;
use alloc::string::{String, ToString};

use crate::SpecError;

/// The top-level string field `field` of the JSON object `json`: `""`
/// when absent (proto3 JSON leaves out empty strings); an error when the
/// document is not an object, breaks off before the field, or holds
/// something other than a string there.
pub(crate) fn top_level_str<'a>(json: &'a str, field: &str) -> Result<Cow<'a, str>, SpecError> {
    let b = json.as_bytes();
    let mut i = whitespace(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(SpecError("the spec is not a JSON object".into()));
    }
    i = whitespace(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(Cow::Borrowed(""));
    }
    loop {
        let key = string_at(b, i)?;
        i = whitespace(b, key.end);
        if b.get(i) != Some(&b':') {
            return Err(broken(i));
        }
        i = whitespace(b, i + 1);
        if is(json, key, field)? {
            return match b.get(i) {
                Some(b'"') => decode(json, string_at(b, i)?),
                _ => Err(SpecError(alloc::format!("field {field} is not a string"))),
            };
        }
        i = whitespace(b, skip_value(b, i)?);
        match b.get(i) {
            Some(b',') => i = whitespace(b, i + 1),
            Some(b'}') => return Ok(Cow::Borrowed("")),
            _ => return Err(broken(i)),
        }
    }
}

/// A JSON string in the document: from its opening quote to just past its
/// closing one.
#[derive(Clone, Copy)]
struct Quoted {
    start: usize,
    end: usize,
    escaped: bool,
}

fn broken(at: usize) -> SpecError {
    SpecError(alloc::format!("the spec is not valid JSON at byte {at}"))
}

fn whitespace(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The string that starts with the quote at `i`.
fn string_at(b: &[u8], i: usize) -> Result<Quoted, SpecError> {
    if b.get(i) != Some(&b'"') {
        return Err(broken(i));
    }
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        // Most of a string is plain text: step over it eight bytes at a
        // time, straight to its first quote or backslash. Fewer than eight
        // bytes before the end of the document go one by one.
        if let Some(word) = b.get(j..j + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            let word = u64::from_le_bytes(word);
            let found = flags(word, b'"') | flags(word, b'\\');
            if found == 0 {
                j += 8;
                continue;
            }
            j += (found.trailing_zeros() / 8) as usize;
        }
        match b.get(j) {
            Some(b'"') => {
                return Ok(Quoted {
                    start: i,
                    end: j + 1,
                    escaped,
                });
            }
            // The escaped character is skipped whatever it is: an escaped
            // quote does not end the string.
            Some(b'\\') => {
                escaped = true;
                j += 2;
            }
            Some(_) => j += 1,
            None => return Err(broken(j)),
        }
    }
}

/// The bytes of `word` (little-endian) that equal `byte`, as the high bit
/// of each: the classic test for a zero byte, applied to `word` XOR `byte`
/// in every lane. The lowest flag is exact, the only one used; flags above
/// a match may be false.
fn flags(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Whether the string `s` says `text`.
fn is(json: &str, s: Quoted, text: &str) -> Result<bool, SpecError> {
    if s.escaped {
        return Ok(decode(json, s)? == text);
    }
    Ok(json.as_bytes().get(s.start + 1..s.end - 1) == Some(text.as_bytes()))
}

/// The text of a string: borrowed when it holds no escapes.
fn decode(json: &str, s: Quoted) -> Result<Cow<'_, str>, SpecError> {
    // The quotes are ASCII, so both ends are character boundaries.
    let quoted = json.get(s.start..s.end).ok_or_else(|| broken(s.start))?;
    if !s.escaped {
        return Ok(Cow::Borrowed(&quoted[1..quoted.len() - 1]));
    }
    serde_json::from_str::<String>(quoted)
        .map(Cow::Owned)
        .map_err(|e| SpecError(e.to_string()))
}

/// Just past the value that starts at `i`, without decoding it.
fn skip_value(b: &[u8], i: usize) -> Result<usize, SpecError> {
    match b.get(i) {
        Some(b'"') => Ok(string_at(b, i)?.end),
        Some(b'{' | b'[') => {
            // Nested objects and arrays: count the brackets, stepping over
            // strings (which may hold brackets); no recursion, so no depth
            // limit is needed.
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j) {
                    Some(b'"') => {
                        j = string_at(b, j)?.end;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => {}
                    None => return Err(broken(j)),
                }
                j += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to what ends a value.
        Some(_) => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            if j == i { Err(broken(i)) } else { Ok(j) }
        }
        None => Err(broken(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(json: &'a str, field: &str) -> Result<Cow<'a, str>, SpecError> {
        top_level_str(json, field)
    }

    #[test]
    fn reads_a_top_level_string_and_stops_there() {
        let json = r#"{"name":"tenants/a/vms/x","machineType":"e2-small","displayName":"broken"#;
        assert_eq!(read(json, "machineType").as_deref(), Ok("e2-small"));
        assert!(matches!(read(json, "machineType"), Ok(Cow::Borrowed(_))));
        assert_eq!(read(json, "name").as_deref(), Ok("tenants/a/vms/x"));
        // Past the field, the document breaks off: reading further fails.
        assert!(read(json, "image").is_err());
    }

    #[test]
    fn absent_fields_read_as_empty() {
        assert_eq!(read("{}", "machineType").as_deref(), Ok(""));
        assert_eq!(read(" { } ", "machineType").as_deref(), Ok(""));
        assert_eq!(read(r#"{"image":"debian-12"}"#, "machineType").as_deref(), Ok(""));
    }

    #[test]
    fn skips_nested_values_strings_with_brackets_and_lookalike_keys() {
        let json = r#"{
            "labels": {"machineType": "nested", "b": "}]\"{["},
            "list": [1, [2, {"machineType": "deeper"}], "]"],
            "count": -1.5e3, "on": true, "off": null,
            "note": "\"machineType\":\"in a string\"",
            "machineType" : "n2-standard-2"
        }"#;
        assert_eq!(read(json, "machineType").as_deref(), Ok("n2-standard-2"));
    }

    #[test]
    fn finds_the_end_of_long_strings_at_any_offset() {
        for n in 0..40 {
            let text = "x".repeat(n);
            let json = alloc::format!(r#"{{"displayName":"{text}","machineType":"{text}\"q\\"}}"#);
            let want = alloc::format!("{text}\"q\\");
            assert_eq!(read(&json, "machineType").as_deref(), Ok(want.as_str()), "{json}");
            assert_eq!(read(&json, "displayName").as_deref(), Ok(text.as_str()), "{json}");
        }
    }

    #[test]
    fn flags_the_first_match_exactly() {
        for at in 0..8 {
            let mut word = *b"abcdefgh";
            word[at] = b'"';
            // A second match, and bytes around it that may raise false
            // flags above the first.
            if at < 7 {
                word[7] = b'"';
            }
            let found = flags(u64::from_le_bytes(word), b'"');
            assert_eq!(found.trailing_zeros() / 8, at as u32, "{word:?}");
        }
        assert_eq!(flags(u64::from_le_bytes(*b"\x01\x80\xff~#!AB"), b'"'), 0);
    }

    #[test]
    fn decodes_escapes_in_keys_and_values() {
        let json = r#"{"machine\u0054ype":"e2-\"small\"\n"}"#;
        assert_eq!(read(json, "machineType").as_deref(), Ok("e2-\"small\"\n"));
        let json = r#"{"a\\":"x","b":"caf\u00e9 ☕"}"#;
        assert_eq!(read(json, "b").as_deref(), Ok("café ☕"));
    }

    #[test]
    fn refuses_what_is_not_an_object_or_not_a_string() {
        for json in [
            "",
            "[]",
            "\"x\"",
            "null",
            "{",
            r#"{"a""#,
            r#"{"a":}"#,
            r#"{"a" "b"}"#,
            r#"{"a":1 "b":2}"#,
        ] {
            assert!(read(json, "b").is_err(), "{json:?} should not read");
        }
        for json in [
            r#"{"b":1}"#,
            r#"{"b":null}"#,
            r#"{"b":{"c":"d"}}"#,
            r#"{"b":["x"]}"#,
        ] {
            let e = read(json, "b").err().map(|e| e.0);
            assert_eq!(e.as_deref(), Some("field b is not a string"), "{json}");
        }
        // An unterminated string or escape never reads past the end.
        for json in [r#"{"a":"x"#, r#"{"a":"x\"#, r#"{"a":["x]"#, r#"{"a":{"b":[}"#] {
            assert!(read(json, "b").is_err(), "{json:?} should not read");
        }
    }

    #[test]
    fn agrees_with_a_full_parse() {
        let docs = [
            r#"{"name":"tenants/acme/vms/web-1","uid":"0193","createdBy":"alice","region":"us-east1","machineType":"e2-small","image":"debian-12","displayName":"xxxx","labels":{"env":"prod","team":"a"},"state":"RUNNING","createTime":"2026-12-02T10:00:00Z"}"#,
            r#"{"email":"bob@example.com","labels":{"manager":"alice"},"state":"ACTIVE","quota":[1,2,{"x":"y"}],"n":0}"#,
            r#"{ "a" : "1" , "b":{"c":["d","e"]},"f":"tab\there","g":false,"h":"☕ über alles, and then some more" }"#,
        ];
        for doc in docs {
            let value: serde_json::Value = serde_json::from_str(doc).unwrap_or_default();
            let Some(map) = value.as_object() else {
                panic!("{doc} is an object");
            };
            for (key, field) in map {
                match field.as_str() {
                    Some(text) => assert_eq!(read(doc, key).as_deref(), Ok(text), "{key} of {doc}"),
                    None => assert!(read(doc, key).is_err(), "{key} of {doc}"),
                }
            }
            assert_eq!(read(doc, "absent").as_deref(), Ok(""));
        }
    }
}
