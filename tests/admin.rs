//! The relay's admin protection over real sockets: without a token, changing
//! calls a web page of another origin could send are refused; with one, only
//! `Authorization: Bearer TOKEN` passes (any case of the scheme); the node cap;
//! the token from `--admin-token-file` or `BOOKRELAY_ADMIN_TOKEN`.

mod common;

use bookrelay::relay::control::MAX_NODES;
use bookrelay::temp_dir::TempDir;
use common::{admin, Client, Reply, TestRelay};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

fn node_count(relay: &TestRelay) -> usize {
    relay.node_names().len()
}

/// `POST /_relay/nodes` with exactly these headers and body.
fn add_node(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> Reply {
    Client::connect(addr).request("POST", "/_relay/nodes", headers, body.as_bytes())
}

#[test]
fn without_a_token_calls_a_page_of_another_origin_could_send_are_refused() {
    let relay = TestRelay::start(1, 0, "round-robin", |_| {});
    let addr = relay.addr;
    // The review's call: a "simple" cross-site request needs no preflight.
    let evil = add_node(
        addr,
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        "",
    );
    assert_eq!(evil.status, 403, "{}", evil.text());
    assert!(evil.error().contains("Origin"), "{}", evil.error());
    let refused: [(&[(&str, &str)], &str); 5] = [
        (&[("Origin", "null")], ""),
        (&[("Origin", "http://localhost:1")], ""),
        (&[("Sec-Fetch-Site", "cross-site")], ""),
        (&[("Sec-Fetch-Site", "same-site")], ""),
        // A cross-site form or fetch can send text/plain without a preflight.
        (&[("Content-Type", "text/plain")], "{}"),
    ];
    for (headers, body) in refused {
        let reply = add_node(addr, headers, body);
        assert_eq!(reply.status, 403, "{headers:?}: {}", reply.text());
        assert!(!reply.error().is_empty());
    }
    let no_type = Client::connect(addr).request("POST", "/_relay/nodes", &[], b"{}");
    assert_eq!(no_type.status, 403);
    assert!(no_type.error().contains("application/json"));
    assert_eq!(node_count(&relay), 1, "no refused call added a node");

    // DNS rebinding: the page's own name resolves to 127.0.0.1.
    let mut client = Client::connect(addr);
    client.send(
        b"POST /_relay/nodes HTTP/1.1\r\nHost: evil.example:8080\r\nOrigin: http://evil.example:8080\r\nContent-Length: 0\r\n\r\n",
    );
    let rebound = client.read_reply(false).expect("answer");
    assert_eq!(rebound.status, 403);
    assert!(rebound.error().contains("loopback"), "{}", rebound.error());
    assert_eq!(node_count(&relay), 1);

    // The dashboard's own calls: same-origin fetches, JSON bodies.
    let origin = format!("http://{addr}");
    let json = [
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Content-Type", "application/json"),
    ];
    let added = add_node(addr, &json, "{}");
    assert_eq!(added.status, 201, "{}", added.text());
    let name = added.str_field("name");
    let localhost = format!("http://localhost:{}", addr.port());
    let kill = Client::connect(addr).request(
        "POST",
        &format!("/_relay/nodes/{name}/kill"),
        &[("Origin", localhost.as_str())],
        b"",
    );
    assert_eq!(kill.status, 200, "{}", kill.text());
    let switched = Client::connect(addr).request(
        "PUT",
        "/_relay/balancer",
        &json,
        br#"{"balancer":"random"}"#,
    );
    assert_eq!(switched.status, 200, "{}", switched.text());
    let removed = Client::connect(addr).request(
        "DELETE",
        &format!("/_relay/nodes/{name}"),
        &[("Origin", origin.as_str())],
        b"",
    );
    assert_eq!(removed.status, 204, "{}", removed.text());
    // curl: no Origin at all.
    assert_eq!(admin(addr, "POST", "/_relay/nodes", "").status, 201);
    assert_eq!(node_count(&relay), 2);
}

#[test]
fn the_bearer_scheme_is_any_case_and_a_wrong_token_of_any_length_is_refused() {
    let relay = TestRelay::start(1, 0, "round-robin", |c| {
        c.admin_token = Some("s3cret".into())
    });
    for wrong in [
        "Bearer s3cre",
        "Bearer s3cret-and-more",
        "Bearer S3CRET",
        "s3cret",
    ] {
        let reply = add_node(relay.addr, &[("Authorization", wrong)], "");
        assert_eq!(reply.status, 403, "{wrong}");
        assert!(reply.error().contains("Authorization: Bearer"));
    }
    for right in ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
        let reply = add_node(relay.addr, &[("Authorization", right)], "");
        assert_eq!(reply.status, 201, "{right}: {}", reply.text());
    }
    assert_eq!(node_count(&relay), 4);
}

