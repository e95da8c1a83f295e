//! `stampline admin …`: `create` and the gateway commands work on the server's machine (data dir
//! and crypto device); the others log in over the link as a user with the admin role.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::json;
use stampline_psd::PsdSpec;
use stampline_sandbox::{SandboxBank, SandboxCmls};
use stampline_server::core::{Core, CoreConfig};
use stampline_server::database::{Database, open_store};
use stampline_wire::Op;
use stampline_wire::replies::{
    AdminKeysReply, AdminKickReply, AdminLinksReply, AdminRevokeKeyReply, AdminRotateKeyReply,
    AdminThrottlesReply, AdminUnlockReply,
};

use crate::args::{AdminArgs, AdminCommand, Global};
use crate::client_cmds::{connect, password, user};
use crate::output::{CliError, Out};

/// Longest revocation reason (the device's limit).
pub const MAX_REASON_BYTES: usize = stampline_psd::MAX_REASON_BYTES;

pub async fn admin(global: &Global, a: AdminArgs, out: Out) -> Result<(), CliError> {
    match a.command {
        AdminCommand::Reconcile(ext) => crate::external::reconcile(ext, out).await,
        AdminCommand::ReportUsage(r) => crate::external::report_usage(r, out).await,
        AdminCommand::Create { data_dir, psd } => {
            let user = user(global)?;
            let password = password()?;
            let spec: PsdSpec = psd
                .as_deref()
                .unwrap_or("software")
                .parse()
                .map_err(|e: stampline_psd::PsdError| CliError::new(e.code(), e.to_string()))?;
            let u = user.clone();
            tokio::task::spawn_blocking(move || create(&data_dir, &spec, &u, &password))
                .await
                .map_err(|e| CliError::new("internal", e.to_string()))??;
            out.done(
                &json!({"user": user, "role": "admin"}),
                &format!("admin {user} created"),
            );
            Ok(())
        }
        AdminCommand::GatewayCredentials {
            data_dir,
            psd,
            name,
            out: dir,
            hostname,
        } => crate::gateway_cmds::credentials(data_dir, psd, name, dir, hostname, out).await,
        AdminCommand::GatewayRevoke { name, data_dir } => {
            crate::gateway_cmds::revoke(data_dir, name, out).await
        }
        AdminCommand::Gateways { data_dir } => crate::gateway_cmds::list(data_dir, out).await,
        AdminCommand::Keys => {
            let v: AdminKeysReply = request(global, Op::AdminKeys {}).await?;
            let mut human = String::new();
            for k in &v.keys {
                human.push_str(&format!(
                    "{}  {:8}  from {}  until {}{}\n",
                    k.key_id,
                    k.status,
                    k.valid_from.as_deref().unwrap_or(""),
                    k.valid_until.as_deref().unwrap_or("-"),
                    k.revocation_reason
                        .as_deref()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default()
                ));
            }
            out.reply(&v, human.trim_end());
            Ok(())
        }
        AdminCommand::RotateKey => {
            let v: AdminRotateKeyReply = request(global, Op::AdminRotateKey {}).await?;
            let human = format!(
                "new signing key {}; key {} retired, its items stay valid until {}",
                v.key_id,
                v.old_key.key_id,
                v.old_key.valid_until.as_deref().unwrap_or("")
            );
            out.reply(&v, &human);
            Ok(())
        }
        AdminCommand::RevokeKey { key_id, reason } => {
            if reason.len() > MAX_REASON_BYTES {
                return Err(CliError::new(
                    "bad_request",
                    format!("--reason is over {MAX_REASON_BYTES} bytes"),
                ));
            }
            let v: AdminRevokeKeyReply =
                request(global, Op::AdminRevokeKey { key_id, reason }).await?;
            let human = format!(
                "signing key {} revoked at {}: {}",
                v.key_id,
                v.key.revoked_at.as_deref().unwrap_or(""),
                v.key.revocation_reason.as_deref().unwrap_or("")
            );
            out.reply(&v, &human);
            Ok(())
        }
        AdminCommand::Throttles => {
            let v: AdminThrottlesReply = request(global, Op::AdminThrottles {}).await?;
            let mut human = String::from("user  source  failures  refused until");
            for t in &v.throttles {
                let until = t
                    .until_ms
                    .and_then(|ms| stampline_server::core::rfc3339(ms.div_euclid(1000)))
                    .unwrap_or_else(|| "-".into());
                human.push_str(&format!(
                    "\n{}  {}  {}  {until}",
                    t.user, t.source, t.failures
                ));
            }
            out.reply(&v, &human);
            Ok(())
        }
        AdminCommand::Links => {
            let v: AdminLinksReply = request(global, Op::AdminLinks {}).await?;
            let mut human = String::from(
                "session  user  client  platform  address  since  last beat  rtt  issued",
            );
            for l in &v.links {
                human.push_str(&format!(
                    "\n{}  {}  {}  {}  {}  {}  {}  {}  {}",
                    l.session,
                    l.user,
                    l.client,
                    l.platform.as_deref().unwrap_or("-"),
                    l.address,
                    l.linked_since,
                    l.last_beat.as_deref().unwrap_or("-"),
                    l.round_trip_ms
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
                    l.issued
                ));
            }
            out.reply(&v, &human);
            Ok(())
        }
        AdminCommand::Kick { target } => {
            let op = if uuid::Uuid::parse_str(&target).is_ok() {
                Op::AdminKick {
                    session: Some(target),
                    user: None,
                }
            } else {
                Op::AdminKick {
                    session: None,
                    user: Some(target),
                }
            };
            let v: AdminKickReply = request(global, op).await?;
            let human = format!("{} link(s) ending", v.ended.len());
            out.reply(&v, &human);
            Ok(())
        }
        AdminCommand::Lock { name } => {
            let v: AdminKickReply = request(global, Op::AdminLock { user: name.clone() }).await?;
            let human = format!("{name} is locked; {} link(s) ending", v.ended.len());
            out.reply(&v, &human);
            Ok(())
        }
        AdminCommand::Unlock { name } => {
            let v: AdminUnlockReply = request(global, Op::AdminUnlock { user: name }).await?;
            let human = format!(
                "cleared {} login back-off{} of {}",
                v.cleared,
                if v.cleared == 1 { "" } else { "s" },
                v.user
            );
            out.reply(&v, &human);
            Ok(())
        }
    }
}

