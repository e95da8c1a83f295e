//! `--psd` values: `software` (the default) or
//! `pkcs11:module=PATH;token=LABEL;pin-env=VAR`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Passphrase, Pkcs11Config, Pkcs11Psd, Psd, PsdError, SoftwarePsd};

/// Longest `--psd` value accepted.
pub const MAX_SPEC_BYTES: usize = 4096;

/// Which crypto device to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsdSpec {
    /// Keys in the data dir, encrypted under the passphrase from the environment.
    Software,
    /// Keys in a PKCS#11 token; the PIN is read from the environment variable `pin_env`.
    Pkcs11 {
        module: PathBuf,
        token: String,
        pin_env: String,
    },
}

impl std::str::FromStr for PsdSpec {
    type Err = PsdError;

    fn from_str(text: &str) -> Result<PsdSpec, PsdError> {
        let bad = |why: &str| {
            PsdError::Config(format!(
                "--psd {why}; use \"software\" or \"pkcs11:module=PATH;token=LABEL;pin-env=VAR\""
            ))
        };
        if text.len() > MAX_SPEC_BYTES {
            return Err(bad("is too long"));
        }
        if text == "software" {
            return Ok(PsdSpec::Software);
        }
        let Some(rest) = text.strip_prefix("pkcs11:") else {
            return Err(bad(&format!("{text:?} is not a known device")));
        };
        let (mut module, mut token, mut pin_env) = (None, None, None);
        for part in rest.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(bad(&format!("part {part:?} is not KEY=VALUE")));
            };
            if v.is_empty() {
                return Err(bad(&format!("{k} is empty")));
            }
            let slot = match k {
                "module" => &mut module,
                "token" => &mut token,
                "pin-env" => &mut pin_env,
                other => return Err(bad(&format!("has an unknown key {other:?}"))),
            };
            if slot.replace(v.to_owned()).is_some() {
                return Err(bad(&format!("gives {k} twice")));
            }
        }
        match (module, token, pin_env) {
            (Some(module), Some(token), Some(pin_env)) => Ok(PsdSpec::Pkcs11 {
                module: PathBuf::from(module),
                token,
                pin_env,
            }),
            _ => Err(bad("needs module, token and pin-env")),
        }
    }
}

/// An opened device and whether it runs in the software device's development mode.
#[derive(Debug)]
pub struct OpenedDevice {
    pub psd: Arc<dyn Psd>,
    pub dev_mode: bool,
}

/// Open the device `spec` names for `data_dir`. The software device reads its passphrase from
/// the environment ([`crate::PASSPHRASE_ENV`], [`crate::PASSPHRASE_FILE_ENV`]); the PKCS#11
/// device reads its PIN from the variable the spec names. Both self-test before they return.
pub fn open_device(
    spec: &PsdSpec,
    data_dir: &Path,
    now_unix: i64,
) -> Result<OpenedDevice, PsdError> {
    match spec {
        PsdSpec::Software => {
            let pass = Passphrase::from_env()?;
            let dev_mode = pass.is_dev();
            let psd = SoftwarePsd::open(data_dir, pass, now_unix)?;
            Ok(OpenedDevice {
                psd: Arc::new(psd),
                dev_mode,
            })
        }
        PsdSpec::Pkcs11 {
            module,
            token,
            pin_env,
        } => {
            let pin = std::env::var(pin_env).map_err(|_| {
                PsdError::Config(format!(
                    "the PKCS#11 PIN variable {pin_env} is not set (--psd pin-env={pin_env})"
                ))
            })?;
            let cfg = Pkcs11Config {
                module: module.clone(),
                token: token.clone(),
                pin: zeroize::Zeroizing::new(pin),
            };
            let psd = Pkcs11Psd::open(data_dir, &cfg, now_unix)?;
            Ok(OpenedDevice {
                psd: Arc::new(psd),
                dev_mode: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn psd_values_parse_in_exactly_the_documented_form() {
        assert_eq!("software".parse::<PsdSpec>().unwrap(), PsdSpec::Software);
        assert_eq!(
            "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=stampline;pin-env=PIN"
                .parse::<PsdSpec>()
                .unwrap(),
            PsdSpec::Pkcs11 {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token: "stampline".into(),
                pin_env: "PIN".into()
            }
        );
        for bad in [
            "",
            "hsm",
            "pkcs11:",
            "pkcs11:module=/x;token=t",
            "pkcs11:module=/x;token=t;pin-env=P;pin=1234",
            "pkcs11:module=/x;token=t;pin-env=",
            "pkcs11:module=/x;module=/y;token=t;pin-env=P",
        ] {
            assert!(bad.parse::<PsdSpec>().is_err(), "{bad:?}");
        }
    }
}
