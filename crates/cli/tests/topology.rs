//! The deployment of docs/DEPLOY.md on one machine: three Linux network namespaces joined by
//! veth pairs — `client` ↔ `dmz` ↔ `private` — with the dmz routing between them (forwarding
//! on, both ends' default routes through it), so that without rules the client could reach the
//! core. The firewall is exactly docs/deploy/dmz.nft and docs/deploy/private.nft, with this
//! test's addresses put in their `define`s. The core runs in `private`, a gateway in `dmz` on
//! port 443, and the real `stampline` client in `client` registers, funds, buys and reads its
//! balance through the gateway; the client's direct connection to the core is shown to work
//! before the rules are loaded and not after, while the dmz still reaches it.
//!
//! The client pins trust.pem's certificate byte for byte (`stampline_https::pinned_client_config`
//! ignores the server name; an IP address is not sent as SNI), so the certificate's names do not
//! matter: it names 127.0.0.1 and localhost, and the client connects to 10.231.1.1 without
//! `--hostname`.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables): `skipped: …` otherwise, unless
//! STAMPLINE_REQUIRE_ALL=1, when that is a failure.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::{
    BIN, Cli, Killed, as_client, buy_letter, fund_card, gateway_credentials, last_json, s,
};

const CLIENT_NET: &str = "10.231.1.0/24";
const CLIENT_ADDR: &str = "10.231.1.2";
const GATEWAY_ADDR: &str = "10.231.1.1";
const GATEWAY_PORT: u16 = 443;
/// The dmz's address on the private side: where the core sees the gateway come from.
const DMZ_PRIVATE_ADDR: &str = "10.231.2.1";
const CORE_ADDR: &str = "10.231.2.2";
const CORE_PORT: u16 = 7443;
/// A second listener in the dmz, on a port the rules do not open.
const OTHER_PORT: u16 = 8443;

