//! Money: what a call costs ([`Price`], [`Usage`], [`Usd`]), how much may be spent
//! ([`BudgetLedger`]), and where it went ([`SpendTracker`]).
//!
//! Amounts are integer **nano-dollars** (`u64`, up to ≈ $18.4 billion) so they can live in
//! atomics and add exactly; `f64` appears only at the edges ([`Price`]'s per-million-token
//! rates, [`Usd::from_dollars`], [`Usd::as_dollars`]).

pub mod budget;
pub mod spend;

use std::fmt;

pub use crate::spec::price::{Price, Usage, MAX_PRICE_PER_MTOK};
pub use budget::{
    BudgetConfig, BudgetConfigError, BudgetExceeded, BudgetLedger, BudgetReservation,
    DetachedReservation,
};
pub use spend::{Savings, SpendKey, SpendLine, SpendReport, SpendTracker};

/// An amount of US dollars, as integer nano-dollars. Displays as `$x.xxxx` (use `{:.N}` for
/// N decimals, up to 9).
///
/// ```
/// use tollgate::exec::price::Usd;
/// let a = Usd::from_dollars(1.5)?;
/// assert_eq!(a.nanos(), 1_500_000_000);
/// assert_eq!(a.to_string(), "$1.5000");
/// assert_eq!(format!("{:.2}", Usd::from_nanos(12_345_678_901)), "$12.35");
/// # Ok::<(), tollgate::exec::price::UsdError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

