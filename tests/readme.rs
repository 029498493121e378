//! The README's curl commands, run against the reference gateway so they
//! cannot rot.
//!
//! The block between `<!-- readme-curl:start` and `<!-- readme-curl:end -->`
//! is read as it stands: `NAME=$(cargo run -q --example reference_gateway --
//! token USER)` lines become environment variables (minted with the same
//! function the binary uses), and every `curl` command is run by `bash`
//! against the gateway started in-process, with `localhost:8080` pointed at
//! it (and `localhost:9464` at its metrics listener). The comment above each command states what it must answer: the
//! status, and optionally the rejection code or a header.

#[path = "../examples/gateway/mod.rs"]
mod gateway;
mod support;

use std::process::Command;
use std::time::Duration;

const SECRET: &[u8] = b"a-readme-test-secret-of-at-least-32-bytes";

struct Example {
    expect: String,
    command: String,
}

fn parse_block(readme: &str) -> (Vec<(String, String)>, Vec<Example>) {
    let start = readme
        .find("<!-- readme-curl:start")
        .expect("README has the curl block");
    let end = readme
        .find("<!-- readme-curl:end -->")
        .expect("the curl block ends");
    let block = &readme[start..end];
    let mut tokens = Vec::new();
    let mut examples = Vec::new();
    let mut expect: Option<String> = None;
    let mut lines = block.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some((name, rest)) =
            line.split_once("=$(cargo run -q --example reference_gateway -- token ")
        {
            let user = rest.strip_suffix(')').expect("token line ends with )");
            tokens.push((name.to_owned(), user.to_owned()));
        } else if let Some(comment) = line.strip_prefix("# ") {
            expect = Some(comment.to_owned());
        } else if line.starts_with("curl ") {
            let mut command = line.to_owned();
            while command.ends_with('\\') {
                command.pop();
                command.push(' ');
                command.push_str(lines.next().expect("continued line").trim());
            }
            examples.push(Example {
                expect: expect
                    .take()
                    .unwrap_or_else(|| panic!("no expectation above {command}")),
                command,
            });
        }
    }
    (tokens, examples)
}

#[tokio::test]
async fn every_readme_curl_command_answers_as_documented() {
    if Command::new("curl").arg("--version").output().is_err() {
        // Straight to stderr: libtest captures `eprintln!`.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "every_readme_curl_command_answers_as_documented: skipped: curl not found on PATH"
        );
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (tokens, examples) = parse_block(&readme);
    assert!(
        tokens.len() >= 2 && examples.len() >= 9,
        "the block lost its examples"
    );

    // The token lines as the README has them, through the built example.
    let minted: Vec<(String, String)> = tokens
        .iter()
        .map(|(name, user)| {
            let out = Command::new(support::example_binary("reference_gateway"))
                .args(["token", user])
                .env("FINMESH_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "token {user}: {out:?}");
            let token = String::from_utf8(out.stdout).unwrap();
            (name.clone(), token.trim_end().to_owned())
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let gw = gateway::build(&gateway::Options {
        config_dir: None,
        message_timeout: Duration::from_secs(2),
        audit_log: dir.path().join("audit.log"),
        audit_policy: None,
        audit_postgres: None,
        jwt_secret: SECRET.to_vec(),
        redis_url: None,
        otlp_endpoint: None,
        trust_domain: "finmesh.demo".into(),
    })
    .unwrap();
    let server = support::spawn(gw.app.clone()).await;
    let metrics = support::spawn(gw.metrics.clone()).await;
    let base = format!("{}", server.addr);
    let metrics_base = format!("{}", metrics.addr);

    for example in &examples {
        let command = example
            .command
            .replace("localhost:8080", &base)
            .replace("localhost:9464", &metrics_base);
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(format!("{command} -w '\\n%{{http_code}}'"));
        for (name, token) in &minted {
            bash.env(name, token);
        }
        let output = tokio::task::spawn_blocking(move || bash.output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success(), "{}: {:?}", example.command, output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let mut expect = example.expect.split_whitespace();
        let want_status = expect.next().unwrap().trim_end_matches(':');
        assert_eq!(status, want_status, "{}\n{}", example.expect, body);
        if let Some(code) = expect
            .next()
            .map(|w| w.trim_end_matches(':'))
            .filter(|w| w.contains('.'))
        {
            assert!(
                body.contains(&format!("\"code\":\"{code}\"")),
                "{}\n{body}",
                example.expect
            );
        }
        if example.expect.contains("idempotency-replayed: true") {
            assert!(
                body.to_ascii_lowercase()
                    .contains("idempotency-replayed: true"),
                "{body}"
            );
        }
    }
}
