//! Printing end to end: the real `stampline server`, the real `stampline` client, and a
//! real IPP Everywhere printer (`ippeveprinter` from cups-ipp-utils) or a raw-port listener run
//! by the test. Without ippeveprinter (or the avahi/D-Bus it needs) these tests print
//! `skipped: …` — unless STAMPLINE_REQUIRE_ALL=1, when that is a failure.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{BIN, Cli, PASSWORD, last_json, s, spawn_listening};
/// How long a printer may take to come up.
const PRINTER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// The slow printer's simulated print time.
const SLOW_PRINT_S: u32 = 6;

fn require_all() -> bool {
    std::env::var("STAMPLINE_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Reports a missing outside component: a skip, or a failure under STAMPLINE_REQUIRE_ALL=1.
fn unavailable(what: &str, why: &str) {
    assert!(
        !require_all(),
        "{what} not available ({why}) and STAMPLINE_REQUIRE_ALL=1"
    );
    eprintln!("skipped: {what} not available ({why})");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A real IPP Everywhere printer on localhost, keeping every document in its spool directory.
struct IppEve {
    child: Child,
    port: u16,
    spool: tempfile::TempDir,
    scripts: tempfile::TempDir,
}

impl Drop for IppEve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl IppEve {
    /// `command`: a shell script body run per job (`-c`), e.g. to make a slow or failing printer.
    fn start(name: &str, command: Option<&str>) -> Option<IppEve> {
        IppEve::start_with(
            name,
            command,
            "application/pdf,image/png,application/octet-stream",
        )
    }

    /// `formats`: the document formats the printer takes.
    fn start_with(name: &str, command: Option<&str>, formats: &str) -> Option<IppEve> {
        let Some(program) = find_program("ippeveprinter") else {
            unavailable("ippeveprinter", "install cups-ipp-utils");
            return None;
        };
        let spool = tempfile::tempdir().unwrap();
        let scripts = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(program);
        // -K: where it creates its self-signed TLS certificate (for ipps://).
        cmd.args(["-n", "localhost", "-p", &port.to_string(), "-k", "-d"])
            .arg(spool.path())
            .arg("-K")
            .arg(scripts.path())
            .args(["-f", formats]);
        if let Some(body) = command {
            let script = scripts.path().join("job.sh");
            std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            cmd.arg("-c").arg(&script);
        }
        let mut child = cmd
            .arg(format!("{name}-{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                unavailable(
                    "ippeveprinter",
                    &format!(
                        "it exited with {status}; it needs dbus-daemon and avahi-daemon running"
                    ),
                );
                return None;
            }
            if std::net::TcpStream::connect(("localhost", port)).is_ok() {
                break;
            }
            if started.elapsed() > PRINTER_START_TIMEOUT {
                let _ = child.kill();
                unavailable("ippeveprinter", "it did not listen in time");
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(IppEve {
            child,
            port,
            spool,
            scripts,
        })
    }

    fn uri(&self) -> String {
        format!("ipp://localhost:{}/ipp/print", self.port)
    }

    /// One attribute of a job as the printer reports it (Get-Job-Attributes with ipptool, which
    /// ships with ippeveprinter): the text after `=`.
    fn job_attribute(&self, job_id: i64, name: &str) -> Option<String> {
        let test = self.scripts.path().join("get-job.test");
        std::fs::write(
            &test,
            format!(
                "{{\n OPERATION Get-Job-Attributes\n GROUP operation-attributes-tag\n \
                 ATTR charset attributes-charset utf-8\n \
                 ATTR naturalLanguage attributes-natural-language en\n \
                 ATTR uri printer-uri $uri\n ATTR integer job-id {job_id}\n \
                 STATUS successful-ok\n DISPLAY {name}\n}}\n"
            ),
        )
        .unwrap();
        let out = Command::new(find_program("ipptool")?)
            .arg("-tv")
            .arg(self.uri())
            .arg(&test)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} (")))
            .and_then(|l| l.split_once(" = "))
            .map(|(_, v)| v.trim().to_owned())
    }

    /// The documents the printer received (the `-c` command's output files excluded).
    fn documents(&self) -> Vec<PathBuf> {
        let mut docs: Vec<PathBuf> = std::fs::read_dir(self.spool.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|e| e != "prn"))
            .collect();
        docs.sort();
        docs
    }
}

/// The real server, restartable on the same data directory; its log goes to a file.
struct Server {
    child: Option<Child>,
    url: String,
    trust: PathBuf,
    data: PathBuf,
    log: PathBuf,
    confirm_window_ms: u64,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    fn start(confirm_window_ms: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server {
            child: None,
            url: String::new(),
            trust: PathBuf::new(),
            data: dir.path().join("data"),
            log: dir.path().join("server.log"),
            confirm_window_ms,
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let started = spawn_listening(
            common::server_command(&self.data)
                .args(["--confirm-window-ms", &self.confirm_window_ms.to_string()])
                .args(["--beat-interval-ms", "500", "--beat-timeout-ms", "2000"])
                .stderr(log),
        )
        .unwrap_or_else(|printed| panic!("server did not start: {printed}"));
        self.url = started.url;
        self.trust = started.trust;
        self.child = Some(started.child);
    }

    /// SIGKILL: the link ends without a word, as when a server crashes.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--json")
            .args(args)
            .env("STAMPLINE_SERVER", &self.url)
            .env("STAMPLINE_TRUST", &self.trust)
            .env("STAMPLINE_USER", user)
            .env("STAMPLINE_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        cmd
    }

    /// A registered user with $20.
    fn funded_user(&self, user: &str) {
        self.ok(user, &common::REGISTER);
        self.ok(user, &common::fund_card("20"));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Cli for Server {
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value) {
        last_json(&self.command(user, args).output().unwrap())
    }
}

fn buy_args<'a>(printer: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = common::buy_letter(&["--printer", printer]);
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_buy_to_an_ipp_printer_prints_exactly_one_document_and_confirms_printed() {
    let Some(printer) = IppEve::start("stampline-ok", None) else {
        return;
    };
    let server = Server::start(60_000);
    server.funded_user("ann");
    let uri = printer.uri();
    // Run the buy in an empty directory with its own empty TMPDIR: no spool or temporary file may
    // be left behind by an IPP job.
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = server
        .command("ann", &buy_args(&uri, &["--format", "png"]))
        .current_dir(cwd.path())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let (ok, v) = last_json(&out);
    assert!(ok, "{v}");
    for dir in [cwd.path(), tmp.path()] {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "files left in {}: {left:?}", dir.display());
    }
    assert_eq!(v["status"], "printed", "{v}");
    assert_eq!(v["jobs"][0]["state"], "completed", "{v}");
    assert_eq!(v["balance_mills"], 19_220);
    let serial = v["serial"].as_str().unwrap();
    assert_eq!(server.status_of("ann", serial), "printed");

    let docs = printer.documents();
    assert_eq!(
        docs.len(),
        1,
        "the printer holds exactly one document: {docs:?}"
    );
    // What the printer got is the real, signed item.
    let verdict = server.ok("ann", &["verify", s(&docs[0])]);
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["serial"], serial);
}

#[test]
fn a_ticket_to_an_ipp_printer_prints_one_document_that_verifies() {
    let Some(printer) = IppEve::start("stampline-tickets", None) else {
        return;
    };
    let server = Server::start(60_000);
    server.funded_user("ann");
    let uri = printer.uri();
    let v = server.ok(
        "ann",
        &[
            "issue",
            "ticket",
            "--event",
            "Spring Concert",
            "--venue",
            "Town Hall",
            "--seat",
            "Row F Seat 12",
            "--price",
            "4.50",
            "--printer",
            &uri,
        ],
    );
    assert_eq!(v["status"], "printed", "{v}");
    assert_eq!(v["kind"], "ticket");
    assert_eq!(v["jobs"][0]["state"], "completed", "{v}");
    assert_eq!(v["balance_mills"], 20_000 - 4_500);
    let docs = printer.documents();
    assert_eq!(docs.len(), 1, "exactly one document: {docs:?}");
    let verdict = server.ok("ann", &["verify", s(&docs[0])]);
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["kind"], "ticket");
    assert_eq!(verdict["serial"], v["serial"]);
}

#[test]
fn an_operators_kick_mid_print_cancels_the_job_and_the_item_is_voided() {
    let Some(printer) = IppEve::start("stampline-kicked", Some(&format!("sleep {SLOW_PRINT_S}")))
    else {
        return;
    };
    let server = Server::start(1_500);
    server.funded_user("cal");
    common::create_admin(&server.data, "root");
    let before = server.balance_mills("cal");
    let uri = printer.uri();
    let buyer = server
        .command("cal", &buy_args(&uri, &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while printer.documents().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the printer never got the document"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The operator ends the buyer's link while the printer is still printing.
    let kicked = server.ok("root", &["admin", "kick", "cal"]);
    assert_eq!(kicked["ended"].as_array().unwrap().len(), 1, "{kicked}");
    let out = buyer.wait_with_output().unwrap();
    let (ok, v) = last_json(&out);
    assert!(!ok, "a kicked buy must fail: {v}");
    assert_eq!(v["error"], "link_lost", "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("kicked"), "the client says why: {message}");
    assert!(
        message.contains("canceled") || message.contains("aborted"),
        "the job must end cancelled or aborted on the printer: {message}"
    );
    let state = printer.job_attribute(1, "job-state").unwrap_or_default();
    assert!(
        state == "canceled" || state == "aborted",
        "job state on the printer: {state:?}"
    );
    // The link ended, so the confirmation window runs out and the item is voided.
    let serial = server.history("cal", 10)[0].serial.clone();
    let started = Instant::now();
    while server.status_of("cal", &serial) != "voided" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "item was not voided after the window"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        server.balance_mills("cal"),
        before,
        "the balance is whole again"
    );
}

#[test]
fn losing_the_link_mid_print_cancels_the_job_and_the_item_is_voided_after_restart() {
    let Some(printer) = IppEve::start("stampline-slow", Some(&format!("sleep {SLOW_PRINT_S}")))
    else {
        return;
    };
    let mut server = Server::start(1_500);
    server.funded_user("bob");
    let before = server.balance_mills("bob");
    let uri = printer.uri();
    let buyer = server
        .command("bob", &buy_args(&uri, &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The document reached the printer: the job was created and is printing. Kill the server.
    let started = Instant::now();
    while printer.documents().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the printer never got the document"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();

    let out = buyer.wait_with_output().unwrap();
    let (ok, v) = last_json(&out);
    assert!(!ok, "buy must fail when the link breaks mid-print: {v}");
    assert_eq!(v["error"], "link_lost", "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("canceled") || message.contains("aborted"),
        "the job must end cancelled or aborted on the printer: {message}"
    );
    assert!(message.contains("voided and refunded"), "{message}");
    // The printer agrees: its only job (id 1) ended cancelled or aborted.
    let state = printer.job_attribute(1, "job-state").unwrap_or_default();
    assert!(
        state == "canceled" || state == "aborted",
        "job state on the printer: {state:?}"
    );

    // After a restart the unconfirmed item is voided when the confirmation window ends.
    server.spawn();
    let serial = server.history("bob", 10)[0].serial.clone();
    let started = Instant::now();
    while server.status_of("bob", &serial) != "voided" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "item was not voided after the window"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        server.balance_mills("bob"),
        before,
        "the balance is whole again"
    );
}

#[test]
fn a_job_the_printer_aborts_voids_and_refunds_the_item_at_once() {
    let Some(printer) = IppEve::start("stampline-broken", Some("exit 3")) else {
        return;
    };
    let server = Server::start(60_000);
    server.funded_user("cat");
    let before = server.balance_mills("cat");
    let uri = printer.uri();
    let v = server.fails_with("cat", &buy_args(&uri, &[]), "print_failed");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("aborted"), "{message}");
    assert!(
        message.contains("the item was voided and refunded"),
        "{message}"
    );
    assert_eq!(server.balance_mills("cat"), before);
    let h = server.history("cat", 10);
    assert_eq!(h[0].status, "voided", "{h:?}");
}

#[test]
fn a_printer_that_refuses_the_format_costs_nothing() {
    let Some(printer) = IppEve::start_with("stampline-picky", None, "image/png") else {
        return;
    };
    let server = Server::start(60_000);
    server.funded_user("dan");
    let uri = printer.uri();
    let v = server.fails_with(
        "dan",
        &buy_args(&uri, &["--format", "pdf"]),
        "printer_unsupported",
    );
    assert!(
        v["message"].as_str().unwrap().contains("application/pdf"),
        "{v}"
    );
    let unreachable = format!("ipp://localhost:{}/ipp/print", free_port());
    server.fails_with("dan", &buy_args(&unreachable, &[]), "printer_unreachable");
    assert_eq!(server.balance_mills("dan"), 20_000);
    assert!(server.history("dan", 10).is_empty(), "nothing was issued");
    assert!(printer.documents().is_empty());
}

/// A raw-port (9100) printer: accepts connections and keeps what each one sent.
fn raw_listener() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            sink.lock().unwrap().push(bytes);
        }
    });
    (port, got)
}

