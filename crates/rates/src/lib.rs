//! The rate engine: postage prices by mail class, weight and zone, from a versioned price table
//! (`data/rates-*.json`, with its effective date and source). Public data, no secrets, no I/O:
//! the table is compiled in. Prices are integer mills; weights are integer hundredths of an ounce.
//!
//! The zone is an approximation from the 3-digit ZIP prefixes (see [`zone`]); USPS's real zone
//! charts are per origin prefix and are not bundled.

use std::sync::OnceLock;

use serde::Deserialize;
use stampline_items::{RateCategory, Zip5};
use stampline_money::Amount;

/// The compiled-in price table.
pub const TABLE_JSON: &str = include_str!("../data/rates-2025-07-13.json");
/// Hundredths of an ounce per ounce.
pub const HUNDREDTHS_PER_OZ: u32 = 100;
/// The heaviest piece any class takes: 70 lb.
pub const MAX_WEIGHT_HUNDREDTHS: u32 = 70 * 16 * HUNDREDTHS_PER_OZ;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateError {
    #[error(
        "weight must be a positive number of ounces with at most 2 decimals, up to 1120 (70 lb)"
    )]
    BadWeight,
    #[error("{class} takes at most {max} oz")]
    TooHeavy { class: &'static str, max: String },
    #[error("price table is invalid: {0}")]
    BadTable(String),
}

impl RateError {
    pub fn code(&self) -> &'static str {
        match self {
            RateError::BadWeight => "bad_weight",
            RateError::TooHeavy { .. } => "too_heavy",
            RateError::BadTable(_) => "internal",
        }
    }
}

/// A weight in hundredths of an ounce (exact, no floats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(u32);

impl Weight {
    pub fn from_hundredths(h: u32) -> Result<Weight, RateError> {
        if h == 0 || h > MAX_WEIGHT_HUNDREDTHS {
            return Err(RateError::BadWeight);
        }
        Ok(Weight(h))
    }

    pub fn hundredths(self) -> u32 {
        self.0
    }

    /// Whole ounces, rounded up (USPS rates "each additional ounce or fraction").
    fn ounces_up(self) -> u32 {
        self.0.div_ceil(HUNDREDTHS_PER_OZ)
    }

    /// Whole pounds, rounded up.
    fn pounds_up(self) -> u32 {
        self.0.div_ceil(16 * HUNDREDTHS_PER_OZ)
    }
}

impl std::str::FromStr for Weight {
    type Err = RateError;

    /// "3.5", "13", "0.25": digits with at most two decimals.
    fn from_str(s: &str) -> Result<Weight, RateError> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 6 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (s.contains('.') && !digits(frac)) || frac.len() > 2 {
            return Err(RateError::BadWeight);
        }
        let whole: u32 = whole.parse().map_err(|_| RateError::BadWeight)?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            let f: u32 = frac.parse().map_err(|_| RateError::BadWeight)?;
            if frac.len() == 1 { f * 10 } else { f }
        };
        let h = whole
            .checked_mul(HUNDREDTHS_PER_OZ)
            .and_then(|w| w.checked_add(frac))
            .ok_or(RateError::BadWeight)?;
        Weight::from_hundredths(h)
    }
}

impl std::fmt::Display for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (w, h) = (self.0 / HUNDREDTHS_PER_OZ, self.0 % HUNDREDTHS_PER_OZ);
        if h == 0 {
            write!(f, "{w}")
        } else if h % 10 == 0 {
            write!(f, "{w}.{}", h / 10)
        } else {
            write!(f, "{w}.{h:02}")
        }
    }
}

#[derive(Debug, Deserialize)]
struct PerOunce {
    max_weight_oz: String,
    first_ounce_mills: u64,
    additional_ounce_mills: u64,
}

#[derive(Debug, Deserialize)]
struct ByPound {
    max_weight_lb: u32,
    by_pound_then_zone_mills: Vec<[u64; 9]>,
}

#[derive(Debug, Deserialize)]
struct OunceTier {
    up_to_oz: String,
    by_zone_mills: [u64; 9],
}

#[derive(Debug, Deserialize)]
struct Ground {
    max_weight_lb: u32,
    ounce_tiers: Vec<OunceTier>,
    by_pound_then_zone_mills: Vec<[u64; 9]>,
}

/// A price table.
#[derive(Debug, Deserialize)]
pub struct RateTable {
    pub version: String,
    pub effective: String,
    pub source: String,
    first_class_letter: PerOunce,
    first_class_flat: PerOunce,
    priority_mail: ByPound,
    ground_advantage: Ground,
}

/// A price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub class: RateCategory,
    pub weight: Weight,
    /// 1–9; `None` for classes not priced by zone.
    pub zone: Option<u8>,
    pub postage: Amount,
}

/// The compiled-in table, parsed and checked once.
pub fn table() -> Result<&'static RateTable, RateError> {
    static TABLE: OnceLock<Result<RateTable, RateError>> = OnceLock::new();
    TABLE
        .get_or_init(|| RateTable::parse(TABLE_JSON))
        .as_ref()
        .map_err(Clone::clone)
}

impl Clone for RateError {
    fn clone(&self) -> Self {
        match self {
            RateError::BadWeight => RateError::BadWeight,
            RateError::TooHeavy { class, max } => RateError::TooHeavy {
                class,
                max: max.clone(),
            },
            RateError::BadTable(m) => RateError::BadTable(m.clone()),
        }
    }
}

fn mills(m: u64) -> Result<Amount, RateError> {
    Amount::from_mills(m).ok_or_else(|| RateError::BadTable(format!("price {m} out of range")))
}

