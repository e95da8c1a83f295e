//! The two tiers as separate processes: one `stampline server --role core` and gateways
//! (`--role gateway`) on loopback, with credentials from `stampline admin gateway-credentials`.
//! End to end through two gateways; what the core's port refuses; a core killed (SIGKILL) under
//! load, its gateways' links ended and served again when it is back, every acknowledged purchase
//! intact and the audit clean.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stampline_client::{Endpoint, Link, Trust};
use stampline_wire::{Card, Op, Secret};

mod common;
use common::{
    BIN, Cli, Killed, PASSWORD, as_client, buy_letter, fund_card, gateway_credentials, last_json,
    s, spawn_listening,
};

/// A running core: its internal address and the trust file clients pin.
struct CoreProc {
    _proc: Killed,
    internal: String,
    trust: PathBuf,
}

/// `stampline server --role core` on `listen` (HOST:PORT; port 0 picks one).
fn start_core(data: &Path, listen: &str) -> CoreProc {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--json", "--role", "core", "--listen", listen])
        .args(["--confirm-window-ms", "300", "--data-dir"])
        .arg(data)
        .stderr(Stdio::null());
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("core printed {line}"));
    assert_eq!(v["event"], "listening", "{v}");
    assert_eq!(v["role"], "core", "{v}");
    CoreProc {
        _proc: Killed(child),
        internal: v["internal"].as_str().unwrap().to_owned(),
        trust: PathBuf::from(v["trust"].as_str().unwrap()),
    }
}

/// A running gateway, which the `stampline` client can be pointed at.
struct GatewayProc {
    _proc: Killed,
    url: String,
    trust: PathBuf,
}

fn start_gateway(credentials: &Path, core: &str) -> GatewayProc {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "server",
        "--json",
        "--role",
        "gateway",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(["--core", core, "--credentials", s(credentials)])
    .args(["--beat-interval-ms", "300", "--beat-timeout-ms", "1500"])
    .stderr(Stdio::null());
    let l = spawn_listening(&mut cmd).unwrap_or_else(|v| panic!("gateway did not start: {v}"));
    assert_eq!(l.line["role"], "gateway", "{}", l.line);
    GatewayProc {
        _proc: Killed(l.child),
        url: l.url,
        trust: l.trust,
    }
}

impl GatewayProc {
    fn endpoint(&self) -> Endpoint {
        Endpoint::new(&self.url, Trust::from_file(&self.trust).unwrap()).unwrap()
    }
}

impl Cli for GatewayProc {
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value) {
        let mut cmd = Command::new(BIN);
        let out = as_client(&mut cmd, &self.url, &self.trust, user)
            .args(args)
            .output()
            .unwrap();
        last_json(&out)
    }
}

/// A core and two gateways on loopback, in `dir`.
struct Split {
    core: CoreProc,
    gateways: Vec<GatewayProc>,
    data: PathBuf,
}

fn start_split(dir: &Path) -> Split {
    let data = dir.join("core");
    let core = start_core(&data, "127.0.0.1:0");
    let mut gateways = Vec::new();
    for name in ["gw-a", "gw-b"] {
        let creds = dir.join(name);
        gateway_credentials(&data, name, &creds);
        gateways.push(start_gateway(&creds, &core.internal));
    }
    Split {
        core,
        gateways,
        data,
    }
}

