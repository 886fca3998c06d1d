//! Compiler output turned into what a person can act on: `file:line:col: message` lines, with
//! paths relative to the source tree, bounded in count and size.
//!
//! Each toolchain words its errors differently; the parsers below recognise the forms the
//! pipeline's toolchains print:
//!
//! - `path:line:col: error: message` (clang, wat2wasm, Go, our Python/JavaScript checkers);
//! - rustc's `error[E0425]: message` followed by ` --> path:line:col`;
//! - AssemblyScript's `ERROR TS2304: message` followed by a location line ending in
//!   `path:line:col` (inside parentheses or not).

use serde::{Deserialize, Serialize};

/// Most diagnostics kept.
pub const MAX_DIAGNOSTICS: usize = 50;
/// Most bytes of one rendered diagnostic.
pub const MAX_LINE_BYTES: usize = 400;
/// Most bytes of a rendered diagnostics block.
pub const MAX_RENDERED_BYTES: usize = 8 * 1024;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The compile failed because of it.
    Error,
    /// Reported, not fatal.
    Warning,
}

/// One located message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Path relative to the source tree (as the user named it).
    pub file: String,
    /// 1-based line (0 when the compiler gave none).
    pub line: u32,
    /// 1-based column (0 when the compiler gave none).
    pub column: u32,
    /// Error or warning.
    pub severity: Severity,
    /// The message, one line.
    pub message: String,
}

impl Diagnostic {
    /// `file:line:col: severity: message`, cut to [`MAX_LINE_BYTES`].
    pub fn render(&self) -> String {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut line = if self.file.is_empty() {
            format!("{severity}: {}", self.message)
        } else {
            format!(
                "{}:{}:{}: {severity}: {}",
                self.file, self.line, self.column, self.message
            )
        };
        truncate_at_char_boundary(&mut line, MAX_LINE_BYTES);
        line
    }
}

/// The diagnostics of one compile, plus the raw output's tail for when nothing parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Parsed diagnostics, errors first, at most [`MAX_DIAGNOSTICS`].
    pub items: Vec<Diagnostic>,
    /// How many parsed diagnostics were dropped by the bound.
    pub dropped: usize,
    /// The compiler's own output, trimmed, when no diagnostic could be parsed from it.
    pub unparsed: String,
}

impl Diagnostics {
    /// Parses `output` (stdout and stderr of the toolchain) with paths made relative to
    /// `work_dir`, the directory the tree was written to.
    pub fn parse(output: &str, work_dir: &str) -> Diagnostics {
        let mut items = Vec::new();
        let lines: Vec<&str> = output.lines().collect();
        let mut index = 0;
        while index < lines.len() {
            let line = strip_ansi(lines[index]);
            if let Some(diagnostic) = parse_located_line(&line, work_dir) {
                items.push(diagnostic);
            } else if let Some((severity, message)) = parse_headline(&line) {
                // rustc / asc: the location follows on one of the next few lines.
                let location = lines[index + 1..]
                    .iter()
                    .take(6)
                    .map(|l| strip_ansi(l))
                    .take_while(|l| parse_headline(l).is_none())
                    .find_map(|l| find_location(&l, work_dir));
                let (file, line, column) = location.unwrap_or_default();
                items.push(Diagnostic {
                    file,
                    line,
                    column,
                    severity,
                    message,
                });
            }
            index += 1;
        }
        // Summary lines ("aborting due to 1 previous error", "1 error generated") carry no
        // location and say nothing the located ones do not.
        items.retain(|d| !(d.file.is_empty() && is_summary(&d.message)));
        items.sort_by_key(|d| d.severity != Severity::Error);
        let dropped = items.len().saturating_sub(MAX_DIAGNOSTICS);
        items.truncate(MAX_DIAGNOSTICS);
        let unparsed = if items.is_empty() {
            tail(
                &strip_ansi(output).replace(&format!("{work_dir}/"), ""),
                4096,
            )
        } else {
            String::new()
        };
        Diagnostics {
            items,
            dropped,
            unparsed,
        }
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The first error, if any.
    pub fn first_error(&self) -> Option<&Diagnostic> {
        self.items.iter().find(|d| d.severity == Severity::Error)
    }

    /// One `file:line:col: severity: message` per line, then a note about dropped ones or the
    /// unparsed output; at most [`MAX_RENDERED_BYTES`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            out.push_str(&item.render());
            out.push('\n');
        }
        if self.dropped > 0 {
            out.push_str(&format!("... and {} more\n", self.dropped));
        }
        if !self.unparsed.is_empty() {
            out.push_str(&self.unparsed);
            if !self.unparsed.ends_with('\n') {
                out.push('\n');
            }
        }
        if out.len() > MAX_RENDERED_BYTES {
            truncate_at_char_boundary(&mut out, MAX_RENDERED_BYTES - 32);
            out.push_str("\n... (truncated)\n");
        }
        out
    }

    /// Whether there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.unparsed.is_empty()
    }
}