/// `skipped: REASON` on stderr, or a failure under STAMPLINE_REQUIRE_ALL=1 (as proxy.rs).
fn skip(reason: &str) {
    if std::env::var("STAMPLINE_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{reason} (STAMPLINE_REQUIRE_ALL=1 requires this test to run)");
    }
    eprintln!("skipped: {reason}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            // Real, effective, saved, filesystem: the effective one decides.
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// `name` on PATH or in the sbin directories a non-root PATH often lacks.
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The three namespaces, deleted when dropped (which deletes their veths too).
struct Net {
    ip: PathBuf,
    nft: PathBuf,
    client: String,
    dmz: String,
    private: String,
    made: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new(&self.ip)
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Net {
    /// `ip ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let o = Command::new(&self.ip).args(args).output().unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", output_text(&o));
    }

    /// A command run inside namespace `ns`.
    fn exec(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Makes the namespaces and links them; `Err` (a skip) when `ip netns add` is refused.
    fn build(ip: PathBuf, nft: PathBuf) -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            ip,
            nft,
            client: format!("slc-{pid}"),
            dmz: format!("sld-{pid}"),
            private: format!("slp-{pid}"),
            made: Vec::new(),
        };
        for ns in [net.client.clone(), net.dmz.clone(), net.private.clone()] {
            let o = Command::new(&net.ip)
                .args(["netns", "add", &ns])
                .output()
                .unwrap();
            if !o.status.success() {
                if net.made.is_empty() {
                    return Err(format!(
                        "`ip netns add` is not permitted here: {}",
                        output_text(&o).trim()
                    ));
                }
                panic!("ip netns add {ns}: {}", output_text(&o));
            }
            net.made.push(ns);
        }
        let (client, dmz, private) = (net.client.clone(), net.dmz.clone(), net.private.clone());
        // Each veth is created with its ends already in their namespaces: nothing is left in the
        // root namespace if the test dies half-way.
        let (vc, vdc, vdp, vp) = (
            format!("vc{pid}"),
            format!("vdc{pid}"),
            format!("vdp{pid}"),
            format!("vp{pid}"),
        );
        net.ip(&[
            "link", "add", &vc, "netns", &client, "type", "veth", "peer", "name", &vdc, "netns",
            &dmz,
        ]);
        net.ip(&[
            "link", "add", &vp, "netns", &private, "type", "veth", "peer", "name", &vdp, "netns",
            &dmz,
        ]);
        let addr = |ns: &str, dev: &str, a: &str| {
            net.ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", dev]);
            net.ip(&["-n", ns, "link", "set", dev, "up"]);
        };
        addr(&client, &vc, CLIENT_ADDR);
        addr(&dmz, &vdc, GATEWAY_ADDR);
        addr(&dmz, &vdp, DMZ_PRIVATE_ADDR);
        addr(&private, &vp, CORE_ADDR);
        for ns in [&client, &dmz, &private] {
            net.ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Both ends route everything through the dmz, and the dmz forwards: without the rules
        // the client could reach the core.
        net.ip(&[
            "-n",
            &client,
            "route",
            "add",
            "default",
            "via",
            GATEWAY_ADDR,
        ]);
        net.ip(&[
            "-n",
            &private,
            "route",
            "add",
            "default",
            "via",
            DMZ_PRIVATE_ADDR,
        ]);
        // /proc/sys/net is the opening process's namespace's.
        let o = net
            .exec(&dmz, "sh")
            .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .output()
            .unwrap();
        assert!(o.status.success(), "ip_forward: {}", output_text(&o));
        Ok(net)
    }

    /// Whether a TCP connection from namespace `ns` to `addr`:`port` is established within
    /// 2 seconds (bash's /dev/tcp, under `timeout`), and how the attempt ended.
    fn connects(&self, ns: &str, addr: &str, port: u16) -> (bool, String) {
        let o = self
            .exec(ns, "timeout")
            .args(["2", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
            .output()
            .unwrap();
        let how = match o.status.code() {
            Some(0) => "connected".to_owned(),
            Some(124) => "no answer within 2 s (dropped)".to_owned(),
            other => format!("failed ({other:?}): {}", output_text(&o).trim()),
        };
        (o.status.success(), how)
    }

    /// Asserts the connection's outcome, and prints it.
    fn probe(&self, ns: &str, addr: &str, port: u16, expect: bool) {
        let (ok, how) = self.connects(ns, addr, port);
        eprintln!("probe {ns} -> {addr}:{port}: {how}");
        assert_eq!(ok, expect, "{ns} -> {addr}:{port}: {how}");
    }

    /// Loads `docs/deploy/FILE` into namespace `ns` with `defines` in place of its own values:
    /// every `define` of the file must be one of `defines`, and every one of `defines` used.
    fn load_rules(&self, ns: &str, file: &str, defines: &[(&str, String)], dir: &Path) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/deploy")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut used = Vec::new();
        let mut rules = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("define ") {
                let name = rest.split('=').next().unwrap().trim();
                let (_, value) = defines
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("{file}: define {name} is new to this test"));
                used.push(name.to_owned());
                rules.push_str(&format!("define {name} = {value}\n"));
            } else {
                rules.push_str(line);
                rules.push('\n');
            }
        }
        for (name, _) in defines {
            assert!(
                used.iter().any(|u| u == name),
                "{file} has no define {name}"
            );
        }
        let loaded = dir.join(file);
        std::fs::write(&loaded, rules).unwrap();
        let o = self
            .exec(ns, &self.nft)
            .arg("-f")
            .arg(&loaded)
            .output()
            .unwrap();
        assert!(o.status.success(), "nft -f {file}: {}", output_text(&o));
    }
}

/// Reads the first line a `stampline server --json` printed: its listening event.
/// (A process started in a namespace is `ip netns exec`'s own pid: killing it kills the server.)
fn listening(mut cmd: Command) -> (Killed, Value) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Killed(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("printed {line:?}"));
    assert_eq!(v["event"], "listening", "{v}");
    (proc, v)
}

/// The `stampline` client run in the client namespace against `url`, pinning `trust`.
struct ClientNs<'a> {
    net: &'a Net,
    url: String,
    trust: PathBuf,
}

impl Cli for ClientNs<'_> {
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value) {
        let mut cmd = self.net.exec(&self.net.client, BIN);
        let o = as_client(&mut cmd, &self.url, &self.trust, user)
            .args(args)
            .output()
            .unwrap();
        last_json(&o)
    }
}