/// A link through `ep`, retried while the gateway answers `unavailable`.
async fn link_when_up(ep: &Endpoint, user: &str) -> Link {
    let mut last = String::new();
    for _ in 0..100 {
        match Link::connect(ep, user, PASSWORD).await {
            Ok(link) => return link,
            Err(e) if e.code() == "unavailable" => last = e.to_string(),
            Err(e) => panic!("link: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no link through the gateway: {last}");
}

fn card() -> Card {
    Card {
        number: Secret("4242424242424242".into()),
        exp: "12/30".into(),
        cvc: Secret("123".into()),
    }
}

fn issue_op() -> Op {
    Op::Issue {
        kind: "postage".into(),
        postage_mills: 780,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: time::OffsetDateTime::now_utc().date().to_string(),
        class: "first-class-letter".into(),
        weight_oz: None,
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    }
}

fn assert_audit_clean(data: &Path) {
    let (ok, report) = common::audit(&["--data-dir", s(data)]);
    assert!(ok && report["clean"] == json!(true), "audit: {report}");
    assert_eq!(report["seals_checked"], json!(true), "{report}");
}

#[test]
fn split_mode_end_to_end_through_two_gateways_of_one_core() {
    let dir = tempfile::tempdir().unwrap();
    let split = start_split(dir.path());
    let (a, b) = (&split.gateways[0], &split.gateways[1]);
    // Every gateway serves the certificate the core's trust file pins: one trust file for all.
    let core_trust = std::fs::read(&split.core.trust).unwrap();
    assert_eq!(std::fs::read(&a.trust).unwrap(), core_trust);
    assert_eq!(std::fs::read(&b.trust).unwrap(), core_trust);
    // The gateway's directory holds no signing key, no ledger and no password hash.
    for gw in ["gw-a", "gw-b"] {
        for entry in std::fs::read_dir(dir.path().join(gw)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                !name.contains("ledger") && !name.contains("psd") && !name.contains("sqlite"),
                "{gw} holds {name}"
            );
        }
    }

    // Register through one gateway, fund and buy through the other: one core behind both.
    a.ok_when_up("ann", &common::REGISTER);
    b.ok_when_up("ann", &fund_card("20.00"));
    let quote = a.ok(
        "ann",
        &["quote", "--class", "first-class-letter", "--weight-oz", "1"],
    );
    assert_eq!(quote["postage_mills"], 740, "{quote}");
    let label = dir.path().join("label.pdf");
    let bought = b.ok("ann", &buy_letter(&["--out", s(&label)]));
    let serial = bought["serial"].as_str().unwrap().to_owned();
    assert_eq!(bought["printed"], json!(true), "{bought}");
    assert!(std::fs::read(&label).unwrap().starts_with(b"%PDF"));
    assert_eq!(a.balance_mills("ann"), 20_000 - 780);
    assert_eq!(a.status_of("ann", &serial), "printed");

    // Refund over a link through the first gateway; both see the money back.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let link = link_when_up(&a.endpoint(), "ann").await;
        let r = link
            .request(Op::Refund {
                serial: serial.clone(),
            })
            .await
            .unwrap();
        assert!(r.ok, "refund: {r:?}");
        link.bye().await.unwrap();
    });
    assert_eq!(b.balance_mills("ann"), 20_000);
    assert_eq!(b.status_of("ann", &serial), "refunded");
    // A wrong password through a gateway is the core's `bad_credentials`.
    let (ok, v) = Command::new(BIN)
        .args(["--json", "balance"])
        .env("STAMPLINE_SERVER", &a.url)
        .env("STAMPLINE_TRUST", &a.trust)
        .env("STAMPLINE_USER", "ann")
        .env("STAMPLINE_PASSWORD", "not the password at all")
        .stdin(Stdio::null())
        .output()
        .map(|o| last_json(&o))
        .unwrap();
    assert!(!ok);
    assert_eq!(v["error"], "bad_credentials", "{v}");

    // An operator logged in through one gateway sees the link through the other and ends it:
    // the core tells that gateway at its next report (every 250 ms).
    common::create_admin(&split.data, "root");
    runtime.block_on(async {
        let link = link_when_up(&a.endpoint(), "ann").await;
        let root = link_when_up(&b.endpoint(), "root").await;
        let view = root
            .request(Op::AdminLinks {})
            .await
            .unwrap()
            .decode::<stampline_wire::replies::AdminLinksReply>()
            .unwrap();
        let mine = view
            .links
            .iter()
            .find(|l| l.session == link.session().to_string())
            .unwrap_or_else(|| panic!("the link through gateway a is not listed: {view:?}"));
        assert_eq!(mine.user, "ann");
        let at = std::time::Instant::now();
        let r = root
            .request(Op::AdminKick {
                session: Some(link.session().to_string()),
                user: None,
            })
            .await
            .unwrap();
        assert!(r.ok, "{r:?}");
        let lost = link.wait_lost(Duration::from_secs(3)).await;
        assert!(
            lost.as_deref().is_some_and(|why| why.contains("kicked")),
            "{lost:?}"
        );
        assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
        root.bye().await.unwrap();
    });

    // A gateway dies: its client's link ends; the client logs in through the other gateway.
    let mut gateways = split.gateways;
    runtime.block_on(async {
        let link = link_when_up(&gateways[0].endpoint(), "ann").await;
        drop(gateways.remove(0));
        let lost = link.wait_lost(Duration::from_secs(5)).await;
        assert!(lost.is_some(), "a link lived on without its gateway");
        let link = link_when_up(&gateways[0].endpoint(), "ann").await;
        let r = link.request(Op::Balance {}).await.unwrap();
        assert_eq!(r.fields["balance_mills"], 20_000, "{r:?}");
        link.bye().await.unwrap();
    });
    drop(gateways);
    assert_audit_clean(&split.data);
}