#[test]
fn no_node_is_added_beyond_the_cap() {
    let relay = TestRelay::start(MAX_NODES - 1, 0, "round-robin", |c| {
        c.health_interval = Duration::from_secs(1)
    });
    let last = admin(relay.addr, "POST", "/_relay/nodes", "");
    assert_eq!(last.status, 201, "{}", last.text());
    let beyond = admin(relay.addr, "POST", "/_relay/nodes", "");
    assert_eq!(beyond.status, 409, "{}", beyond.text());
    assert!(
        beyond.error().contains(&MAX_NODES.to_string()),
        "{}",
        beyond.error()
    );
    assert_eq!(node_count(&relay), MAX_NODES);
}

/// A `bookrelay` relay process; killed when dropped.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
}

impl RelayProcess {
    fn start(db: &std::path::Path, args: &[&str], env: Option<&str>) -> RelayProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bookrelay"));
        command
            .args(["--listen", "127.0.0.1:0", "--nodes", "1", "--seed", "0"])
            .arg("--db")
            .arg(db)
            .args(args)
            .env_remove("BOOKRELAY_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(token) = env {
            command.env("BOOKRELAY_ADMIN_TOKEN", token);
        }
        let mut child = command.spawn().expect("spawn bookrelay");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("relay printed its address")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("relay listening on ") {
                let addr = rest.split_whitespace().next().expect("address");
                break addr.parse().expect("address");
            }
        };
        thread::spawn(move || for _ in lines {});
        RelayProcess { child, addr }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_admin_token_comes_from_a_file_or_the_environment() {
    let dir = TempDir::new("token");
    let db = dir.path().join("bookings.db");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bookrelay"))
            .args(args)
            .env_remove("BOOKRELAY_ADMIN_TOKEN")
            .output()
            .expect("run bookrelay")
    };
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let missing = dir.path().join("missing");
    for file in [&empty, &missing] {
        let output = run(&["--admin-token-file", file.to_str().expect("utf8 path")]);
        assert_eq!(output.status.code(), Some(2), "{}", file.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--admin-token-file"), "{stderr}");
        assert_eq!(
            stderr.lines().count(),
            2,
            "one sentence and the usage hint: {stderr}"
        );
    }
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    assert!(help.contains("--admin-token-file PATH"), "{help}");
    assert!(help.contains("BOOKRELAY_ADMIN_TOKEN"), "{help}");

    let file = dir.path().join("token");
    std::fs::write(&file, "fr0m-file\n").expect("write");
    let relay = RelayProcess::start(
        &db,
        &["--admin-token-file", file.to_str().expect("utf8 path")],
        Some("ignored-when-a-file-is-given"),
    );
    assert_eq!(admin(relay.addr, "POST", "/_relay/nodes", "").status, 403);
    let added = add_node(relay.addr, &[("Authorization", "bearer fr0m-file")], "");
    assert_eq!(added.status, 201, "{}", added.text());
    drop(relay);

    let relay = RelayProcess::start(&db, &[], Some("fr0m-env"));
    let refused = admin(relay.addr, "POST", "/_relay/nodes", "");
    assert_eq!(
        refused.status,
        403,
        "a token is in force: {}",
        refused.text()
    );
    let added = add_node(relay.addr, &[("Authorization", "Bearer fr0m-env")], "");
    assert_eq!(added.status, 201, "{}", added.text());
}