#[test]
fn raw_bytes_over_port_9100_arrive_exactly_once() {
    let (port, got) = raw_listener();
    let server = Server::start(60_000);
    server.funded_user("eve");
    let uri = format!("socket://127.0.0.1:{port}");
    let v = server.ok("eve", &buy_args(&uri, &["--format", "raw"]));
    assert_eq!(v["status"], "printed", "{v}");
    let serial = v["serial"].as_str().unwrap();

    std::thread::sleep(Duration::from_millis(200));
    let connections = got.lock().unwrap().clone();
    assert_eq!(connections.len(), 1, "one connection, one copy");
    let raw = server.path("received.bin");
    std::fs::write(&raw, &connections[0]).unwrap();
    let verdict = server.ok("eve", &["verify", s(&raw)]);
    assert_eq!(
        verdict["valid"], true,
        "the bytes are the signed item: {verdict}"
    );
    assert_eq!(verdict["serial"], serial);
    assert_eq!(server.status_of("eve", serial), "printed");
}

#[test]
fn a_dead_raw_port_refuses_before_anything_is_issued() {
    let server = Server::start(60_000);
    server.funded_user("fay");
    let uri = format!("socket://127.0.0.1:{}", free_port());
    server.fails_with("fay", &buy_args(&uri, &[]), "printer_unreachable");
    assert_eq!(server.balance_mills("fay"), 20_000);
}