fn is_summary(message: &str) -> bool {
    message.starts_with("aborting due to")
        || message.ends_with("generated.")
        || message.starts_with("could not compile")
        || message.contains("previous error")
}

/// `path:line:col: [severity: ]message` or `path:line: message`.
fn parse_located_line(line: &str, work_dir: &str) -> Option<Diagnostic> {
    let line = line.trim_start();
    // The path ends at the first ":<digits>:" (paths may contain ':' only in odd cases).
    let mut search_from = 0;
    while let Some(offset) = line[search_from..].find(':') {
        let colon = search_from + offset;
        let rest = &line[colon + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(':') && colon > 0 {
            let file = &line[..colon];
            if file.contains(' ') && !file.starts_with(work_dir) {
                return None;
            }
            let line_number: u32 = rest[..digits].parse().ok()?;
            let after_line = &rest[digits + 1..];
            let column_digits = after_line.bytes().take_while(u8::is_ascii_digit).count();
            let (column, message) =
                if column_digits > 0 && after_line[column_digits..].starts_with(':') {
                    (
                        after_line[..column_digits].parse().ok()?,
                        &after_line[column_digits + 1..],
                    )
                } else {
                    (0, after_line)
                };
            let message = message.trim();
            let (severity, message) = split_severity(message)?;
            return Some(Diagnostic {
                file: relative_path(file, work_dir),
                line: line_number,
                column,
                severity,
                message: message.to_owned(),
            });
        }
        search_from = colon + 1;
    }
    None
}

/// Severity prefix of a message: `error:`, `warning:`, `fatal error:`; a message without one is
/// an error (Go, wat2wasm's plain form). Notes are not diagnostics.
fn split_severity(message: &str) -> Option<(Severity, &str)> {
    let lower = message.to_ascii_lowercase();
    for (prefix, severity) in [
        ("fatal error:", Severity::Error),
        ("error:", Severity::Error),
        ("warning:", Severity::Warning),
    ] {
        if lower.starts_with(prefix) {
            return Some((severity, message[prefix.len()..].trim()));
        }
    }
    if lower.starts_with("note:") || lower.starts_with("in file included") || message.is_empty() {
        return None;
    }
    Some((Severity::Error, message))
}

/// A location-less headline: rustc's `error[E0425]: …` / `warning: …`, asc's `ERROR TS2304: …`.
fn parse_headline(line: &str) -> Option<(Severity, String)> {
    let (severity, rest) = if let Some(rest) = line.strip_prefix("error") {
        (Severity::Error, rest)
    } else if let Some(rest) = line.strip_prefix("warning") {
        (Severity::Warning, rest)
    } else if let Some(rest) = line.strip_prefix("ERROR") {
        (Severity::Error, rest)
    } else if let Some(rest) = line.strip_prefix("WARNING") {
        (Severity::Warning, rest)
    } else {
        return None;
    };
    // `[E0425]: msg`, `: msg`, ` TS2304: msg`, ` AS100: msg`.
    let rest = rest.trim_start();
    let (code, message) = rest.split_once(':')?;
    let code = code.trim();
    let code_is_plausible = code.is_empty()
        || (code.starts_with('[') && code.ends_with(']'))
        || code.chars().all(|c| c.is_ascii_alphanumeric());
    if !code_is_plausible {
        return None;
    }
    let message = message.trim();
    if message.is_empty() {
        return None;
    }
    let code = code.trim_matches(|c| c == '[' || c == ']');
    Some((
        severity,
        if code.is_empty() {
            message.to_owned()
        } else {
            format!("{message} [{code}]")
        },
    ))
}

/// The last `path:line:col` on a location line (` --> src/main.rs:3:5`, `in main.ts(3,5)`,
/// `   :\n   │ ~~~\n   └─ in main.ts:3:5`).
fn find_location(line: &str, work_dir: &str) -> Option<(String, u32, u32)> {
    let trimmed = line
        .trim()
        .trim_start_matches("-->")
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '.')
        .trim_start_matches("in ")
        .trim();
    // `main.ts(3,10)`: AssemblyScript's form.
    if let Some(inner) = trimmed.strip_suffix(')') {
        let (file, position) = inner.rsplit_once('(')?;
        let (line_number, column) = position.split_once(',')?;
        if file.is_empty() || file.contains(' ') {
            return None;
        }
        return Some((
            relative_path(file, work_dir),
            line_number.trim().parse().ok()?,
            column.trim().parse().ok()?,
        ));
    }
    let mut parts = trimmed.rsplitn(3, ':');
    let column: u32 = parts.next()?.trim().parse().ok()?;
    let line_number: u32 = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.trim().trim_start_matches('(');
    if file.is_empty() || file.contains(' ') {
        return None;
    }
    Some((relative_path(file, work_dir), line_number, column))
}