/// A dollar amount that is not a finite, non-negative number within range.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("not a valid USD amount: {0} (must be finite, >= 0 and at most ~1.8e10)")]
pub struct UsdError(pub f64);

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);
    /// The largest amount.
    pub const MAX: Usd = Usd(u64::MAX);

    /// From nano-dollars.
    pub const fn from_nanos(nanos: u64) -> Usd {
        Usd(nanos)
    }

    /// From micro-dollars (saturating).
    pub const fn from_micros(micros: u64) -> Usd {
        Usd(micros.saturating_mul(1_000))
    }

    /// From dollars, rounded to the nearest nano-dollar.
    pub fn from_dollars(dollars: f64) -> Result<Usd, UsdError> {
        let n = (dollars * 1e9).round();
        if !(n >= 0.0 && n < u64::MAX as f64) {
            return Err(UsdError(dollars));
        }
        Ok(Usd(n as u64))
    }

    /// Nano-dollars.
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// Dollars as `f64` (for display and export only).
    pub fn as_dollars(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self + rhs`, saturating at [`Usd::MAX`].
    pub const fn saturating_add(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_add(rhs.0))
    }

    /// `self - rhs`, saturating at zero.
    pub const fn saturating_sub(self, rhs: Usd) -> Usd {
        Usd(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decimals = f.precision().unwrap_or(4).min(9) as u32;
        let unit = 10u64.pow(9 - decimals);
        let units = self.0 / unit + u64::from(self.0 % unit >= unit.div_ceil(2) && unit > 1);
        let scale = 10u64.pow(decimals);
        if decimals == 0 {
            write!(f, "${}", units)
        } else {
            write!(
                f,
                "${}.{:0w$}",
                units / scale,
                units % scale,
                w = decimals as usize
            )
        }
    }
}

/// A price that is negative, not finite, or above [`MAX_PRICE_PER_MTOK`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{field}: price must be finite and in [0, {MAX_PRICE_PER_MTOK}] USD per million tokens, got {value}")]
pub struct PriceError {
    /// `"input_per_mtok"` or `"output_per_mtok"`.
    pub field: &'static str,
    /// The rejected value.
    pub value: f64,
}

/// Per-token rate in pico-dollars (1e-12 USD): `$/Mtok × 1e6`, exact for prices given to
/// six decimals. Non-finite or negative rates count as zero (only reachable by building a
/// `Price` without [`Price::new`]); huge ones saturate.
#[inline]
fn pico_per_token(per_mtok: f64) -> u64 {
    // `+ 0.5` then truncate: round-half-up for the non-negative values that matter, without a
    // libm call; `as` saturates and maps NaN (and anything negative) to 0.
    (per_mtok * 1e6 + 0.5) as u64
}

impl Price {
    /// A validated price.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Result<Price, PriceError> {
        for (field, value) in [
            ("input_per_mtok", input_per_mtok),
            ("output_per_mtok", output_per_mtok),
        ] {
            if !(0.0..=MAX_PRICE_PER_MTOK).contains(&value) {
                return Err(PriceError { field, value });
            }
        }
        Ok(Price {
            input_per_mtok,
            output_per_mtok,
        })
    }

    /// What `usage` costs at this price, rounded to the nearest nano-dollar (saturating).
    ///
    /// Computed in integer pico-dollars, so it is additive up to that final rounding:
    /// `cost(a + b)` is within one nano-dollar of `cost(a) + cost(b)`.
    ///
    /// ```
    /// use tollgate::exec::price::{Price, Usage};
    /// let p = Price::new(3.0, 15.0)?;
    /// let c = p.cost(Usage { input_tokens: 1_000, output_tokens: 500 });
    /// assert_eq!(c.to_string(), "$0.0105");
    /// # Ok::<(), tollgate::exec::price::PriceError>(())
    /// ```
    #[inline]
    pub fn cost(&self, u: Usage) -> Usd {
        let (pi, po) = (
            pico_per_token(self.input_per_mtok),
            pico_per_token(self.output_per_mtok),
        );
        // Fast path in u64 (calls up to ≈ $18 million); u128 only when that would overflow.
        let fast = u.input_tokens.checked_mul(pi).and_then(|a| {
            a.checked_add(u.output_tokens.checked_mul(po)?)?
                .checked_add(500)
        });
        match fast {
            Some(pico) => Usd(pico / 1_000),
            None => {
                let pico = u128::from(u.input_tokens) * u128::from(pi)
                    + u128::from(u.output_tokens) * u128::from(po);
                Usd(u64::try_from((pico + 500) / 1_000).unwrap_or(u64::MAX))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_display_rounds() {
        assert_eq!(Usd::ZERO.to_string(), "$0.0000");
        assert_eq!(Usd::from_nanos(49_999).to_string(), "$0.0000");
        assert_eq!(Usd::from_nanos(50_000).to_string(), "$0.0001");
        assert_eq!(Usd::from_nanos(1).to_string(), "$0.0000");
        assert_eq!(format!("{:.9}", Usd::from_nanos(1)), "$0.000000001");
        assert_eq!(format!("{:.0}", Usd::from_nanos(1_500_000_000)), "$2");
        assert_eq!(Usd::MAX.to_string(), "$18446744073.7096");
    }

    #[test]
    fn usd_from_dollars_rejects_garbage() {
        for bad in [f64::NAN, f64::INFINITY, -0.5, 1e11] {
            assert!(Usd::from_dollars(bad).is_err(), "{bad}");
        }
        assert_eq!(Usd::from_dollars(0.07).unwrap().nanos(), 70_000_000);
    }

    #[test]
    fn price_validation_and_cost() {
        assert!(Price::new(f64::NAN, 1.0).is_err());
        assert_eq!(Price::new(1.0, -1.0).unwrap_err().field, "output_per_mtok");
        let p = Price::new(0.07, 0.42).unwrap();
        // 1M input tokens at $0.07 and 1M output at $0.42.
        let c = p.cost(Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
        });
        assert_eq!(c, Usd::from_nanos(490_000_000));
        // One input token: 70 nano-dollars... 0.07e-6 $ = 70 n$.
        assert_eq!(
            p.cost(Usage {
                input_tokens: 1,
                output_tokens: 0
            })
            .nanos(),
            70
        );
        // Unvalidated garbage never panics.
        let junk = Price {
            input_per_mtok: f64::NAN,
            output_per_mtok: f64::INFINITY,
        };
        let u = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
        };
        assert_eq!(junk.cost(u), Usd::MAX);
        assert_eq!(
            Price {
                input_per_mtok: -3.0,
                output_per_mtok: 0.0
            }
            .cost(u),
            Usd::ZERO
        );
    }
}
