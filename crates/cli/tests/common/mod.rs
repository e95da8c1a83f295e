//! The harness the binary's end-to-end tests share: a real `stampline server` on port 0 in a
//! temp dir, and the real `stampline` binary run against it with --json.

// Each test file uses a different part of the harness.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use stampline_wire::replies::{BalanceReply, HistoryLine, HistoryReply};

pub const BIN: &str = env!("CARGO_BIN_EXE_stampline");
pub const PASSWORD: &str = "correct horse battery staple";
/// The sandbox bank's card that always pays.
pub const CARD: &str = "4242424242424242";

/// `stampline register` with the tests' name and address.
pub const REGISTER: [&str; 11] = [
    "register",
    "--name",
    "Ann Example",
    "--address",
    "1 Main St",
    "--city",
    "Boston",
    "--state",
    "MA",
    "--zip",
    "02134",
];

/// [`REGISTER`] with the address in `state` and `zip`.
pub fn register_in<'a>(state: &'a str, zip: &'a str) -> [&'a str; 11] {
    let mut args = REGISTER;
    args[8] = state;
    args[10] = zip;
    args
}

/// `stampline fund` of `dollars` by [`CARD`].
pub fn fund_card(dollars: &str) -> [&str; 9] {
    fund_by_card(dollars, CARD)
}

/// `stampline fund` of `dollars` by the sandbox bank's card `number`.
pub fn fund_by_card<'a>(dollars: &'a str, number: &'a str) -> [&'a str; 9] {
    [
        "fund", "--amount", dollars, "--card", number, "--exp", "12/30", "--cvc", "123",
    ]
}

/// `stampline fund` of `dollars` by EFT from a valid routing number.
pub fn fund_eft(dollars: &str) -> [&str; 7] {
    fund_by_eft(dollars, "011000015")
}

/// `stampline fund` of `dollars` by EFT from `routing`.
pub fn fund_by_eft<'a>(dollars: &'a str, routing: &'a str) -> [&'a str; 7] {
    [
        "fund",
        "--amount",
        dollars,
        "--eft-routing",
        routing,
        "--eft-account",
        "123456789",
    ]
}

/// `stampline buy` of a $0.78 letter from 02134 to 94105, then `extra`.
pub fn buy_letter<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "buy",
        "--postage",
        "0.78",
        "--from",
        "02134",
        "--to",
        "94105",
    ];
    args.extend_from_slice(extra);
    args
}

/// [`buy_letter`] with its raw bytes written to `out`.
pub fn buy_raw(out: &str) -> Vec<&str> {
    buy_letter(&["--format", "raw", "--out", out])
}

/// A `stampline` process (server or sandbox service) that printed its listening line.
pub struct Listening {
    pub child: Child,
    pub url: String,
    pub trust: PathBuf,
    /// The whole listening line.
    pub line: Value,
}

/// Spawns `cmd` — a `stampline server` or `sandbox` command with `--json` — with its stdout
/// piped and reads its first line: the listening event, or `Err` with the JSON it printed instead
/// when it refused to start (the process has then exited with a failure status).
pub fn spawn_listening(cmd: &mut Command) -> Result<Listening, Value> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
    if v["event"] != "listening" {
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(!status.success(), "printed {v} and went on");
        return Err(v);
    }
    Ok(Listening {
        child,
        url: v["url"].as_str().unwrap().to_owned(),
        trust: PathBuf::from(v["trust"].as_str().unwrap()),
        line: v,
    })
}

/// `stampline server --json` on a free local port, its data in `data`.
pub fn server_command(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--json", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data);
    cmd
}

/// [`server_command`] started with its log dropped: the listening server, or the JSON it printed
/// when it refused to start.
pub fn start_server(data: &Path) -> Result<Listening, Value> {
    spawn_listening(server_command(data).stderr(Stdio::null()))
}

pub struct TestServer {
    child: Child,
    pub url: String,
    pub trust: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_configured(None).expect("server starts")
    }

    /// A server started with `--config` holding `config` (TOML), or the JSON it printed when it
    /// refused to start.
    pub fn start_configured(config: Option<&str>) -> Result<TestServer, Value> {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut cmd = server_command(&data);
        if let Some(text) = config {
            let path = dir.path().join("stampline.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        let server = spawn_listening(cmd.stderr(Stdio::null()))?;
        assert_eq!(server.trust, data.join("trust.pem"));
        Ok(TestServer {
            child: server.child,
            url: server.url,
            trust: server.trust,
            _dir: dir,
        })
    }
}

/// `cmd` (the `stampline` binary, perhaps run by another program) as a client of `url` pinning
/// `trust`, logging in as `user` with the tests' password, with --json and no stdin.
pub fn as_client<'a>(cmd: &'a mut Command, url: &str, trust: &Path, user: &str) -> &'a mut Command {
    cmd.arg("--json")
        .env("STAMPLINE_SERVER", url)
        .env("STAMPLINE_TRUST", trust)
        .env("STAMPLINE_USER", user)
        .env("STAMPLINE_PASSWORD", PASSWORD)
        // A proxy in the developer's environment is not the test's.
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
}

