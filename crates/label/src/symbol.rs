//! Item bytes → the module grid of a square DataMatrix ECC200 symbol.
//!
//! The `datamatrix` crate does the encoding. We allow it base-256 encodation only (binary data,
//! every byte value the same cost) and no macros (a 05/06 macro would rewrite leading bytes), and
//! square sizes only. Every grid is decoded back before it is returned, so a wrong symbol never
//! leaves this module.

use datamatrix::{DataMatrix, DataMatrixBuilder, EncodationType, SymbolList};

use crate::{LabelError, MAX_DATA_BYTES};

/// The module grid of a square DataMatrix symbol, without quiet zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Modules per side.
    size: usize,
    /// Row-major, `size * size` entries, `true` = dark.
    dark: Vec<bool>,
}

impl Symbol {
    /// Modules per side (10 for the smallest symbol, 144 for the largest).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the module in column `x`, row `y` (from the top left) is dark. Outside the grid
    /// everything is light (it is quiet zone).
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        x < self.size && y < self.size && self.dark.get(y * self.size + x).copied().unwrap_or(false)
    }

    /// Runs of dark modules in row `y`, as `(first column, length)`, left to right. Renderers
    /// draw one rectangle per run instead of one per module.
    pub(crate) fn dark_runs(&self, y: usize) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut x = 0;
        while x < self.size {
            if self.is_dark(x, y) {
                let start = x;
                while x < self.size && self.is_dark(x, y) {
                    x += 1;
                }
                runs.push((start, x - start));
            } else {
                x += 1;
            }
        }
        runs
    }
}

/// The module grid of a square DataMatrix ECC200 symbol holding `data` exactly (base-256
/// encodation), with no quiet zone. The smallest square size that fits is chosen: 126 bytes (a
/// postage item) give 44×44.
///
/// # Errors
/// [`LabelError::DataTooLarge`] above [`MAX_DATA_BYTES`]; [`LabelError::Render`] if the symbol
/// does not decode back to `data` (an encoder fault, never expected).
pub fn datamatrix(data: &[u8]) -> Result<Symbol, LabelError> {
    let too_large = LabelError::DataTooLarge {
        len: data.len(),
        max: MAX_DATA_BYTES,
    };
    if data.len() > MAX_DATA_BYTES {
        return Err(too_large);
    }
    let code = DataMatrixBuilder::new()
        .with_encodation_types(EncodationType::Base256)
        .with_macros(false)
        .with_symbol_list(SymbolList::default().enforce_square())
        .encode(data)
        .map_err(|_| too_large)?;
    let bitmap = code.bitmap();
    let size = bitmap.width();
    if size == 0 || bitmap.height() != size {
        return Err(LabelError::Render(format!(
            "encoder returned a {}x{} symbol, expected a square",
            bitmap.width(),
            bitmap.height()
        )));
    }
    let mut dark = vec![false; size * size];
    for (x, y) in bitmap.pixels() {
        if let Some(module) = dark.get_mut(y * size + x) {
            *module = true;
        }
    }
    // Check the other side of the invariant: the grid we hand out reads back as `data`.
    match DataMatrix::decode(&dark, size) {
        Ok(back) if back == data => Ok(Symbol { size, dark }),
        Ok(_) => Err(LabelError::Render(
            "symbol decodes to different bytes".to_owned(),
        )),
        Err(e) => Err(LabelError::Render(format!("symbol does not decode: {e:?}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn the_named_limit_is_exactly_what_the_largest_square_symbol_holds() {
        let encode = |len: usize| {
            DataMatrixBuilder::new()
                .with_encodation_types(EncodationType::Base256)
                .with_macros(false)
                .with_symbol_list(SymbolList::default().enforce_square())
                .encode(&vec![0x5A; len])
        };
        assert!(encode(MAX_DATA_BYTES).is_ok());
        assert!(encode(MAX_DATA_BYTES + 1).is_err());
    }

    #[test]
    fn dark_runs_cover_exactly_the_dark_modules() {
        let symbol = datamatrix(b"runs").unwrap();
        for y in 0..symbol.size() {
            let mut row = vec![false; symbol.size()];
            for (start, len) in symbol.dark_runs(y) {
                assert!(len > 0);
                for module in &mut row[start..start + len] {
                    *module = true;
                }
            }
            let expected: Vec<bool> = (0..symbol.size()).map(|x| symbol.is_dark(x, y)).collect();
            assert_eq!(row, expected, "row {y}");
        }
    }
}