fn relative_path(file: &str, work_dir: &str) -> String {
    let file = file.trim();
    let relative = file
        .strip_prefix(work_dir)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or(file);
    relative.trim_start_matches("./").to_owned()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub(crate) fn truncate_at_char_boundary(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORK: &str = "/tmp/wasmfn-build-x/src";

    fn parse(output: &str) -> Diagnostics {
        Diagnostics::parse(output, WORK)
    }

    fn one(output: &str) -> Diagnostic {
        let diagnostics = parse(output);
        assert_eq!(diagnostics.items.len(), 1, "{diagnostics:#?}");
        diagnostics.items[0].clone()
    }

    #[test]
    fn clang_errors_with_notes_and_caret_lines() {
        let output = "/tmp/wasmfn-build-x/src/main.c:3:12: error: use of undeclared identifier 'x'\n    3 |     return x;\n      |            ^\n1 error generated.\n";
        let d = one(output);
        assert_eq!(
            (d.file.as_str(), d.line, d.column, d.severity),
            ("main.c", 3, 12, Severity::Error)
        );
        assert_eq!(d.message, "use of undeclared identifier 'x'");
        assert_eq!(
            d.render(),
            "main.c:3:12: error: use of undeclared identifier 'x'"
        );
    }

    #[test]
    fn clang_warnings_come_after_errors_and_notes_are_dropped() {
        let output = "main.c:1:5: warning: unused variable 'y'\nmain.c:2:1: note: declared here\nmain.c:4:9: error: expected ';'\n";
        let diagnostics = parse(output);
        let rendered: Vec<String> = diagnostics.items.iter().map(Diagnostic::render).collect();
        assert_eq!(
            rendered,
            [
                "main.c:4:9: error: expected ';'",
                "main.c:1:5: warning: unused variable 'y'"
            ]
        );
        assert!(diagnostics.has_errors());
        assert_eq!(
            diagnostics.first_error().map(|d| d.line),
            Some(4),
            "first error"
        );
    }

    #[test]
    fn rustc_headline_and_arrow_location() {
        let output = "error[E0425]: cannot find value `x` in this scope\n --> /tmp/wasmfn-build-x/src/main.rs:4:20\n  |\n4 |     println!(\"{}\", x);\n  |                    ^ not found in this scope\n\nerror: aborting due to 1 previous error\n\nFor more information about this error, try `rustc --explain E0425`.\n";
        let d = one(output);
        assert_eq!((d.file.as_str(), d.line, d.column), ("main.rs", 4, 20));
        assert_eq!(d.message, "cannot find value `x` in this scope [E0425]");
    }

    #[test]
    fn rustc_warning_without_code() {
        let output = "warning: unused variable: `a`\n --> src/main.rs:2:9\n";
        let d = one(output);
        assert_eq!(d.render(), "src/main.rs:2:9: warning: unused variable: `a`");
    }

    #[test]
    fn cargo_error_lines_keep_their_location() {
        let output = "   Compiling hello v0.1.0 (/tmp/wasmfn-build-x/src)\nerror: expected one of `!` or `::`, found `x`\n --> src/main.rs:7:5\n  |\n7 | bad x\n  |     ^ expected one of `!` or `::`\n\nerror: could not compile `hello` (bin \"hello\") due to 1 previous error\n";
        let d = one(output);
        assert_eq!((d.file.as_str(), d.line, d.column), ("src/main.rs", 7, 5));
    }

    #[test]
    fn go_errors_without_severity_word() {
        let output = "# wasmfn/function\n./main.go:6:2: undefined: fmt.Printn\n./main.go:9:1: syntax error: unexpected }\n";
        let diagnostics = parse(output);
        let rendered: Vec<String> = diagnostics.items.iter().map(Diagnostic::render).collect();
        assert_eq!(
            rendered,
            [
                "main.go:6:2: error: undefined: fmt.Printn",
                "main.go:9:1: error: syntax error: unexpected }"
            ]
        );
    }

    #[test]
    fn wat2wasm_errors() {
        let output = "/tmp/wasmfn-build-x/src/main.wat:3:6: error: unexpected token \"i32.bogus\", expected an instr.\n  (i32.bogus)\n   ^^^^^^^^^\n";
        let d = one(output);
        assert_eq!((d.file.as_str(), d.line, d.column), ("main.wat", 3, 6));
    }

    #[test]
    fn assemblyscript_errors_with_boxed_location() {
        let output = "ERROR TS2304: Cannot find name 'undefinedThing'.\n    :\n  3 │   return undefinedThing;\n    │          ~~~~~~~~~~~~~~\n    └─ in main.ts(3,10)\n\nFAILURE 1 parse error(s)\n";
        let d = one(output);
        assert_eq!((d.file.as_str(), d.line, d.column), ("main.ts", 3, 10));
        assert_eq!(d.message, "Cannot find name 'undefinedThing'. [TS2304]");
        assert_eq!(d.severity, Severity::Error);
        let colon_form =
            "ERROR TS2304: Cannot find name 'x'.\n    :\n  3 │   x;\n    └─ in main.ts:3:3\n";
        let d = one(colon_form);
        assert_eq!((d.file.as_str(), d.line, d.column), ("main.ts", 3, 3));
    }

    #[test]
    fn checker_lines_for_scripts() {
        let d = one("main.py:2:10: error: SyntaxError: invalid syntax\n");
        assert_eq!((d.file.as_str(), d.line, d.column), ("main.py", 2, 10));
        assert_eq!(d.message, "SyntaxError: invalid syntax");
    }

    #[test]
    fn headlines_without_location_render_without_one() {
        let d =
            one("error: no matching package named `x` found\nlocation searched: crates.io index\n");
        assert_eq!(d.render(), "error: no matching package named `x` found");
    }

    #[test]
    fn line_without_column() {
        let d = one("main.js:7: error: SyntaxError: unexpected token\n");
        assert_eq!((d.line, d.column), (7, 0));
    }

    #[test]
    fn ansi_colours_are_removed() {
        let d = one("\u{1b}[1mmain.c:1:1: \u{1b}[31merror: \u{1b}[0mboom\n");
        assert_eq!(d.render(), "main.c:1:1: error: boom");
    }

    #[test]
    fn unparsable_output_is_kept_as_a_bounded_tail() {
        let output = format!(
            "{}\nsegmentation fault in /tmp/wasmfn-build-x/src/x\n",
            "x".repeat(10_000)
        );
        let diagnostics = parse(&output);
        assert!(diagnostics.items.is_empty());
        assert!(diagnostics.unparsed.len() <= 4096 + 3);
        assert!(diagnostics.unparsed.ends_with("segmentation fault in x"));
        assert!(!diagnostics.is_empty());
    }

    #[test]
    fn diagnostics_are_bounded_in_count_and_bytes() {
        let mut output = String::new();
        for i in 0..200 {
            output.push_str(&format!("main.c:{i}:1: error: {}\n", "y".repeat(1000)));
        }
        let diagnostics = parse(&output);
        assert_eq!(diagnostics.items.len(), MAX_DIAGNOSTICS);
        assert_eq!(diagnostics.dropped, 150);
        let rendered = diagnostics.render();
        assert!(rendered.len() <= MAX_RENDERED_BYTES);
        assert!(rendered.lines().all(|l| l.len() <= MAX_LINE_BYTES));
        assert!(rendered.ends_with("(truncated)\n"));
    }

    #[test]
    fn summary_lines_and_noise_are_ignored() {
        let diagnostics =
            parse("1 error generated.\nerror: aborting due to 2 previous errors\nFinished.\n");
        assert!(diagnostics.items.is_empty());
        let diagnostics = parse("Compiling foo: bar baz\nnote: something\n");
        assert!(diagnostics.items.is_empty());
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let mut text = "ééé".to_owned();
        truncate_at_char_boundary(&mut text, 3);
        assert_eq!(text, "é");
    }
}
