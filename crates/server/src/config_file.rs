//! The server's config file (`stampline server --config FILE`): TOML, one section per part that
//! has settings beyond the command line's flags. Today that is `[firewall]`
//! ([`crate::firewall::FirewallConfig`]; every key optional, defaults in docs/FIREWALL.md).
//! Unknown sections and keys are refused, so a misspelt limit is not silently the default.

use std::path::Path;

use serde::Deserialize;

use crate::firewall::FirewallConfig;

/// What a config file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub firewall: FirewallConfig,
}

impl ConfigFile {
    /// Parse and check a config file's text. A key the file leaves out keeps its default, at any
    /// depth (a `[firewall.logins]` that sets only the burst keeps the logins' other defaults).
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        let given: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut merged = toml::Table::new();
        merged.insert(
            "firewall".into(),
            toml::Value::try_from(FirewallConfig::default()).map_err(|e| e.to_string())?,
        );
        overlay(&mut merged, given);
        let cfg: ConfigFile = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        cfg.firewall.check()?;
        Ok(cfg)
    }

    /// Read, parse and check the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ConfigFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Lay `given` over `base`: tables merge key by key, anything else replaces.
fn overlay(base: &mut toml::Table, given: toml::Table) {
    for (key, value) in given {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => overlay(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/FIREWALL.md: every key with its default value.
    fn documented_example() -> String {
        let doc = include_str!("../../../docs/FIREWALL.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/FIREWALL.md has a toml example")
            + 8;
        let end = start + doc[start..].find("```").expect("the example ends");
        doc[start..end].to_owned()
    }

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let parsed = ConfigFile::parse(&documented_example()).unwrap();
        assert_eq!(parsed.firewall, FirewallConfig::default());
    }

    #[test]
    fn an_empty_file_is_the_defaults_and_a_partial_section_keeps_the_rest() {
        assert_eq!(ConfigFile::parse("").unwrap(), ConfigFile::default());
        let cfg = ConfigFile::parse(
            "[firewall]\nmax_body_bytes = 4096\n[firewall.public]\ndeny = [\"203.0.113.0/24\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.firewall.max_body_bytes, 4096);
        assert_eq!(
            cfg.firewall.public.deny,
            vec!["203.0.113.0/24".parse().unwrap()]
        );
        assert_eq!(cfg.firewall.logins, FirewallConfig::default().logins);
        let cfg = ConfigFile::parse("[firewall.logins]\nper_source_burst = 3\n").unwrap();
        let mut want = FirewallConfig::default().logins;
        want.per_source_burst = 3;
        assert_eq!(cfg.firewall.logins, want);
    }

    #[test]
    fn misspelt_keys_bad_networks_and_impossible_limits_are_refused() {
        assert!(ConfigFile::parse("[firewall]\nmax_body = 1\n").is_err());
        assert!(ConfigFile::parse("[firewal]\n").is_err());
        assert!(ConfigFile::parse("[firewall.public]\nallow = [\"10.0.0.0/33\"]\n").is_err());
        let err = ConfigFile::parse("[firewall]\nmax_connections_per_source = 0\n").unwrap_err();
        assert!(err.contains("max_connections_per_source"), "{err}");
    }
}