#[test]
fn a_printed_item_is_not_printed_again() {
    let server = Server::start(60_000);
    server.funded_user("gil");
    let out = server.path("label");
    let v = server.ok("gil", &common::buy_letter(&["--out", s(&out)]));
    let serial = v["serial"].as_str().unwrap().to_owned();
    let target = server.path("reprint");
    let printer = format!("file:{}", target.display());
    let v = server.fails_with(
        "gil",
        &["print", &serial, "--printer", &printer],
        "already_printed",
    );
    assert!(v["message"].as_str().unwrap().contains("refund"), "{v}");
    assert!(
        !target.with_extension("png").exists(),
        "a refused reprint writes nothing"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains("item reprinted"), "{log}");
    assert_eq!(server.status_of("gil", &serial), "printed");
    common::assert_audit_passes(&server.data);
    // Money: one stamp, printed once, charged once.
    assert_eq!(server.balance_mills("gil"), 19_220);
}

#[test]
fn printers_shows_state_and_makes_a_calibration_print() {
    let Some(printer) = IppEve::start("stampline-cal", None) else {
        return;
    };
    let uri = printer.uri();
    let out = Command::new(BIN)
        .args(["--json", "printers", &uri, "--calibrate"])
        .output()
        .unwrap();
    let (ok, v) = last_json(&out);
    assert!(ok, "{v}");
    let p = &v["printers"][0];
    assert_eq!(p["state"], "idle", "{v}");
    assert!(
        p["formats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "application/pdf"),
        "{v}"
    );
    assert_eq!(p["policy"]["copies_1"], true, "{v}");
    assert_eq!(p["calibration"][0]["state"], "completed", "{v}");
    assert_eq!(printer.documents().len(), 1);

    let dead = format!("socket://127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["--json", "printers", &dead])
        .output()
        .unwrap();
    let (ok, v) = last_json(&out);
    assert!(!ok, "{v}");
    assert_eq!(v["printers"][0]["error"], "printer_unreachable", "{v}");
    assert_eq!(v["error"], "printer_problem", "{v}");
}

#[test]
fn an_ipps_printer_is_printed_to_only_with_its_pinned_certificate() {
    let Some(printer) = IppEve::start("stampline-tls", None) else {
        return;
    };
    let server = Server::start(60_000);
    server.funded_user("hal");
    let uri = format!("ipps://localhost:{}/ipp/print", printer.port);
    // Nothing pinned, or another certificate pinned (the Stampline server's): refused before
    // anything is issued.
    server.fails_with("hal", &buy_args(&uri, &[]), "printer_untrusted");
    let trust = server.trust.clone();
    server.fails_with(
        "hal",
        &buy_args(&uri, &["--printer-cert", s(&trust)]),
        "printer_untrusted",
    );
    assert_eq!(server.balance_mills("hal"), 20_000);
    assert!(printer.documents().is_empty());

    // Fetch the certificate the printer presents (as a user would, to check and pin it).
    let cert = server.path("printer.pem");
    let out = Command::new(BIN)
        .args(["--json", "printers", &uri, "--save-cert", s(&cert)])
        .output()
        .unwrap();
    let (ok, v) = last_json(&out);
    assert!(ok, "{v}");
    assert_eq!(
        v["certificate_sha256"].as_str().unwrap().len(),
        32 * 3 - 1,
        "{v}"
    );
    assert_eq!(v["printers"][0]["state"], "idle", "{v}");
    let body = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    let printer_own =
        std::fs::read_to_string(printer.scripts.path().join("localhost.crt")).unwrap();
    assert_eq!(
        body(&std::fs::read_to_string(&cert).unwrap()),
        body(&printer_own),
        "the saved certificate is the printer's own"
    );

    let v = server.ok("hal", &buy_args(&uri, &["--printer-cert", s(&cert)]));
    assert_eq!(v["status"], "printed", "{v}");
    assert_eq!(printer.documents().len(), 1);
}

#[test]
fn an_item_left_unconfirmed_by_a_crashed_client_is_printed_and_confirmed_by_print() {
    let Some(printer) = IppEve::start("stampline-crash", Some(&format!("sleep {SLOW_PRINT_S}")))
    else {
        return;
    };
    let server = Server::start(120_000);
    server.funded_user("ivy");
    let uri = printer.uri();
    let mut buyer = server
        .command("ivy", &buy_args(&uri, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while printer.documents().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no document");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The client dies before it can confirm: the item stays issued, within its window.
    buyer.kill().unwrap();
    buyer.wait().unwrap();
    let h = server.history("ivy", 10);
    let serial = h[0].serial.clone();
    assert_eq!(h[0].status, "issued", "{h:?}");

    let target = server.path("again");
    let printer_uri = format!("file:{}", target.display());
    let v = server.ok(
        "ivy",
        &[
            "print",
            &serial,
            "--printer",
            &printer_uri,
            "--format",
            "png",
        ],
    );
    assert_eq!(v["status"], "printed", "{v}");
    assert_eq!(v["reprints"], 1);
    assert_eq!(server.status_of("ivy", &serial), "printed");
    let verdict = server.ok("ivy", &["verify", s(&target.with_extension("png"))]);
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(server.balance_mills("ivy"), 19_220, "charged once");
}

/// Turns a `^GFA` graphic back into a PNG, as a thermal printer would print it.
fn zpl_graphic_to_png(zpl: &str, path: &Path) {
    let start = zpl.find("^GFA,").unwrap() + 5;
    let fields: Vec<&str> = zpl[start..].splitn(4, ',').collect();
    let total: usize = fields[0].parse().unwrap();
    assert_eq!(fields[1], fields[0], "uncompressed: byte counts agree");
    let row_bytes: usize = fields[2].parse().unwrap();
    let hex = fields[3].split('^').next().unwrap();
    assert_eq!(hex.len(), 2 * total, "the hex data holds every byte");
    assert_eq!(total % row_bytes, 0);
    let rows = total / row_bytes;
    let bytes = hex::decode(hex).unwrap();
    let width = row_bytes * 8;
    let img = image::GrayImage::from_fn(width as u32, rows as u32, |x, y| {
        let byte = bytes[y as usize * row_bytes + x as usize / 8];
        let black = byte & (0x80 >> (x % 8)) != 0;
        image::Luma([if black { 0 } else { 255 }])
    });
    img.save(path).unwrap();
}

#[test]
fn zpl_over_port_9100_arrives_once_and_carries_the_item() {
    let (port, got) = raw_listener();
    let server = Server::start(60_000);
    server.funded_user("jon");
    let uri = format!("socket://127.0.0.1:{port}");
    let v = server.ok("jon", &buy_args(&uri, &["--dpi", "203"]));
    assert_eq!(v["status"], "printed", "{v}");
    std::thread::sleep(Duration::from_millis(200));
    let connections = got.lock().unwrap().clone();
    assert_eq!(connections.len(), 1, "one connection, one copy");
    let zpl = String::from_utf8(connections[0].clone()).unwrap();
    assert!(
        zpl.starts_with("^XA") && zpl.trim_end().ends_with("^XZ"),
        "{zpl:.40}"
    );
    assert_eq!(zpl.matches("^XA").count(), 1, "one label");
    assert!(zpl.contains("^PQ1"), "one copy asked for");
    let png = server.path("zpl.png");
    zpl_graphic_to_png(&zpl, &png);
    let verdict = server.ok("jon", &["verify", s(&png)]);
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["serial"], v["serial"]);
}

#[test]
fn a_busy_printer_is_retried_and_both_buys_print() {
    // ippeveprinter prints one job at a time and answers server-error-busy meanwhile.
    let Some(printer) = IppEve::start("stampline-busy", Some("sleep 3")) else {
        return;
    };
    let server = Server::start(60_000);
    server.funded_user("kim");
    let uri = printer.uri();
    let buyers: Vec<Child> = (0..2)
        .map(|_| {
            server
                .command("kim", &buy_args(&uri, &[]))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for buyer in buyers {
        let (ok, v) = last_json(&buyer.wait_with_output().unwrap());
        assert!(ok, "{v}");
        assert_eq!(v["status"], "printed", "{v}");
    }
    assert_eq!(printer.documents().len(), 2);
    assert_eq!(server.balance_mills("kim"), 20_000 - 2 * 780);
}