impl TestServer {
    /// [`Cli::run`] with `env` set for the client too (a proxy, say).
    pub fn run_with_env(&self, user: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
        let mut cmd = Command::new(BIN);
        let out = as_client(&mut cmd, &self.url, &self.trust, user)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        last_json(&out)
    }
}

/// A child process (a server, say), killed (SIGKILL) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `stampline admin gateway-credentials` for `name` from the core's data dir `data` into `out`:
/// its JSON.
pub fn gateway_credentials(data: &Path, name: &str, out: &Path) -> Value {
    let o = Command::new(BIN)
        .args([
            "--json",
            "admin",
            "gateway-credentials",
            "--data-dir",
            s(data),
        ])
        .args(["--name", name, "--out", s(out)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (ok, v) = last_json(&o);
    assert!(ok, "gateway-credentials {name}: {v}");
    v
}

impl Cli for TestServer {
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value) {
        self.run_with_env(user, args, &[])
    }
}

/// A server the tests run the `stampline` client against. `run` says how the client is started;
/// what the tests check of its answer is the same for every server.
pub trait Cli {
    /// Runs a client command as `user` with --json: (exit success, the last JSON line).
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value);

    /// The command's JSON, asserting that it succeeded.
    fn ok(&self, user: &str, args: &[&str]) -> Value {
        let (ok, v) = self.run(user, args);
        assert!(ok, "{args:?} failed: {v}");
        v
    }

    /// The command's JSON error, asserting that it failed with `code` and said why.
    fn fails_with(&self, user: &str, args: &[&str], code: &str) -> Value {
        let (ok, v) = self.run(user, args);
        assert!(!ok, "{args:?} should fail with {code}: {v}");
        assert_eq!(v["error"], code, "{args:?}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        v
    }

    /// [`Cli::ok`], retried while the server answers `unavailable` (a gateway reaches its core
    /// shortly after it starts, and again after the core comes back).
    fn ok_when_up(&self, user: &str, args: &[&str]) -> Value {
        for _ in 0..100 {
            let (ok, v) = self.run(user, args);
            if ok {
                return v;
            }
            assert_eq!(v["error"], "unavailable", "{args:?}: {v}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{args:?}: the gateway never reached its core");
    }

    /// `stampline register` with the tests' name and address.
    fn register(&self, user: &str) -> Value {
        self.ok(user, &REGISTER)
    }

    /// `stampline balance`, read as the `balance` op's reply.
    fn balance_mills(&self, user: &str) -> u64 {
        serde_json::from_value::<BalanceReply>(self.ok(user, &["balance"]))
            .unwrap()
            .balance_mills
    }

    /// `stampline history --limit LIMIT`, read as the `history` op's reply: the newest items.
    fn history(&self, user: &str, limit: u32) -> Vec<HistoryLine> {
        let v = self.ok(user, &["history", "--limit", &limit.to_string()]);
        serde_json::from_value::<HistoryReply>(v).unwrap().items
    }

    /// The status of `serial` among `user`'s latest 100 items, or "" when it is not there.
    fn status_of(&self, user: &str, serial: &str) -> String {
        self.history(user, 100)
            .into_iter()
            .find(|i| i.serial == serial)
            .map(|i| i.status)
            .unwrap_or_default()
    }
}

/// `stampline admin create` of `user` (the tests' password) in the data dir `data`, asserting
/// that it succeeded; the server may be running on it.
pub fn create_admin(data: &Path, user: &str) {
    let out = Command::new(BIN)
        .args(["--json", "--user", user, "admin", "create", "--data-dir"])
        .arg(data)
        .env("STAMPLINE_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `stampline audit --json ARGS`: (exit success, report).
pub fn audit(args: &[&str]) -> (bool, Value) {
    let out = Command::new(BIN)
        .args(["audit", "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    last_json(&out)
}

/// `stampline audit` of the server's data dir `data` passes: the ledger and its audit log are
/// consistent on disk.
pub fn assert_audit_passes(data: impl AsRef<Path>) {
    let data = data.as_ref().to_str().unwrap();
    let (ok, report) = audit(&["--data-dir", data]);
    assert!(ok, "audit of {data}: {report}");
}

/// A finished `stampline --json` command: (exit success, the last line it printed, as JSON).
pub fn last_json(out: &Output) -> (bool, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("null");
    let v: Value = serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "not JSON: {stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

pub fn exp() -> String {
    "12/30".to_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
