//! The native half of the `onyx` Python package. It wraps
//! `onyx_core::Session`; values cross the boundary as small tuples that the
//! Python half (`python/onyx/__init__.py`) builds from and turns into numpy
//! arrays:
//!
//! - `("tensor", onnx_type_code, shape, data)`: `data` is a C-contiguous
//!   buffer of the elements' native-endian bytes, or a list of `str` for
//!   strings. On the way in, Onyx reads the buffer in place (no copy) for
//!   every type whose layout is its own; on the way out it is a flat numpy
//!   array that owns the output's vector (no copy either);
//! - `("seq", elem_type_code_or_0, [values])`;
//! - `("map", keys_tensor, values)`;
//! - `("opt", value_or_None)`.

// pyo3 0.22's #[pymethods] expansion converts PyResult errors into PyErr.
#![allow(clippy::useless_conversion)]

use std::path::PathBuf;
use std::sync::Arc;

use numpy::PyArray1;
use onyx_core::ir::{Dim, TypeInfo, ValueInfo};
use onyx_core::{Error, ErrorKind, Session, SessionOptions};
use onyx_tensor::{bf16, f16, Buf, DType, Data, Elem, MapValue, SharedBytes, Tensor, Value};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

create_exception!(
    onyx,
    OnyxError,
    PyException,
    "Base class of every error Onyx raises."
);
create_exception!(
    onyx,
    Fail,
    OnyxError,
    "A failure while running the model, or a limit it would exceed."
);
create_exception!(
    onyx,
    InvalidArgument,
    OnyxError,
    "The caller's inputs or arguments do not fit the model."
);
create_exception!(
    onyx,
    NoSuchFile,
    OnyxError,
    "The model file does not exist."
);
create_exception!(
    onyx,
    InvalidProtobuf,
    OnyxError,
    "The model's bytes are not a readable ONNX model."
);
create_exception!(
    onyx,
    InvalidGraph,
    OnyxError,
    "The model is structurally wrong (cycles, dangling names, bad attributes)."
);
create_exception!(
    onyx,
    NotImplemented,
    OnyxError,
    "The model uses something Onyx does not implement."
);

fn to_py_err(e: Error) -> PyErr {
    let msg = e.message;
    match e.kind {
        ErrorKind::Format => InvalidProtobuf::new_err(msg),
        ErrorKind::InvalidGraph => InvalidGraph::new_err(msg),
        ErrorKind::NotImplemented => NotImplemented::new_err(msg),
        ErrorKind::InvalidArgument => InvalidArgument::new_err(msg),
        ErrorKind::LimitExceeded | ErrorKind::Runtime => Fail::new_err(msg),
    }
}

/// A compiled model. Immutable, so one session serves many Python threads;
/// `run` releases the GIL while the model runs.
#[pyclass(frozen, module = "onyx._onyx")]
struct NativeSession {
    inner: Session,
}

fn dim_to_py(py: Python<'_>, d: &Dim) -> PyObject {
    match d {
        Dim::Fixed(n) => n.into_py(py),
        Dim::Symbolic(s) => s.into_py(py),
        Dim::Unknown => py.None(),
    }
}

/// `(name, type string, shape)` for each value; the shape is empty for
/// non-tensors and tensors of unknown rank.
fn describe(py: Python<'_>, infos: Vec<&ValueInfo>) -> Vec<(String, String, PyObject)> {
    infos
        .into_iter()
        .map(|info| {
            let ty = info
                .ty
                .as_ref()
                .map(|t| t.type_string())
                .unwrap_or_else(|| "undefined".to_string());
            let dims: Vec<PyObject> = match &info.ty {
                Some(TypeInfo::Tensor {
                    shape: Some(dims), ..
                }) => dims.iter().map(|d| dim_to_py(py, d)).collect(),
                _ => Vec::new(),
            };
            (
                info.name.clone(),
                ty,
                PyList::new_bound(py, dims).into_any().unbind(),
            )
        })
        .collect()
}

