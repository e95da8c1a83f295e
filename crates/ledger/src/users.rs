//! The ledger's users as its callers see them: a role, a new user's registration, the record a
//! login reads, and the login back-off per (user name, source) — its policy, one failure, and
//! what an operator is shown.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::Store;
use crate::UserId;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Everything needed to register a user and create the user's meter.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The user name as sent.
    pub user: String,
    /// Lowercase NFC form of `user`; unique.
    pub user_key: String,
    pub name: String,
    pub address: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// The user's link key, wrapped by the crypto device.
    pub wrapped_link_key: Vec<u8>,
    /// The CMLS licence, or `None` until the first funding licenses the customer.
    pub license_id: Option<String>,
    /// The meter's device id, e.g. "SL0100001234"; unique; `None` while not licensed.
    pub device_id: Option<String>,
    pub role: Role,
}

/// A stored user, as login needs it.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: UserId,
    pub user: String,
    pub user_key: String,
    /// The name and address the customer registered (what CMLS licenses).
    pub name: String,
    pub address: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub password_hash: String,
    pub wrapped_link_key: Vec<u8>,
    /// `None` until the first funding licenses the customer.
    pub device_id: Option<String>,
    pub license_id: Option<String>,
    pub role: Role,
    /// An administrator locked the account: its logins are refused until it is unlocked.
    pub locked: bool,
}

/// The login back-off: after `free_failures` failed logins for one user name from one source,
/// further attempts from that source for that name are refused for `first_ms`, doubling with
/// each further failure up to `max_ms`. A (name, source) pair with no failure for `max_ms` after
/// its back-off ended is forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub free_failures: u32,
    pub first_ms: i64,
    pub max_ms: i64,
}

impl ThrottlePolicy {
    /// How long the `failures`-th failure in a row refuses further attempts (0: not at all).
    pub fn back_off_ms(&self, failures: u32) -> i64 {
        match failures.checked_sub(self.free_failures) {
            Some(extra) => self
                .first_ms
                .saturating_mul(1_i64 << extra.min(40))
                .min(self.max_ms),
            None => 0,
        }
    }
}

/// A failed login, as [`Store::record_login_failure`] counts and logs it.
#[derive(Clone, Debug)]
pub struct LoginFailure {
    pub user_key: String,
    /// The user's id when the name is a user's.
    pub user: Option<UserId>,
    pub source: String,
    /// What the audit entry records besides (client, address, session).
    pub detail: String,
}

/// The failed logins of one user name (lowercase NFC, whether or not the user exists) from one
/// source (an address reduced to a key by the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    pub user_key: String,
    pub source: String,
    /// Failures counted in a row.
    pub failures: u32,
    /// Attempts from the source for the name are refused until then, when set.
    pub until_ms: Option<i64>,
}
