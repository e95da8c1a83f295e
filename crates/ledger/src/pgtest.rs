//! Test support: a throw-away PostgreSQL database per test. Like [`crate::testsuite`] it is
//! compiled only with the `testkit` feature, which this crate's tests and other crates' tests
//! enable (as a dev-dependency feature); production code never calls it.
//!
//! The server to use is `STAMPLINE_TEST_POSTGRES` (default [`DEFAULT_ADMIN_URL`], the trust-auth
//! PostgreSQL that `.ci/run` starts). When it cannot be reached, [`TestDatabase::create`] prints
//! `skipped: PostgreSQL not available (…)` and returns `None` — unless `STAMPLINE_REQUIRE_ALL=1`,
//! when it panics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

/// Where tests find PostgreSQL unless `STAMPLINE_TEST_POSTGRES` says otherwise.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test and dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    /// Creates a database with a fresh random name, or `None` (after printing why) when
    /// PostgreSQL is not available and `STAMPLINE_REQUIRE_ALL` is not set.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let admin_url = std::env::var("STAMPLINE_TEST_POSTGRES")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let mut admin = match Client::connect(&admin_url, NoTls) {
            Ok(client) => client,
            Err(e) => {
                let why = format!("cannot connect to {admin_url}: {e}");
                if std::env::var("STAMPLINE_REQUIRE_ALL").as_deref() == Ok("1") {
                    panic!("{test}: PostgreSQL is required (STAMPLINE_REQUIRE_ALL=1): {why}");
                }
                eprintln!("skipped: PostgreSQL not available ({why})");
                return None;
            }
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "stampline_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {name}")) {
            panic!("{test}: cannot create database {name}: {e}");
        }
        let url = match admin_url.rfind('/') {
            Some(slash) if slash > "postgres://".len() => format!("{}/{name}", &admin_url[..slash]),
            _ => {
                panic!("{test}: STAMPLINE_TEST_POSTGRES must be a postgres:// URL with a database")
            }
        };
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