#[pymethods]
impl NativeSession {
    /// Loads a model from a path (str or os.PathLike) or from `bytes`; a
    /// run splits its operators across `threads` threads (0: one per
    /// physical core); `opt_level` is disabled, basic, extended or all;
    /// `optimized_model_path`, when given, is where the model as rewritten
    /// by the optimisations is saved.
    #[new]
    #[pyo3(signature = (model, threads = 0, opt_level = "all", optimized_model_path = None))]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        threads: usize,
        opt_level: &str,
        optimized_model_path: Option<PathBuf>,
    ) -> PyResult<Self> {
        let options = SessionOptions {
            threads,
            opt_level: opt_level.parse().map_err(InvalidArgument::new_err)?,
            optimized_model_path,
            ..SessionOptions::default()
        };
        let session = if let Ok(b) = model.downcast::<PyBytes>() {
            let bytes = b.as_bytes().to_vec();
            py.allow_threads(|| Session::from_bytes(&bytes, options))
        } else {
            let path: PathBuf = model.extract().map_err(|_| {
                InvalidArgument::new_err(format!(
                    "a model is given as a path or bytes, not {}",
                    model
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
            if !path.is_file() {
                return Err(NoSuchFile::new_err(format!(
                    "no such model file: '{}'",
                    path.display()
                )));
            }
            py.allow_threads(|| Session::from_file(&path, options))
        }
        .map_err(to_py_err)?;
        Ok(NativeSession { inner: session })
    }

    fn inputs(&self, py: Python<'_>) -> Vec<(String, String, PyObject)> {
        describe(py, self.inner.inputs())
    }

    fn outputs(&self, py: Python<'_>) -> Vec<(String, String, PyObject)> {
        describe(py, self.inner.outputs())
    }

    fn overridable_initializers(&self, py: Python<'_>) -> Vec<(String, String, PyObject)> {
        describe(py, self.inner.overridable_initializers())
    }

    /// The model's metadata as a dict.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.inner.model();
        let d = PyDict::new_bound(py);
        d.set_item("producer_name", &m.producer_name)?;
        d.set_item("producer_version", &m.producer_version)?;
        d.set_item("graph_name", &m.graph.name)?;
        d.set_item("domain", &m.domain)?;
        d.set_item("description", &m.doc_string)?;
        d.set_item("version", m.model_version)?;
        d.set_item("ir_version", m.ir_version)?;
        let custom = PyDict::new_bound(py);
        for (k, v) in &m.metadata {
            custom.set_item(k, v)?;
        }
        d.set_item("custom_metadata_map", custom)?;
        let opsets = PyDict::new_bound(py);
        for (k, v) in &m.opsets {
            opsets.set_item(k, v)?;
        }
        d.set_item("opsets", opsets)?;
        Ok(d)
    }

    /// Runs the model on `feeds` (a list of `(name, value)`); returns the
    /// outputs at `wanted` (graph output positions), or all of them.
    #[pyo3(signature = (feeds, wanted=None))]
    fn run(
        &self,
        py: Python<'_>,
        feeds: Vec<(String, Bound<'_, PyAny>)>,
        wanted: Option<Vec<usize>>,
    ) -> PyResult<Vec<PyObject>> {
        let n_outputs = self.inner.outputs().len();
        if let Some(w) = &wanted {
            if let Some(bad) = w.iter().find(|&&i| i >= n_outputs) {
                return Err(InvalidArgument::new_err(format!(
                    "output index {bad} is out of range; the model has {n_outputs} outputs"
                )));
            }
        }
        let mut values = Vec::with_capacity(feeds.len());
        for (name, obj) in feeds {
            let v = value_from_py(&name, &obj)?;
            values.push((name, v));
        }
        let session = &self.inner;
        let outputs = py
            .allow_threads(move || session.run(values))
            .map_err(to_py_err)?;
        let mut slots: Vec<Option<Value>> = outputs.into_iter().map(Some).collect();
        let picked: Vec<usize> = wanted.unwrap_or_else(|| (0..n_outputs).collect());
        picked
            .into_iter()
            .map(|i| {
                // An output asked for twice was taken by the first request.
                let v = slots[i].take().ok_or_else(|| {
                    InvalidArgument::new_err(format!(
                        "output '{}' is asked for more than once",
                        self.inner.outputs()[i].name
                    ))
                })?;
                value_to_py(py, v)
            })
            .collect()
    }

    /// Like `run`, with inputs and outputs kept as Onyx values, so a value
    /// can feed many runs (or the next model) without passing through numpy.
    #[pyo3(signature = (feeds, wanted=None))]
    fn run_values(
        &self,
        py: Python<'_>,
        feeds: Vec<(String, Py<NativeValue>)>,
        wanted: Option<Vec<usize>>,
    ) -> PyResult<Vec<NativeValue>> {
        let n_outputs = self.inner.outputs().len();
        let picked: Vec<usize> = wanted.unwrap_or_else(|| (0..n_outputs).collect());
        if let Some(bad) = picked.iter().find(|&&i| i >= n_outputs) {
            return Err(InvalidArgument::new_err(format!(
                "output index {bad} is out of range; the model has {n_outputs} outputs"
            )));
        }
        let values: Vec<(String, Value)> = feeds
            .into_iter()
            .map(|(n, v)| (n, v.get().value.clone()))
            .collect();
        let session = &self.inner;
        let outputs = py
            .allow_threads(move || session.run(values))
            .map_err(to_py_err)?;
        Ok(picked
            .into_iter()
            .map(|i| NativeValue {
                value: outputs[i].clone(),
            })
            .collect())
    }
}

/// A value held on the Onyx side (a tensor, sequence, map or optional).
#[pyclass(frozen, module = "onyx._onyx")]
struct NativeValue {
    value: Value,
}

#[pymethods]
impl NativeValue {
    /// Builds a value from its encoded tuple.
    #[new]
    fn new(encoded: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(NativeValue {
            value: value_from_py("value", encoded)?,
        })
    }

    /// The value as an encoded tuple (a copy).
    fn encoded(&self, py: Python<'_>) -> PyResult<PyObject> {
        value_to_py(py, self.value.clone())
    }

    /// `tensor(float)`, `seq(tensor(int64))`, ...
    fn kind(&self) -> String {
        self.value.kind()
    }

    /// The shape of a tensor; None for other values.
    fn shape(&self) -> Option<Vec<usize>> {
        self.value.as_tensor().map(|t| t.shape().to_vec())
    }
}

fn bad_value(name: &str, what: impl std::fmt::Display) -> PyErr {
    InvalidArgument::new_err(format!("input '{name}': {what}"))
}

/// A contiguous Python buffer (a numpy array's memory) that tensors read
/// in place for as long as they hold it.
struct ArrayMemory(PyBuffer<u8>);

impl SharedBytes for ArrayMemory {
    fn bytes(&self) -> &[u8] {
        let len = self.0.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the PyBuffer holds the exporting object, whose memory stays
        // allocated and in place until the buffer is released when this is
        // dropped; it is C-contiguous (checked when made) and `len` bytes
        // long. Onyx only reads it. Python code that writes to the array
        // while a run reads it races with the run, as with onnxruntime's
        // borrowed inputs.
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr() as *const u8, len) }
    }
}

/// Splits native-endian bytes into elements of `N` bytes each.
fn from_ne<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// The bytes as elements of `T`: read in place when they are aligned for
/// `T` (numpy's own allocations always are), otherwise decoded by `copy`.
fn borrow_or_copy<T: Elem>(
    memory: &Arc<dyn SharedBytes>,
    copy: impl Fn(&[u8]) -> Vec<T>,
) -> Buf<T> {
    let len = memory.bytes().len() / std::mem::size_of::<T>();
    Buf::view(Arc::clone(memory), 0, len).unwrap_or_else(|| copy(memory.bytes()).into())
}

/// Reads a buffer of native-endian elements of `dtype`, in place where the
/// layout is Onyx's own.
fn data_from_bytes(name: &str, dtype: DType, memory: &Arc<dyn SharedBytes>) -> PyResult<Data> {
    let size = match dtype {
        DType::Complex64 | DType::Complex128 | DType::String => {
            return Err(NotImplemented::new_err(format!(
                "input '{name}': element type {dtype} cannot be fed as bytes"
            )))
        }
        d if d.is_minifloat() => 1,
        d => d.size_in_memory().max(1),
    };
    let b = memory.bytes();
    if !b.len().is_multiple_of(size) {
        return Err(bad_value(
            name,
            format!(
                "{} bytes do not divide into {dtype} elements of {size} bytes",
                b.len()
            ),
        ));
    }
    Ok(match dtype {
        DType::Float => Data::F32(borrow_or_copy(memory, |b| from_ne(b, f32::from_ne_bytes))),
        DType::Double => Data::F64(borrow_or_copy(memory, |b| from_ne(b, f64::from_ne_bytes))),
        DType::Float16 => Data::F16(borrow_or_copy(memory, |b| {
            from_ne(b, |a| f16::from_bits(u16::from_ne_bytes(a)))
        })),
        DType::BFloat16 => Data::BF16(borrow_or_copy(memory, |b| {
            from_ne(b, |a| bf16::from_bits(u16::from_ne_bytes(a)))
        })),
        DType::Int8 => Data::I8(borrow_or_copy(memory, |b| from_ne(b, i8::from_ne_bytes))),
        // ml_dtypes keeps int4/int2 in the low bits of a byte; Onyx keeps
        // them sign-extended.
        DType::Int4 => Data::I8(b.iter().map(|&x| ((x << 4) as i8) >> 4).collect()),
        DType::Int2 => Data::I8(b.iter().map(|&x| ((x << 6) as i8) >> 6).collect()),
        DType::Uint4 => Data::U8(b.iter().map(|&x| x & 0x0f).collect()),
        DType::Uint2 => Data::U8(b.iter().map(|&x| x & 0x03).collect()),
        DType::Int16 => Data::I16(borrow_or_copy(memory, |b| from_ne(b, i16::from_ne_bytes))),
        DType::Int32 => Data::I32(borrow_or_copy(memory, |b| from_ne(b, i32::from_ne_bytes))),
        DType::Int64 => Data::I64(borrow_or_copy(memory, |b| from_ne(b, i64::from_ne_bytes))),
        DType::Uint16 => Data::U16(borrow_or_copy(memory, |b| from_ne(b, u16::from_ne_bytes))),
        DType::Uint32 => Data::U32(borrow_or_copy(memory, |b| from_ne(b, u32::from_ne_bytes))),
        DType::Uint64 => Data::U64(borrow_or_copy(memory, |b| from_ne(b, u64::from_ne_bytes))),
        // numpy's bool is a byte that may hold any value; Onyx's must be 0 or 1.
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        // uint8 and the minifloats: one byte per element.
        _ => Data::U8(borrow_or_copy(memory, <[u8]>::to_vec)),
    })
}

fn tensor_from_py(name: &str, t: &Bound<'_, PyTuple>) -> PyResult<Tensor> {
    let code: i32 = t.get_item(1)?.extract()?;
    let shape: Vec<usize> = t.get_item(2)?.extract()?;
    let dtype = DType::from_onnx(code)
        .ok_or_else(|| bad_value(name, format!("unknown element type code {code}")))?;
    let payload = t.get_item(3)?;
    let data = if dtype == DType::String {
        let items: Vec<String> = payload
            .extract()
            .map_err(|_| bad_value(name, "string tensors must hold only str elements"))?;
        Data::Str(items.into())
    } else {
        let buf = PyBuffer::<u8>::get_bound(&payload)
            .map_err(|e| bad_value(name, format!("not a byte buffer: {e}")))?;
        if !buf.is_c_contiguous() {
            return Err(bad_value(name, "the buffer is not contiguous"));
        }
        let memory: Arc<dyn SharedBytes> = Arc::new(ArrayMemory(buf));
        data_from_bytes(name, dtype, &memory)?
    };
    Tensor::new(dtype, shape, data).map_err(|e| bad_value(name, e))
}

fn value_from_py(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let t = obj
        .downcast::<PyTuple>()
        .map_err(|_| bad_value(name, "not an encoded value"))?;
    let kind: String = t.get_item(0)?.extract()?;
    match kind.as_str() {
        "tensor" => Ok(Value::Tensor(tensor_from_py(name, t)?)),
        "seq" => {
            let code: i32 = t.get_item(1)?.extract()?;
            let items: Vec<Bound<'_, PyAny>> = t.get_item(2)?.extract()?;
            let items = items
                .iter()
                .map(|i| value_from_py(name, i))
                .collect::<PyResult<Vec<_>>>()?;
            let elem_dtype = DType::from_onnx(code)
                .or_else(|| items.first().and_then(|v| v.as_tensor()).map(|t| t.dtype()));
            Ok(Value::Sequence { elem_dtype, items })
        }
        "map" => {
            let keys = t.get_item(1)?;
            let keys = keys
                .downcast::<PyTuple>()
                .map_err(|_| bad_value(name, "map keys are not an encoded tensor"))?;
            let keys = tensor_from_py(name, keys)?;
            let values = value_from_py(name, &t.get_item(2)?)?;
            Ok(Value::Map(MapValue {
                keys,
                values: Box::new(values),
            }))
        }
        "opt" => {
            let inner = t.get_item(1)?;
            if inner.is_none() {
                Ok(Value::Optional(None))
            } else {
                Ok(Value::Optional(Some(Box::new(value_from_py(
                    name, &inner,
                )?))))
            }
        }
        other => Err(bad_value(name, format!("unknown value kind '{other}'"))),
    }
}

/// A flat numpy array that takes over the vector (copied only when the
/// elements are a view of memory Onyx does not own, such as an input).
fn numpy_from<T: Elem + numpy::Element>(py: Python<'_>, b: Buf<T>) -> PyObject {
    PyArray1::from_vec_bound(py, b.into_vec())
        .into_any()
        .unbind()
}

/// Half floats go to numpy as their 16-bit patterns; the Python half views
/// them as float16 or ml_dtypes' bfloat16.
fn numpy_bits<T: Elem + bytemuck::Pod>(py: Python<'_>, b: Buf<T>) -> PyObject {
    let bits: Vec<u16> = bytemuck::allocation::cast_vec(b.into_vec());
    PyArray1::from_vec_bound(py, bits).into_any().unbind()
}

fn tensor_to_py(py: Python<'_>, t: Tensor) -> PyResult<PyObject> {
    let (dtype, shape, data) = t.into_parts();
    let payload: PyObject = match data {
        Data::Str(v) => PyList::new_bound(py, v.into_vec()).into_any().unbind(),
        Data::F32(v) => numpy_from(py, v),
        Data::F64(v) => numpy_from(py, v),
        Data::F16(v) => numpy_bits(py, v),
        Data::BF16(v) => numpy_bits(py, v),
        Data::I8(v) => numpy_from(py, v),
        Data::I16(v) => numpy_from(py, v),
        Data::I32(v) => numpy_from(py, v),
        Data::I64(v) => numpy_from(py, v),
        Data::U8(v) => numpy_from(py, v),
        Data::U16(v) => numpy_from(py, v),
        Data::U32(v) => numpy_from(py, v),
        Data::U64(v) => numpy_from(py, v),
        Data::Bool(v) => numpy_from(py, v),
    };
    Ok(("tensor", dtype.onnx_code(), shape, payload).into_py(py))
}

fn value_to_py(py: Python<'_>, v: Value) -> PyResult<PyObject> {
    Ok(match v {
        Value::Tensor(t) => tensor_to_py(py, t)?,
        Value::Sequence { elem_dtype, items } => {
            let items = items
                .into_iter()
                .map(|i| value_to_py(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            let code = elem_dtype.map(|d| d.onnx_code()).unwrap_or(0);
            ("seq", code, items).into_py(py)
        }
        Value::Map(m) => {
            let keys = tensor_to_py(py, m.keys)?;
            let values = value_to_py(py, *m.values)?;
            ("map", keys, values).into_py(py)
        }
        Value::Optional(o) => {
            let inner = match o {
                Some(v) => value_to_py(py, *v)?,
                None => py.None(),
            };
            ("opt", inner).into_py(py)
        }
    })
}

#[pymodule]
fn _onyx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeSession>()?;
    m.add_class::<NativeValue>()?;
    m.add("OnyxError", py.get_type_bound::<OnyxError>())?;
    m.add("Fail", py.get_type_bound::<Fail>())?;
    m.add("InvalidArgument", py.get_type_bound::<InvalidArgument>())?;
    m.add("NoSuchFile", py.get_type_bound::<NoSuchFile>())?;
    m.add("InvalidProtobuf", py.get_type_bound::<InvalidProtobuf>())?;
    m.add("InvalidGraph", py.get_type_bound::<InvalidGraph>())?;
    m.add("NotImplemented", py.get_type_bound::<NotImplemented>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
