//! Every example of README.md that is marked as tested runs, in README order, against one
//! `millwatch serve` on its defaults (the simulator, the SQLite store `millwatch.db` in a
//! fresh temporary directory; only the port is 0 instead of 8080), and its output must match
//! what the README shows. So the README cannot drift from what the program does.
//!
//! How blocks are marked:
//! - A fenced block whose info string is exactly `console` is tested. In it, a line starting
//!   with `$ ` is a command, run with `sh -c` in the repository's root, with the built
//!   `millwatch` first on the PATH and `localhost:8080` (or `127.0.0.1:8080`) replaced by the
//!   test server's address; the lines after it, up to the next `$ ` line, are its expected
//!   stdout (write `2>&1` in the command to show stderr too).
//! - Any other block (`sh`, `text`, `toml`, `console-untested`, …) is not run: use those for
//!   commands that need something the test does not have (a broker, a token, a second
//!   terminal).
//!
//! What is compared (the "stable parts"): line by line, after trailing blanks are dropped;
//! times with a fraction of a second (the server's clock: `since`, log lines) count as equal
//! to any such time; an expected line may hold `…`, which matches any text; and for
//! `curl -i`, the header lines between the status line and the body are skipped (the README
//! shows the status line and the body only).

use std::process::Command;

use crate::serve_bin::{Served, bin, repo};

/// One command and the output the README shows for it.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The tested examples of a Markdown text, in order.
fn examples(markdown: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        if fence && !in_console && !in_other {
            let info = line.trim_start().trim_start_matches('`').trim();
            in_console = info == "console";
            in_other = !in_console;
            continue;
        }
        if fence {
            in_console = false;
            in_other = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Example {
                line: i + 1,
                command: cmd.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(last) = out.last_mut() {
            last.expected.push(line.to_owned());
        } else {
            panic!("README.md line {}: output before any command", i + 1);
        }
    }
    out
}

/// Masks times with a fraction of a second (`2026-12-02T06:42:30.376495410Z`) as `<time>`.
fn mask_times(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let is_time = b.len() >= i + 21
            && b[i..i + 4].iter().all(u8::is_ascii_digit)
            && b[i + 4] == b'-'
            && b[i + 10] == b'T'
            && b[i + 19] == b'.'
            && b[i + 20].is_ascii_digit();
        if is_time {
            let mut j = i + 20;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && b[j] == b'Z' {
                out.push_str("<time>");
                i = j + 1;
                continue;
            }
        }
        let c = s[i..].chars().next().unwrap_or('?');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The output as compared: times masked, trailing blanks and lines trimmed, and in what a
/// command printed (`headers`), `curl -i`'s header lines dropped.
fn stable(lines: &[String], headers: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_headers = false;
    for (n, l) in lines.iter().enumerate() {
        if headers && n == 0 && l.starts_with("HTTP/") {
            in_headers = true;
            out.push(l.trim_end().to_owned());
            continue;
        }
        if in_headers {
            if l.trim().is_empty() {
                in_headers = false;
            }
            continue;
        }
        out.push(mask_times(l.trim_end()));
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// Whether `actual` matches `expected`, where `…` in `expected` matches any text.
fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_harness_compares_what_it_says() {
    assert!(matches("a…c", "abbbc") && !matches("a…c", "abbb") && matches("x", "x"));
    assert!(matches("{\"since\":…}", "{\"since\":\"now\"}"));
    assert_eq!(
        mask_times(r#"{"since":"2026-12-02T06:42:30.376495410Z","t":"2024-10-27T12:00:00Z"}"#),
        r#"{"since":"<time>","t":"2024-10-27T12:00:00Z"}"#
    );
    let lines: Vec<String> = ["HTTP/1.1 409 Conflict", "content-type: x", "", "{}", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(stable(&lines, true), ["HTTP/1.1 409 Conflict", "{}"]);
    let shown: Vec<String> = ["HTTP/1.1 409 Conflict", "{}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(stable(&shown, false), shown);
    let ex = examples("```console\n$ a\nx\n$ b\n```\n```sh\n$ c\n```\n");
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].expected, ["x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_runs_as_shown() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let examples = examples(&readme);
    assert!(
        examples.len() >= 10,
        "only {} tested examples",
        examples.len()
    );
    // The server on its defaults; no flags but the port.
    let served = Served::start(&[]);
    let addr = served.base.trim_start_matches("http://").to_owned();
    let bin_dir = bin().parent().expect("the binary's directory").to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for ex in &examples {
        let command = ex
            .command
            .replace("localhost:8080", &addr)
            .replace("127.0.0.1:8080", &addr);
        let out = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                Command::new("sh")
                    .args(["-c", &command])
                    .current_dir(repo())
                    .env("PATH", path)
                    .env_remove("MILLWATCH_LOG")
                    .output()
                    .expect("sh runs")
            }
        })
        .await
        .unwrap();
        let actual: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let (want, got) = (stable(&ex.expected, false), stable(&actual, true));
        let same = want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| matches(w, g));
        if !same {
            failures.push(format!(
                "README.md line {}: $ {}\n--- shown:\n{}\n--- got:\n{}\n--- stderr:\n{}",
                ex.line,
                ex.command,
                want.join("\n"),
                got.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
