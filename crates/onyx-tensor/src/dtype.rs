use std::fmt;

/// Every ONNX tensor element type, numbered as `TensorProto.DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    String,
    Bool,
    Float16,
    Double,
    Uint32,
    Uint64,
    Complex64,
    Complex128,
    BFloat16,
    Float8E4M3FN,
    Float8E4M3FNUZ,
    Float8E5M2,
    Float8E5M2FNUZ,
    Uint4,
    Int4,
    Float4E2M1,
    Float8E8M0,
    Uint2,
    Int2,
}

const ALL: [(DType, i32, &str); 26] = [
    (DType::Float, 1, "float"),
    (DType::Uint8, 2, "uint8"),
    (DType::Int8, 3, "int8"),
    (DType::Uint16, 4, "uint16"),
    (DType::Int16, 5, "int16"),
    (DType::Int32, 6, "int32"),
    (DType::Int64, 7, "int64"),
    (DType::String, 8, "string"),
    (DType::Bool, 9, "bool"),
    (DType::Float16, 10, "float16"),
    (DType::Double, 11, "double"),
    (DType::Uint32, 12, "uint32"),
    (DType::Uint64, 13, "uint64"),
    (DType::Complex64, 14, "complex64"),
    (DType::Complex128, 15, "complex128"),
    (DType::BFloat16, 16, "bfloat16"),
    (DType::Float8E4M3FN, 17, "float8e4m3fn"),
    (DType::Float8E4M3FNUZ, 18, "float8e4m3fnuz"),
    (DType::Float8E5M2, 19, "float8e5m2"),
    (DType::Float8E5M2FNUZ, 20, "float8e5m2fnuz"),
    (DType::Uint4, 21, "uint4"),
    (DType::Int4, 22, "int4"),
    (DType::Float4E2M1, 23, "float4e2m1"),
    (DType::Float8E8M0, 24, "float8e8m0"),
    (DType::Uint2, 25, "uint2"),
    (DType::Int2, 26, "int2"),
];

impl DType {
    /// The type for a `TensorProto.DataType` number, if it names one.
    pub fn from_onnx(code: i32) -> Option<DType> {
        ALL.iter().find(|(_, c, _)| *c == code).map(|(d, _, _)| *d)
    }

    /// The `TensorProto.DataType` number.
    pub fn onnx_code(self) -> i32 {
        ALL.iter()
            .find(|(d, _, _)| *d == self)
            .map(|(_, c, _)| *c)
            .unwrap_or(0)
    }

    /// The lower-case name ONNX uses in type strings such as `tensor(float)`.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(d, _, _)| *d == self)
            .map(|(_, _, n)| *n)
            .unwrap_or("undefined")
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float
                | DType::Double
                | DType::Float16
                | DType::BFloat16
                | DType::Float8E4M3FN
                | DType::Float8E4M3FNUZ
                | DType::Float8E5M2
                | DType::Float8E5M2FNUZ
                | DType::Float4E2M1
                | DType::Float8E8M0
        )
    }

    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64 | DType::Int4 | DType::Int2
        )
    }

    pub fn is_unsigned_int(self) -> bool {
        matches!(
            self,
            DType::Uint8
                | DType::Uint16
                | DType::Uint32
                | DType::Uint64
                | DType::Uint4
                | DType::Uint2
        )
    }

    /// Types held one element per byte as a bit pattern (see the crate docs).
    pub fn is_minifloat(self) -> bool {
        matches!(
            self,
            DType::Float8E4M3FN
                | DType::Float8E4M3FNUZ
                | DType::Float8E5M2
                | DType::Float8E5M2FNUZ
                | DType::Float4E2M1
                | DType::Float8E8M0
        )
    }

    /// Bytes one element takes in memory here (packed types take one byte).
    pub fn size_in_memory(self) -> usize {
        match self {
            DType::Double | DType::Int64 | DType::Uint64 | DType::Complex64 => 8,
            DType::Complex128 => 16,
            DType::Float | DType::Int32 | DType::Uint32 => 4,
            DType::Float16 | DType::BFloat16 | DType::Int16 | DType::Uint16 => 2,
            DType::String => std::mem::size_of::<String>(),
            _ => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 1..=26 {
            let d = DType::from_onnx(code).unwrap();
            assert_eq!(d.onnx_code(), code);
        }
        assert_eq!(DType::from_onnx(0), None);
        assert_eq!(DType::from_onnx(27), None);
        assert_eq!(DType::Float.name(), "float");
        assert_eq!(DType::Int4.to_string(), "int4");
    }
}
