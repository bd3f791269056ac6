//! Conversions between f32 and the small float formats ONNX stores one per
//! byte: float8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ, E8M0) and float4 (E2M1).
//!
//! Decoding follows each format's definition; encoding rounds to the nearest
//! representable value, ties to an even code, and handles overflow as ONNX's
//! Cast does: with `saturate` the result clamps to the largest finite value,
//! without it the result is the format's NaN or infinity.

use crate::DType;

#[derive(Clone, Copy)]
enum Special {
    /// IEEE-like: all-ones exponent holds infinities and NaNs (E5M2).
    Ieee,
    /// "Finite": no infinities, only all-ones is NaN (E4M3FN).
    Fn,
    /// "Finite, unsigned zero": 0x80 is the single NaN (E4M3FNUZ, E5M2FNUZ).
    Fnuz,
    /// No sign, no zero, no mantissa; 0xFF is NaN (E8M0).
    E8m0,
    /// No infinities or NaNs at all (float4 E2M1).
    Finite,
}

#[derive(Clone, Copy)]
struct Format {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    special: Special,
}

impl Format {
    fn of(dtype: DType) -> Option<Format> {
        let (exp_bits, man_bits, bias, special) = match dtype {
            DType::Float8E4M3FN => (4, 3, 7, Special::Fn),
            DType::Float8E4M3FNUZ => (4, 3, 8, Special::Fnuz),
            DType::Float8E5M2 => (5, 2, 15, Special::Ieee),
            DType::Float8E5M2FNUZ => (5, 2, 16, Special::Fnuz),
            DType::Float8E8M0 => (8, 0, 127, Special::E8m0),
            DType::Float4E2M1 => (2, 1, 1, Special::Finite),
            _ => return None,
        };
        Some(Format {
            exp_bits,
            man_bits,
            bias,
            special,
        })
    }

    fn has_sign(self) -> bool {
        !matches!(self.special, Special::E8m0)
    }

    fn width(self) -> u32 {
        self.exp_bits + self.man_bits + u32::from(self.has_sign())
    }

    fn sign_bit(self) -> u8 {
        if self.has_sign() {
            1 << (self.width() - 1)
        } else {
            0
        }
    }

    fn nan_code(self) -> u8 {
        match self.special {
            Special::Ieee | Special::Fn => 0x7F,
            Special::Fnuz => 0x80,
            Special::E8m0 => 0xFF,
            // float4 has no NaN: ONNX (through ml_dtypes) stores it as -0
            Special::Finite => 0x8,
        }
    }

    fn decode(self, code: u8) -> f32 {
        let sign_bit = self.sign_bit();
        let magnitude = code & !sign_bit;
        let negative = code & sign_bit != 0;
        let exp_all_ones = (1u32 << self.exp_bits) - 1;
        let exp = u32::from(magnitude) >> self.man_bits;
        let man = u32::from(magnitude) & ((1 << self.man_bits) - 1);
        match self.special {
            Special::Fnuz if code == 0x80 => return f32::NAN,
            Special::Fn if magnitude == 0x7F => return f32::NAN,
            Special::E8m0 if code == 0xFF => return f32::NAN,
            Special::Ieee if exp == exp_all_ones => {
                let v = if man == 0 { f32::INFINITY } else { f32::NAN };
                return if negative { -v } else { v };
            }
            _ => {}
        }
        let scale = |e: i32| 2f32.powi(e);
        let value = if matches!(self.special, Special::E8m0) {
            scale(exp as i32 - self.bias)
        } else if exp == 0 {
            man as f32 / (1 << self.man_bits) as f32 * scale(1 - self.bias)
        } else {
            (1.0 + man as f32 / (1 << self.man_bits) as f32) * scale(exp as i32 - self.bias)
        };
        if negative {
            -value
        } else {
            value
        }
    }