/// A TLS client of the core's internal port with `config`: whether a call gets an answer.
async fn internal_answers(addr: &str, config: Arc<rustls::ClientConfig>) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name =
        rustls::pki_types::ServerName::try_from(stampline_server::internal_ca::CORE_SERVER_NAME)
            .unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    let call = stampline_server::internal::encode(&json!({"id": 1, "call": {"keys": {}}}));
    if tls.write_all(&call).await.is_err() || tls.flush().await.is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut len)).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_refuses_plain_tls_another_cas_certificate_and_a_revoked_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("core");
    let core = start_core(&data, "127.0.0.1:0");
    let good = dir.path().join("good");
    gateway_credentials(&data, "good", &good);
    let good_config = stampline_server::internal_ca::GatewayCredentials::load(&good)
        .unwrap()
        .core_client_config()
        .unwrap();
    assert!(
        internal_answers(&core.internal, Arc::clone(&good_config)).await,
        "an issued gateway is answered"
    );

    // A TLS client that trusts the core's CA but shows no certificate.
    let ca = std::fs::read_to_string(good.join("ca.pem")).unwrap();
    let ca_der = stampline_https::pem_blocks(&ca).remove(0).1;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut plain = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    plain.alpn_protocols = vec![stampline_server::internal_ca::INTERNAL_ALPN.to_vec()];
    assert!(
        !internal_answers(&core.internal, Arc::new(plain)).await,
        "a client without a certificate was answered"
    );

    // A gateway certificate from another core's CA.
    let other = dir.path().join("other-core");
    let other_core = start_core(&other, "127.0.0.1:0");
    let foreign = dir.path().join("foreign");
    gateway_credentials(&other, "good", &foreign);
    drop(other_core);
    let foreign_config = stampline_server::internal_ca::GatewayCredentials::load(&foreign)
        .unwrap()
        .core_client_config()
        .unwrap();
    assert!(
        !internal_answers(&core.internal, foreign_config).await,
        "another CA's gateway was answered"
    );

    // A gateway of ours, revoked: its live links end and it is refused from then on.
    let gw = start_gateway(&good, &core.internal);
    let client = gw.endpoint();
    register_retrying(&gw).await;
    let link = link_when_up(&client, "ann").await;
    let o = Command::new(BIN)
        .args([
            "--json",
            "admin",
            "gateway-revoke",
            "good",
            "--data-dir",
            s(&data),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (ok, v) = last_json(&o);
    assert!(ok, "revoke: {v}");
    let lost = link.wait_lost(Duration::from_secs(5)).await;
    assert!(lost.is_some(), "the revoked gateway's link lived on");
    match Link::connect(&client, "ann", PASSWORD).await {
        Err(e) => assert_eq!(e.code(), "unavailable", "{e}"),
        Ok(_) => panic!("a revoked gateway served a login"),
    }
    assert!(
        !internal_answers(&core.internal, good_config).await,
        "a revoked gateway was answered"
    );
}

async fn register_retrying(gw: &GatewayProc) {
    let form = json!({"user": "ann", "password": PASSWORD, "name": "Ann Example",
        "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"});
    for _ in 0..100 {
        match gw.endpoint().register(&form).await {
            Ok(_) => return,
            Err(e) if e.code() == "unavailable" => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("register: {e}"),
        }
    }
    panic!("the gateway never reached its core");
}

/// A loopback port nobody listens on now (for a core that must come back on the same address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_core_killed_under_load_ends_every_link_and_loses_no_acknowledged_purchase() {
    const ROUNDS: u64 = 5;
    const WORKERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("core");
    let internal = format!("127.0.0.1:{}", free_port());
    let mut core = Some(start_core(&data, &internal));
    let mut gateways = Vec::new();
    for name in ["gw-a", "gw-b"] {
        let creds = dir.path().join(name);
        gateway_credentials(&data, name, &creds);
        gateways.push(start_gateway(&creds, &internal));
    }
    register_retrying(&gateways[0]).await;
    {
        let link = link_when_up(&gateways[1].endpoint(), "ann").await;
        let r = link
            .request(Op::Fund {
                amount_mills: 5_000_000,
                card: Some(card()),
                card_token: None,
                eft: None,
            })
            .await
            .unwrap();
        assert!(r.ok, "fund: {r:?}");
        link.bye().await.unwrap();
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let confirmed: Arc<Mutex<HashSet<String>>> = Arc::default();
    for round in 0..ROUNDS {
        if core.is_none() {
            core = Some(start_core(&data, &internal));
        }
        let mut links = Vec::new();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let gw = &gateways[w % gateways.len()];
            let link = Arc::new(link_when_up(&gw.endpoint(), "ann").await);
            links.push(Arc::clone(&link));
            let (acked, confirmed) = (Arc::clone(&acked), Arc::clone(&confirmed));
            workers.push(tokio::spawn(async move {
                loop {
                    let Ok(r) = link.request(issue_op()).await else {
                        break;
                    };
                    if !r.ok {
                        break;
                    }
                    let serial = r.fields["serial"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().push(serial.clone());
                    let c = link
                        .request(Op::Confirm {
                            serial: serial.clone(),
                            printed: true,
                        })
                        .await;
                    match c {
                        Ok(c) if c.ok => confirmed.lock().unwrap().insert(serial),
                        _ => break,
                    };
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200 + (round * 97) % 300)).await;
        // kill -9 the core: every link through every gateway ends, within the beat timeout.
        drop(core.take());
        for link in &links {
            let lost = link.wait_lost(Duration::from_secs(5)).await;
            assert!(lost.is_some(), "a link lived on without its core");
        }
        for w in workers {
            w.await.unwrap();
        }
        // While the core is down, a new login is `unavailable` (not a hang, not a live link).
        match Link::connect(&gateways[0].endpoint(), "ann", PASSWORD).await {
            Err(e) => assert_eq!(e.code(), "unavailable", "{e}"),
            Ok(_) => panic!("a gateway without a core served a login"),
        }
    }
    // The core comes back: the same gateways serve again without a restart; the window of every
    // unconfirmed item passes; every acknowledged purchase is there exactly once.
    let _core = start_core(&data, &internal);
    let link = link_when_up(&gateways[0].endpoint(), "ann").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= ROUNDS,
        "too little load: {}",
        acked.len()
    );
    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    let mut seen = HashSet::new();
    for serial in &acked {
        assert!(seen.insert(serial), "serial {serial} acknowledged twice");
        let statuses: Vec<String> = db
            .prepare("SELECT status FROM items WHERE serial = ?1")
            .unwrap()
            .query_map([serial], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(statuses.len(), 1, "acknowledged item {serial} is missing");
        if confirmed.lock().unwrap().contains(serial) {
            assert_eq!(statuses[0], "printed", "confirmed item {serial}");
        } else {
            assert!(
                statuses[0] == "printed" || statuses[0] == "voided",
                "{serial}: {}",
                statuses[0]
            );
        }
    }
    eprintln!(
        "split kill -9: {} purchases acknowledged over {ROUNDS} kills of the core",
        acked.len()
    );
    link.bye().await.unwrap();
    assert_audit_clean(&data);
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_that_stops_answering_without_a_reset_ends_the_links_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("core");
    let core = start_core(&data, "127.0.0.1:0");
    let creds = dir.path().join("gw");
    gateway_credentials(&data, "gw", &creds);
    let gw = start_gateway(&creds, &core.internal);
    register_retrying(&gw).await;
    let link = link_when_up(&gw.endpoint(), "ann").await;
    // Frozen, the core keeps its sockets open: only the gateway's keep-alive can tell.
    signal(&core._proc.0, "STOP");
    let lost = link.wait_lost(Duration::from_secs(8)).await;
    signal(&core._proc.0, "CONT");
    assert!(lost.is_some(), "a link lived on while its core was frozen");
    // Thawed, the core is reached again and serves without a restart of either process.
    let again = link_when_up(&gw.endpoint(), "ann").await;
    let r = again.request(Op::Balance {}).await.unwrap();
    assert!(r.ok, "{r:?}");
    again.bye().await.unwrap();
}

#[test]
fn each_role_refuses_the_flags_of_the_other_tier() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let refused = |args: &[&str], code: &str| {
        let o = Command::new(BIN)
            .args([
                "--json",
                "server",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                s(&data),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (ok, v) = last_json(&o);
        assert!(!ok, "{args:?} started: {v}");
        assert_eq!(v["error"], code, "{args:?}: {v}");
    };
    refused(&["--role", "gateway"], "bad_flag");
    refused(&["--role", "gateway", "--core", "127.0.0.1:1"], "bad_flag");
    let gw = [
        "--role",
        "gateway",
        "--core",
        "127.0.0.1:1",
        "--credentials",
        "x",
    ];
    refused(
        &[&gw[..], &["--database", "sqlite"]].concat(),
        "unsupported",
    );
    refused(&[&gw[..], &["--psd", "software"]].concat(), "unsupported");
    refused(
        &[&gw[..], &["--hostname", "example.com"]].concat(),
        "unsupported",
    );
    refused(&["--core", "127.0.0.1:1"], "unsupported");
    refused(&["--role", "core", "--config", "f.toml"], "unsupported");
    refused(&["--role", "middle"], "bad_usage");
    // Nothing was made for any of them.
    assert!(!data.exists());
}