/// One admin request over a fresh link, its answer typed.
async fn request<T: DeserializeOwned>(global: &Global, op: Op) -> Result<T, CliError> {
    let client = connect(global).await?;
    let result = match client.call(op).await {
        Err(e @ stampline_client::ClientError::Link(_)) => return Err(e.into()),
        other => other,
    };
    let _ = client.bye().await;
    Ok(result?)
}

fn create(
    data_dir: &std::path::Path,
    spec: &PsdSpec,
    user: &str,
    password: &str,
) -> Result<(), CliError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| CliError::new("bad_data_dir", format!("{}: {e}", data_dir.display())))?;
    let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
    let device = stampline_psd::open_device(spec, data_dir, now_unix)
        .map_err(|e| CliError::new(e.code(), format!("crypto device: {e}")))?;
    // Sealed by the same device as the server's store, so the admin's meter seal holds there.
    let store = open_store(&Database::Sqlite, data_dir, Some(Arc::clone(&device.psd)))
        .map_err(|e| CliError::new("ledger", format!("{e:#}")))?;
    // Admin creation touches neither CMLS nor the bank: in-memory stand-ins fill the seats.
    let cmls = SandboxCmls::open(None).map_err(|e| CliError::new("internal", e.to_string()))?;
    let bank = SandboxBank::open(None).map_err(|e| CliError::new("internal", e.to_string()))?;
    let core = Core::new(
        store,
        device.psd,
        Arc::new(cmls),
        Arc::new(bank),
        CoreConfig::default(),
    )
    .map_err(|e| CliError::new(e.code(), e.public_message()))?;
    core.create_admin(user, password)
        .map_err(|e| CliError::new(e.code(), e.public_message()))
}