impl RateTable {
    /// Parse and check a table: every weight row present, prices positive and never lower for a
    /// heavier piece or a farther zone.
    pub fn parse(json: &str) -> Result<RateTable, RateError> {
        let t: RateTable =
            serde_json::from_str(json).map_err(|e| RateError::BadTable(e.to_string()))?;
        for per in [&t.first_class_letter, &t.first_class_flat] {
            per.max_weight_oz
                .parse::<Weight>()
                .map_err(|_| RateError::BadTable("max weight".into()))?;
            if per.first_ounce_mills == 0 {
                return Err(RateError::BadTable("zero price".into()));
            }
        }
        let rows_ok = |rows: &[[u64; 9]], max_lb: u32| {
            rows.len() == max_lb as usize
                && rows
                    .iter()
                    .all(|r| r[0] > 0 && r.windows(2).all(|w| w[0] <= w[1]))
                && rows
                    .windows(2)
                    .all(|p| p[0].iter().zip(p[1].iter()).all(|(a, b)| a <= b))
        };
        if !rows_ok(
            &t.priority_mail.by_pound_then_zone_mills,
            t.priority_mail.max_weight_lb,
        ) || !rows_ok(
            &t.ground_advantage.by_pound_then_zone_mills,
            t.ground_advantage.max_weight_lb,
        ) {
            return Err(RateError::BadTable(
                "zone rows must cover every pound and never decrease".into(),
            ));
        }
        let mut last = Weight(0);
        for tier in &t.ground_advantage.ounce_tiers {
            let w: Weight = tier
                .up_to_oz
                .parse()
                .map_err(|_| RateError::BadTable("tier weight".into()))?;
            if w <= last || w.0 >= 16 * HUNDREDTHS_PER_OZ {
                return Err(RateError::BadTable(
                    "ounce tiers must increase and stay under 16 oz".into(),
                ));
            }
            last = w;
        }
        Ok(t)
    }

    /// The price of one piece.
    pub fn quote(
        &self,
        class: RateCategory,
        weight: Weight,
        from: Zip5,
        to: Zip5,
    ) -> Result<Quote, RateError> {
        let too_heavy = |max: String| RateError::TooHeavy {
            class: class.class_name(),
            max,
        };
        let per_ounce = |p: &PerOunce| -> Result<Amount, RateError> {
            let max: Weight = p
                .max_weight_oz
                .parse()
                .map_err(|_| RateError::BadTable("max weight".into()))?;
            if weight > max {
                return Err(too_heavy(max.to_string()));
            }
            let extra = u64::from(weight.ounces_up().saturating_sub(1));
            mills(p.first_ounce_mills + extra * p.additional_ounce_mills)
        };
        let by_pound = |rows: &[[u64; 9]], max_lb: u32, zone: u8| -> Result<Amount, RateError> {
            let lb = weight.pounds_up();
            if lb > max_lb {
                return Err(too_heavy(format!("{}", max_lb * 16)));
            }
            let row = rows
                .get(lb as usize - 1)
                .ok_or_else(|| RateError::BadTable("row".into()))?;
            mills(row[usize::from(zone) - 1])
        };
        let (postage, zone) = match class {
            RateCategory::FirstClassLetter => (per_ounce(&self.first_class_letter)?, None),
            RateCategory::FirstClassFlat => (per_ounce(&self.first_class_flat)?, None),
            RateCategory::PriorityMail => {
                let z = zone(from, to);
                let p = &self.priority_mail;
                (
                    by_pound(&p.by_pound_then_zone_mills, p.max_weight_lb, z)?,
                    Some(z),
                )
            }
            RateCategory::GroundAdvantage => {
                let z = zone(from, to);
                let g = &self.ground_advantage;
                let tier = g
                    .ounce_tiers
                    .iter()
                    .find(|t| t.up_to_oz.parse::<Weight>().is_ok_and(|w| weight <= w));
                let price = match tier {
                    Some(t) => mills(t.by_zone_mills[usize::from(z) - 1])?,
                    None => by_pound(&g.by_pound_then_zone_mills, g.max_weight_lb, z)?,
                };
                (price, Some(z))
            }
        };
        Ok(Quote {
            class,
            weight,
            zone,
            postage,
        })
    }

    /// The least postage a piece of this class can need (its lightest weight, nearest zone).
    pub fn minimum(&self, class: RateCategory) -> Result<Amount, RateError> {
        let any = Zip5::from_value(0).map_err(|_| RateError::BadTable("zip".into()))?;
        self.quote(class, Weight(1), any, any).map(|q| q.postage)
    }
}

fn far_group(prefix: u32) -> Option<u8> {
    match prefix {
        6..=9 => Some(1),     // Puerto Rico, US Virgin Islands
        967..=968 => Some(2), // Hawaii
        969 => Some(3),       // Guam and the Pacific territories
        995..=999 => Some(4), // Alaska
        _ => None,
    }
}

/// The zone (1–9) between two ZIPs, approximated from their 3-digit prefixes: the same prefix is
/// zone 1; otherwise the zone grows with the distance between prefix numbers (which follow
/// geography roughly from east to west), and trips to or from Alaska, Hawaii and the
/// territories are zone 9. Documented in docs/DECISIONS.md as an approximation.
pub fn zone(from: Zip5, to: Zip5) -> u8 {
    let (a, b) = (from.value() / 100, to.value() / 100);
    if a == b {
        return 1;
    }
    if far_group(a) != far_group(b) {
        return 9;
    }
    match a.abs_diff(b) {
        0..=5 => 2,
        6..=20 => 3,
        21..=60 => 4,
        61..=150 => 5,
        151..=300 => 6,
        301..=500 => 7,
        _ => 8,
    }
}