    /// Codes of the non-negative finite values, ascending.
    fn positive_grid(self) -> Vec<(u8, f32)> {
        let count = 1u32 << (self.width() - u32::from(self.has_sign()));
        (0..count)
            .map(|c| (c as u8, self.decode(c as u8)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }

    fn encode(self, x: f32, saturate: bool) -> u8 {
        if x.is_nan() {
            return self.nan_code();
        }
        let negative = x.is_sign_negative();
        if negative && !self.has_sign() {
            return self.nan_code();
        }
        let a = x.abs();
        let grid = self.positive_grid();
        let (max_code, max) = grid[grid.len() - 1];
        let overflow = || -> Option<u8> {
            if saturate || matches!(self.special, Special::Finite) {
                Some(max_code)
            } else {
                match self.special {
                    Special::Ieee => Some(0x7C),
                    _ => None,
                }
            }
        };
        let magnitude = if a.is_infinite() {
            match self.special {
                Special::Ieee if !saturate => Some(0x7C),
                _ => overflow(),
            }
        } else if a > max {
            let step = max - grid[grid.len() - 2].1;
            let half = max + step / 2.0;
            if a < half || (a == half && max_code % 2 == 0) {
                Some(max_code)
            } else {
                overflow()
            }
        } else {
            Some(nearest(&grid, a))
        };
        let Some(magnitude) = magnitude else {
            return self.nan_code();
        };
        if magnitude == 0 && matches!(self.special, Special::Fnuz) {
            return 0;
        }
        if negative {
            magnitude | self.sign_bit()
        } else {
            magnitude
        }
    }
}

/// The grid code nearest to `a` (0 <= a <= max), ties to the even code.
fn nearest(grid: &[(u8, f32)], a: f32) -> u8 {
    let upper = grid.partition_point(|(_, v)| *v < a);
    if upper == 0 {
        return grid[0].0;
    }
    if upper == grid.len() {
        return grid[grid.len() - 1].0;
    }
    let (lo_code, lo) = grid[upper - 1];
    let (hi_code, hi) = grid[upper];
    let (dlo, dhi) = (a - lo, hi - a);
    if dlo < dhi || (dlo == dhi && lo_code % 2 == 0) {
        lo_code
    } else {
        hi_code
    }
}

/// Decodes one element of a minifloat type; `None` if `dtype` is not one.
pub fn minifloat_to_f32(dtype: DType, code: u8) -> Option<f32> {
    Format::of(dtype).map(|f| f.decode(code))
}

/// Encodes `x` into a minifloat type; `None` if `dtype` is not one.
pub fn minifloat_from_f32(dtype: DType, x: f32, saturate: bool) -> Option<u8> {
    Format::of(dtype).map(|f| f.encode(x, saturate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_values() {
        assert_eq!(minifloat_to_f32(DType::Float8E4M3FN, 0x7E), Some(448.0));
        assert_eq!(minifloat_to_f32(DType::Float8E4M3FN, 0x38), Some(1.0));
        assert_eq!(
            minifloat_to_f32(DType::Float8E4M3FN, 0x01),
            Some(2f32.powi(-9))
        );
        assert!(minifloat_to_f32(DType::Float8E4M3FN, 0xFF)
            .unwrap()
            .is_nan());
        assert_eq!(minifloat_to_f32(DType::Float8E5M2, 0x7B), Some(57344.0));
        assert_eq!(
            minifloat_to_f32(DType::Float8E5M2, 0x7C),
            Some(f32::INFINITY)
        );
        assert_eq!(minifloat_to_f32(DType::Float8E4M3FNUZ, 0x7F), Some(240.0));
        assert!(minifloat_to_f32(DType::Float8E4M3FNUZ, 0x80)
            .unwrap()
            .is_nan());
        assert_eq!(minifloat_to_f32(DType::Float8E5M2FNUZ, 0x7F), Some(57344.0));
        assert_eq!(minifloat_to_f32(DType::Float4E2M1, 0x7), Some(6.0));
        assert_eq!(minifloat_to_f32(DType::Float4E2M1, 0xF), Some(-6.0));
        assert_eq!(minifloat_to_f32(DType::Float8E8M0, 127), Some(1.0));
        assert_eq!(minifloat_to_f32(DType::Float, 0), None);
    }

    #[test]
    fn encodes_with_rounding_and_overflow() {
        let e4 = DType::Float8E4M3FN;
        assert_eq!(minifloat_from_f32(e4, 1.0, true), Some(0x38));
        assert_eq!(minifloat_from_f32(e4, -1.0, true), Some(0xB8));
        assert_eq!(minifloat_from_f32(e4, 1000.0, true), Some(0x7E));
        assert_eq!(minifloat_from_f32(e4, 1000.0, false), Some(0x7F));
        assert_eq!(minifloat_from_f32(e4, 460.0, false), Some(0x7E));
        // 1.0625 is halfway between 1.0 (code 0x38) and 1.125 (0x39): ties to even.
        assert_eq!(minifloat_from_f32(e4, 1.0625, true), Some(0x38));
        let e5 = DType::Float8E5M2;
        assert_eq!(minifloat_from_f32(e5, f32::INFINITY, false), Some(0x7C));
        assert_eq!(minifloat_from_f32(e5, f32::INFINITY, true), Some(0x7B));
        assert_eq!(
            minifloat_from_f32(DType::Float8E4M3FNUZ, -0.0, true),
            Some(0)
        );
        assert_eq!(minifloat_from_f32(DType::Float4E2M1, 5.0, true), Some(0x6));
        assert_eq!(
            minifloat_from_f32(DType::Float4E2M1, -100.0, false),
            Some(0xF)
        );
    }
}