#[test]
fn a_client_buys_through_the_dmz_gateway_and_cannot_reach_the_core() {
    if !is_root() {
        return skip("not root (network namespaces and nftables need root)");
    }
    let (Some(ip), Some(nft)) = (program("ip"), program("nft")) else {
        return skip("`ip` or `nft` not installed (Debian packages iproute2, nftables)");
    };
    let net = match Net::build(ip, nft) {
        Ok(net) => net,
        Err(why) => return skip(&why),
    };
    let (client, dmz, private) = (&net.client, &net.dmz, &net.private);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("core");
    let core_addr = format!("{CORE_ADDR}:{CORE_PORT}");

    // The core, in the private namespace, on its internal address (not loopback: a sandbox core
    // needs --insecure-dev for that).
    let mut cmd = net.exec(private, BIN);
    cmd.args(["server", "--json", "--role", "core", "--listen", &core_addr])
        .args(["--insecure-dev", "--data-dir", s(&data)]);
    let (_core, core_line) = listening(cmd);
    assert_eq!(core_line["internal"], core_addr.as_str(), "{core_line}");

    // The gateway's credentials, issued on the core's machine.
    let creds = dir.path().join("gw-dmz");
    gateway_credentials(&data, "gw-dmz", &creds);

    // Something listening in the dmz on a port the rules do not open (a gateway whose core is
    // nowhere: it listens all the same).
    let mut cmd = net.exec(dmz, BIN);
    cmd.args(["server", "--json", "--role", "gateway", "--listen"])
        .arg(format!("{GATEWAY_ADDR}:{OTHER_PORT}"))
        .args(["--core", "127.0.0.1:1", "--credentials", s(&creds)]);
    let (_other, _) = listening(cmd);

    // The control: with routing alone, the client reaches the core and the dmz's other port.
    net.probe(client, CORE_ADDR, CORE_PORT, true);
    net.probe(client, GATEWAY_ADDR, OTHER_PORT, true);

    // The documented rules, with this network's addresses.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    net.load_rules(
        dmz,
        "dmz.nft",
        &[
            ("CLIENT_NET", CLIENT_NET.to_owned()),
            ("GATEWAY_ADDR", GATEWAY_ADDR.to_owned()),
            ("GATEWAY_PORT", GATEWAY_PORT.to_string()),
            ("CORE_ADDR", CORE_ADDR.to_owned()),
            ("CORE_PORT", CORE_PORT.to_string()),
        ],
        &rules,
    );
    net.load_rules(
        private,
        "private.nft",
        &[
            ("GATEWAYS", format!("{{ {DMZ_PRIVATE_ADDR} }}")),
            ("CORE_ADDR", CORE_ADDR.to_owned()),
            ("CORE_PORT", CORE_PORT.to_string()),
        ],
        &rules,
    );

    // Now the client cannot reach the core, nor the dmz's other port; the dmz reaches the core.
    net.probe(client, CORE_ADDR, CORE_PORT, false);
    net.probe(client, GATEWAY_ADDR, OTHER_PORT, false);
    net.probe(dmz, CORE_ADDR, CORE_PORT, true);

    // The gateway, started under the rules: its connection to the core is a new one they allow.
    let mut cmd = net.exec(dmz, BIN);
    cmd.args(["server", "--json", "--role", "gateway", "--listen"])
        .arg(format!("{GATEWAY_ADDR}:{GATEWAY_PORT}"))
        .args(["--core", &core_addr, "--credentials", s(&creds)])
        .args(["--beat-interval-ms", "300", "--beat-timeout-ms", "1500"]);
    let (_gateway, gw_line) = listening(cmd);
    let url = gw_line["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("https://{GATEWAY_ADDR}:{GATEWAY_PORT}"));
    net.probe(client, GATEWAY_ADDR, GATEWAY_PORT, true);

    // The client holds a copy of trust.pem (the same file the core wrote) and nothing else.
    let trust = dir.path().join("client-trust.pem");
    std::fs::copy(creds.join("trust.pem"), &trust).unwrap();
    assert_eq!(
        std::fs::read(&trust).unwrap(),
        std::fs::read(data.join("trust.pem")).unwrap()
    );
    let cli = ClientNs {
        net: &net,
        url,
        trust,
    };
    let registered = cli.ok_when_up("ann", &common::REGISTER);
    eprintln!("register through {}: {registered}", cli.url);
    let funded = cli.ok_when_up("ann", &fund_card("20.00"));
    eprintln!("fund: {funded}");
    let label = dir.path().join("label.pdf");
    let bought = cli.ok_when_up("ann", &buy_letter(&["--out", s(&label)]));
    eprintln!("buy: {bought}");
    assert_eq!(bought["printed"], true, "{bought}");
    assert!(std::fs::read(&label).unwrap().starts_with(b"%PDF"));
    let balance = cli.ok_when_up("ann", &["balance"]);
    eprintln!("balance: {balance}");
    assert_eq!(balance["balance_mills"], 20_000 - 780, "{balance}");

    // After all that traffic, still no way from the client to the core.
    net.probe(client, CORE_ADDR, CORE_PORT, false);
}
