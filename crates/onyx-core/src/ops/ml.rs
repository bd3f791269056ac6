//! The ai.onnx.ml domain, as scikit-learn converters use it: encoders
//! (LabelEncoder, CategoryMapper, OneHotEncoder, DictVectorizer, ZipMap,
//! FeatureVectorizer), preprocessing (Binarizer, Scaler, Normalizer, Imputer,
//! ArrayFeatureExtractor), linear models, SVMs and tree ensembles.
//!
//! Models that take a batch treat a rank-1 input [C] as one row, a rank-2
//! input [N, C] as N rows, and higher ranks as [N, rest]. Scores are computed
//! in f64 and returned as float, as the specification asks.

use std::collections::HashMap;

use onyx_tensor::{DType, Data, Elem, MapValue, Tensor, Value};

use super::cast::cast_tensor;
use super::{one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

const ML: &str = "ai.onnx.ml";

// ---------------------------------------------------------------- helpers

fn ints_attr(ctx: &BuildCtx, name: &str) -> OpResult<Vec<i64>> {
    Ok(ctx.node.attr_ints(name)?.unwrap_or_default())
}

fn floats_attr(ctx: &BuildCtx, name: &str) -> OpResult<Vec<f64>> {
    Ok(ctx
        .node
        .attr_floats(name)?
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect())
}

fn strings_attr(ctx: &BuildCtx, name: &str) -> OpResult<Vec<String>> {
    Ok(ctx.node.attr_strings(name)?.unwrap_or_default())
}

fn string_attr(ctx: &BuildCtx, name: &str, default: &str) -> OpResult<String> {
    Ok(ctx
        .node
        .attr_string(name)?
        .unwrap_or_else(|| default.to_string()))
}

/// A floats attribute or its `<name>_as_tensor` form (opset 3 of the tree ensembles).
fn floats_or_tensor(ctx: &BuildCtx, name: &str) -> OpResult<Vec<f64>> {
    if let Some(t) = ctx.node.attr_tensor(&format!("{name}_as_tensor"))? {
        return Ok(t.to_f64_vec()?);
    }
    floats_attr(ctx, name)
}

/// How a batch input splits into rows: (rows, columns).
fn rows_cols(t: &Tensor) -> (usize, usize) {
    match t.shape() {
        [] => (1, 1),
        [c] => (1, *c),
        [n, rest @ ..] => (*n, onyx_tensor::numel(rest).unwrap_or(0)),
    }
}

fn f32_tensor(shape: Vec<usize>, v: &[f64]) -> OpResult<Tensor> {
    Ok(Tensor::from_vec(
        shape,
        v.iter().map(|&x| x as f32).collect(),
    )?)
}

/// A numeric input as f64 (strings are refused).
fn numeric_f64(t: &Tensor) -> OpResult<Vec<f64>> {
    if t.dtype() == DType::String {
        return Err(op_err!("input should be numeric but is a string tensor"));
    }
    Ok(t.to_f64_vec()?)
}

/// `values` (computed in f64) stored as `dtype`, with the given shape.
fn f64_as(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> OpResult<Tensor> {
    let t = Tensor::from_vec(shape, values)?;
    if dtype == DType::Double {
        Ok(t)
    } else {
        cast_tensor(&t, dtype, false)
    }
}

/// Labels as an int64 or string tensor of shape [n].
enum Labels {
    Ints(Vec<i64>),
    Strs(Vec<String>),
}

impl Labels {
    fn from_attrs(ctx: &BuildCtx, ints: &str, strs: &str) -> OpResult<Labels> {
        let i = ctx.node.attr_ints(ints)?;
        let s = ctx.node.attr_strings(strs)?;
        Ok(match (i, s) {
            (Some(i), _) if !i.is_empty() => Labels::Ints(i),
            (_, Some(s)) if !s.is_empty() => Labels::Strs(s),
            _ => Labels::Ints(vec![]),
        })
    }

    fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strs(v) => v.len(),
        }
    }

    /// The labels picked by class index (an index past the end is an error).
    fn pick(&self, idx: &[usize]) -> OpResult<Tensor> {
        let bad = |i: usize| op_err!("class index {i} is out of range for {} labels", self.len());
        Ok(match self {
            Labels::Ints(v) => Tensor::from_vec(
                vec![idx.len()],
                idx.iter()
                    .map(|&i| v.get(i).copied().ok_or_else(|| bad(i)))
                    .collect::<OpResult<Vec<i64>>>()?,
            )?,
            Labels::Strs(v) => Tensor::from_vec(
                vec![idx.len()],
                idx.iter()
                    .map(|&i| v.get(i).cloned().ok_or_else(|| bad(i)))
                    .collect::<OpResult<Vec<String>>>()?,
            )?,
        })
    }

    fn as_tensor(&self) -> OpResult<Tensor> {
        Ok(match self {
            Labels::Ints(v) => Tensor::from_vec(vec![v.len()], v.clone())?,
            Labels::Strs(v) => Tensor::from_vec(vec![v.len()], v.clone())?,
        })
    }
}

/// The index of the largest value (the first one on ties).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

// --------------------------------------------------------- post transforms

#[derive(Clone, Copy, Debug, PartialEq)]
enum Post {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl Post {
    fn parse(s: &str) -> OpResult<Post> {
        Ok(match s {
            "NONE" => Post::None,
            "SOFTMAX" => Post::Softmax,
            "LOGISTIC" => Post::Logistic,
            "SOFTMAX_ZERO" => Post::SoftmaxZero,
            "PROBIT" => Post::Probit,
            other => return Err(op_err!("unknown post_transform '{other}'")),
        })
    }

    fn from_attr(ctx: &BuildCtx) -> OpResult<Post> {
        Post::parse(&string_attr(ctx, "post_transform", "NONE")?)
    }

    /// From the integer encoding of TreeEnsemble (opset 5).
    fn from_code(c: i64) -> OpResult<Post> {
        Ok(match c {
            0 => Post::None,
            1 => Post::Softmax,
            2 => Post::Logistic,
            3 => Post::SoftmaxZero,
            4 => Post::Probit,
            other => return Err(op_err!("unknown post_transform {other}")),
        })
    }

    /// Transforms one row of scores in place.
    fn apply(self, row: &mut [f64]) {
        match self {
            Post::None => {}
            Post::Logistic => row.iter_mut().for_each(|x| *x = logistic(*x)),
            Post::Probit => row.iter_mut().for_each(|x| *x = probit(*x)),
            Post::Softmax => {
                let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut s = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - m).exp();
                    s += *x;
                }
                row.iter_mut().for_each(|x| *x /= s);
            }
            Post::SoftmaxZero => softmax_zero(row),
        }
    }
}

fn logistic(x: f64) -> f64 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 {
        1.0 - v
    } else {
        v
    }
}

/// Softmax that leaves exact zeros at zero weight (as ONNX Runtime does).
fn softmax_zero(row: &mut [f64]) {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = (-m).exp();
    let mut s = 0.0;
    for x in row.iter_mut() {
        if *x > 1e-7 || *x < -1e-7 {
            *x = (*x - m).exp();
        } else {
            *x *= e;
        }
        s += *x;
    }
    if s == 0.0 {
        row.iter_mut().for_each(|x| *x = 0.5);
    } else {
        row.iter_mut().for_each(|x| *x /= s);
    }
}

/// The approximate inverse error function ONNX Runtime uses for PROBIT.
fn erf_inv(x: f64) -> f64 {
    let sgn = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    if x == 0.0 {
        return 0.0;
    }
    let log = x.ln();
    let v = 2.0 / (std::f64::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

fn probit(x: f64) -> f64 {
    std::f64::consts::SQRT_2 * erf_inv(2.0 * x - 1.0)
}

// ------------------------------------------------- ArrayFeatureExtractor

fn array_feature_extractor(ctx: &RunCtx, x: &Tensor, idx: &Tensor) -> OpResult<Tensor> {
    let Some((&last, outer_dims)) = x.shape().split_last() else {
        return Err(op_err!("input X must have at least one dimension"));
    };
    let idx = idx
        .to_i64_vec()?
        .into_iter()
        .map(|i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < last)
                .ok_or_else(|| op_err!("index {i} is out of range for a last dimension of {last}"))
        })
        .collect::<OpResult<Vec<usize>>>()?;
    let outer: usize = outer_dims.iter().product();
    let mut shape = if outer_dims.is_empty() {
        vec![1]
    } else {
        outer_dims.to_vec()
    };
    shape.push(idx.len());
    let n = outer
        .checked_mul(idx.len())
        .ok_or_else(|| op_err!("output is too large"))?;
    ctx.check_alloc(n, 8)?;
    let it = (0..outer).flat_map(|o| idx.iter().map(move |&i| o * last + i));
    Ok(x.gather_flat(shape, it)?)
}

fn build_afe(_: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
        one(array_feature_extractor(
            ctx,
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
        )?)
    }))
}

// ------------------------------------------------------------- Binarizer

fn build_binarizer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let th = f64::from(ctx.node.attr_float("threshold")?.unwrap_or(0.0));
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let v = numeric_f64(x)?
            .into_iter()
            .map(|v| if v > th { 1.0 } else { 0.0 })
            .collect();
        one(f64_as(x.dtype(), x.shape().to_vec(), v)?)
    }))
}

// ---------------------------------------------------------- LabelEncoder

/// A lookup key: integers, strings, or floats by bit pattern (all NaNs equal).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Int(i64),
    Str(String),
    Float(u64),
}

/// The bit pattern floats are matched by: every NaN alike, -0 as +0.
fn float_bits(x: f64) -> u64 {
    if x.is_nan() {
        f64::NAN.to_bits()
    } else if x == 0.0 {
        0f64.to_bits()
    } else {
        x.to_bits()
    }
}

fn float_key(x: f64) -> Key {
    Key::Float(float_bits(x))
}

/// Key -> position, read straight from input tensors (no per-element copies).
#[derive(Default)]
struct KeyIndex {
    ints: HashMap<i64, usize>,
    strs: HashMap<String, usize>,
    floats: HashMap<u64, usize>,
}

impl KeyIndex {
    /// Later duplicates of a key win.
    fn new(keys: Vec<Key>) -> KeyIndex {
        let mut ix = KeyIndex::default();
        for (i, k) in keys.into_iter().enumerate() {
            match k {
                Key::Int(v) => ix.ints.insert(v, i),
                Key::Str(v) => ix.strs.insert(v, i),
                Key::Float(v) => ix.floats.insert(v, i),
            };
        }
        ix
    }

    /// The position of each element of `x`; with `floats_as_ints` float
    /// inputs are truncated and matched against integer keys.
    fn lookup(&self, x: &Tensor, floats_as_ints: bool) -> OpResult<Vec<Option<usize>>> {
        Ok(match x.data() {
            Data::Str(v) => v
                .iter()
                .map(|s| self.strs.get(s.as_str()).copied())
                .collect(),
            Data::F32(_) | Data::F64(_) | Data::F16(_) | Data::BF16(_) => {
                let f = x.to_f64_vec()?;
                if floats_as_ints {
                    f.iter()
                        .map(|&v| self.ints.get(&(v as i64)).copied())
                        .collect()
                } else {
                    f.iter()
                        .map(|&v| self.floats.get(&float_bits(v)).copied())
                        .collect()
                }
            }
            _ => x
                .to_i64_vec()?
                .iter()
                .map(|v| self.ints.get(v).copied())
                .collect(),
        })
    }
}

fn keys_of(t: &Tensor) -> OpResult<Vec<Key>> {
    Ok(match t.data() {
        Data::Str(v) => v.iter().cloned().map(Key::Str).collect(),
        Data::F32(_) | Data::F64(_) | Data::F16(_) | Data::BF16(_) => {
            t.to_f64_vec()?.into_iter().map(float_key).collect()
        }
        _ => t.to_i64_vec()?.into_iter().map(Key::Int).collect(),
    })
}

/// The elements of `parts` (all of one storage) one after another.
fn concat_data(parts: &[&Data]) -> OpResult<Data> {
    fn go<T: Elem>(first: &[T], parts: &[&Data]) -> Option<Data> {
        let mut out: Vec<T> = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        out.extend_from_slice(first);
        for p in &parts[1..] {
            out.extend_from_slice(T::slice(p)?);
        }
        Some(T::into_data(out))
    }
    let Some(first) = parts.first() else {
        return Err(op_err!("nothing to concatenate"));
    };
    onyx_tensor::with_data!(first, v => go(v, parts))
        .ok_or_else(|| op_err!("values of different types cannot be joined"))
}

/// Appends `extra` (same storage) to `base`.
fn append_data(base: &Data, extra: &Data) -> OpResult<Data> {
    fn go<T: Elem>(a: &[T], b: &Data) -> Option<Data> {
        let b = T::slice(b)?;
        Some(T::into_data(a.iter().chain(b).cloned().collect()))
    }
    onyx_tensor::with_data!(base, v => go(v, extra))
        .ok_or_else(|| op_err!("default value does not have the type of the values"))
}

/// Maps each input element to an entry of `table` (the values followed by
/// the default), by key.
struct Encoder {
    index: KeyIndex,
    table: Tensor,
    default_at: usize,
}

impl Encoder {
    fn new(keys: Vec<Key>, values: Tensor, default: Tensor) -> OpResult<Encoder> {
        if keys.len() != values.len() {
            return Err(op_err!("{} keys but {} values", keys.len(), values.len()));
        }
        if default.len() != 1 {
            return Err(op_err!(
                "the default should hold one value but holds {}",
                default.len()
            ));
        }
        let default = if default.dtype() == values.dtype() {
            default
        } else {
            cast_tensor(&default, values.dtype(), false)?
        };
        let default_at = values.len();
        let data = append_data(values.data(), default.data())?;
        let table = Tensor::new(values.dtype(), vec![default_at + 1], data)?;
        let index = KeyIndex::new(keys);
        Ok(Encoder {
            index,
            table,
            default_at,
        })
    }

    fn run(&self, x: &Tensor) -> OpResult<Tensor> {
        let pos = self.index.lookup(x, false)?;
        let idx = pos.iter().map(|p| p.unwrap_or(self.default_at));
        Ok(self.table.gather_flat(x.shape().to_vec(), idx)?)
    }
}

fn str_tensor(v: Vec<String>) -> OpResult<Tensor> {
    Ok(Tensor::from_vec(vec![v.len()], v)?)
}

fn build_label_encoder(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let node = ctx.node;
    if ctx.opset < 2 {
        // classes_strings: string -> index, int64 -> string
        let classes = strings_attr(ctx, "classes_strings")?;
        let def_int = node.attr_int("default_int64")?.unwrap_or(-1);
        let def_str = string_attr(ctx, "default_string", "_Unused")?;
        let to_int = Encoder::new(
            classes.iter().cloned().map(Key::Str).collect(),
            Tensor::from_vec(vec![classes.len()], (0..classes.len() as i64).collect())?,
            Tensor::scalar(def_int),
        )?;
        let to_str = Encoder::new(
            (0..classes.len() as i64).map(Key::Int).collect(),
            str_tensor(classes)?,
            Tensor::scalar(def_str),
        )?;
        return Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
            let x = tensor_in(inputs, 0)?;
            if x.dtype() == DType::String {
                one(to_int.run(x)?)
            } else {
                one(to_str.run(x)?)
            }
        }));
    }
    let keys: Vec<Key> = if let Some(t) = node.attr_tensor("keys_tensor")? {
        keys_of(&t)?
    } else if let Some(v) = node.attr_strings("keys_strings")? {
        v.into_iter().map(Key::Str).collect()
    } else if let Some(v) = node.attr_ints("keys_int64s")? {
        v.into_iter().map(Key::Int).collect()
    } else if let Some(v) = node.attr_floats("keys_floats")? {
        v.into_iter().map(|x| float_key(f64::from(x))).collect()
    } else {
        return Err(op_err!("one of the keys_* attributes is required"));
    };
    let (values, natural_default) = if let Some(t) = node.attr_tensor("values_tensor")? {
        let d = match t.dtype() {
            DType::String => Tensor::scalar("_Unused".to_string()),
            dt if dt.is_float() => cast_tensor(&Tensor::scalar(-0.0f32), dt, false)?,
            dt => cast_tensor(&Tensor::scalar(-1i64), dt, false)?,
        };
        let n = t.len();
        (t.reshape(vec![n])?, d)
    } else if let Some(v) = node.attr_strings("values_strings")? {
        let d = string_attr(ctx, "default_string", "_Unused")?;
        (str_tensor(v)?, Tensor::scalar(d))
    } else if let Some(v) = node.attr_ints("values_int64s")? {
        let d = node.attr_int("default_int64")?.unwrap_or(-1);
        (Tensor::from_vec(vec![v.len()], v)?, Tensor::scalar(d))
    } else if let Some(v) = node.attr_floats("values_floats")? {
        let d = node.attr_float("default_float")?.unwrap_or(-0.0);
        (Tensor::from_vec(vec![v.len()], v)?, Tensor::scalar(d))
    } else {
        return Err(op_err!("one of the values_* attributes is required"));
    };
    let default = match node.attr_tensor("default_tensor")? {
        Some(t) => t,
        None => natural_default,
    };
    let enc = Encoder::new(keys, values, default)?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        one(enc.run(tensor_in(inputs, 0)?)?)
    }))
}

// ---------------------------------------------------------- CategoryMapper

fn build_category_mapper(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let ints = ints_attr(ctx, "cats_int64s")?;
    let strs = strings_attr(ctx, "cats_strings")?;
    if ints.len() != strs.len() {
        return Err(op_err!(
            "cats_int64s has {} entries but cats_strings has {}",
            ints.len(),
            strs.len()
        ));
    }
    let def_int = ctx.node.attr_int("default_int64")?.unwrap_or(-1);
    let def_str = string_attr(ctx, "default_string", "_Unused")?;
    let to_int = Encoder::new(
        strs.iter().cloned().map(Key::Str).collect(),
        Tensor::from_vec(vec![ints.len()], ints.clone())?,
        Tensor::scalar(def_int),
    )?;
    let to_str = Encoder::new(
        ints.into_iter().map(Key::Int).collect(),
        str_tensor(strs)?,
        Tensor::scalar(def_str),
    )?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        match x.dtype() {
            DType::String => one(to_int.run(x)?),
            DType::Int64 => one(to_str.run(x)?),
            other => Err(op_err!("input should be string or int64 but is {other}")),
        }
    }))
}

// ---------------------------------------------------------- OneHotEncoder

fn build_one_hot_encoder(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let ints = ints_attr(ctx, "cats_int64s")?;
    let strs = strings_attr(ctx, "cats_strings")?;
    let keys: Vec<Key> = if !ints.is_empty() {
        ints.into_iter().map(Key::Int).collect()
    } else if !strs.is_empty() {
        strs.into_iter().map(Key::Str).collect()
    } else {
        return Err(op_err!("one of cats_int64s or cats_strings is required"));
    };
    let zeros = ctx.node.attr_int("zeros")?.unwrap_or(1) != 0;
    let n_cats = keys.len();
    let index = KeyIndex::new(keys);
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        // numbers are matched as integers
        let pos = index.lookup(x, true)?;
        let n = pos
            .len()
            .checked_mul(n_cats)
            .ok_or_else(|| op_err!("output is too large"))?;
        ctx.check_alloc(n, 4)?;
        let mut out = vec![0f32; n];
        for (i, p) in pos.iter().enumerate() {
            match p {
                Some(c) => out[i * n_cats + c] = 1.0,
                None if !zeros => {
                    return Err(op_err!("input element {i} is not one of the categories"))
                }
                None => {}
            }
        }
        let mut shape = x.shape().to_vec();
        shape.push(n_cats);
        one(Tensor::from_vec(shape, out)?)
    }))
}

// ------------------------------------------------- Scaler and Normalizer

/// Per-column values of length 1 (broadcast) or C.
fn per_column(v: &[f64], c: usize, what: &str) -> OpResult<()> {
    if v.len() == 1 || v.len() == c {
        Ok(())
    } else {
        Err(op_err!(
            "{what} has {} values but the input has {c} columns",
            v.len()
        ))
    }
}

fn build_scaler(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let offset = floats_attr(ctx, "offset")?;
    let scale = floats_attr(ctx, "scale")?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let c = x.shape().last().copied().unwrap_or(1);
        let off: &[f64] = if offset.is_empty() { &[0.0] } else { &offset };
        let sc: &[f64] = if scale.is_empty() { &[1.0] } else { &scale };
        per_column(off, c, "offset")?;
        per_column(sc, c, "scale")?;
        let v: Vec<f64> = numeric_f64(x)?
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let j = i % c.max(1);
                let o = off[if off.len() == 1 { 0 } else { j }];
                let s = sc[if sc.len() == 1 { 0 } else { j }];
                (v - o) * s
            })
            .collect();
        one(f32_tensor(x.shape().to_vec(), &v)?)
    }))
}

fn build_normalizer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let norm = string_attr(ctx, "norm", "MAX")?;
    let kind = match norm.as_str() {
        "MAX" => 0,
        "L1" => 1,
        "L2" => 2,
        other => return Err(op_err!("unknown norm '{other}'")),
    };
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        if x.rank() > 2 {
            return Err(op_err!(
                "input should be 1-D or 2-D but has shape {:?}",
                x.shape()
            ));
        }
        let c = x.shape().last().copied().unwrap_or(1).max(1);
        let mut v = numeric_f64(x)?;
        for row in v.chunks_mut(c) {
            let d = match kind {
                0 => row.iter().fold(0f64, |m, x| m.max(x.abs())),
                1 => row.iter().map(|x| x.abs()).sum(),
                _ => row.iter().map(|x| x * x).sum::<f64>().sqrt(),
            };
            let d = d.max(1e-30);
            row.iter_mut().for_each(|x| *x /= d);
        }
        one(f32_tensor(x.shape().to_vec(), &v)?)
    }))
}

// --------------------------------------------------------------- Imputer

fn build_imputer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let fl = floats_attr(ctx, "imputed_value_floats")?;
    let it = ints_attr(ctx, "imputed_value_int64s")?;
    let (values, replaced, is_float) = if !fl.is_empty() {
        let r = f64::from(ctx.node.attr_float("replaced_value_float")?.unwrap_or(0.0));
        (fl, r, true)
    } else if !it.is_empty() {
        let r = ctx.node.attr_int("replaced_value_int64")?.unwrap_or(0) as f64;
        (it.into_iter().map(|v| v as f64).collect(), r, false)
    } else {
        return Err(op_err!(
            "one of imputed_value_floats or imputed_value_int64s is required"
        ));
    };
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        if x.dtype().is_float() != is_float {
            return Err(op_err!(
                "input of type {} does not match the imputed values' type",
                x.dtype()
            ));
        }
        let c = x.shape().last().copied().unwrap_or(1);
        per_column(&values, c, "the imputed values")?;
        let mut v = numeric_f64(x)?;
        for (i, e) in v.iter_mut().enumerate() {
            let hit = if replaced.is_nan() {
                e.is_nan()
            } else {
                *e == replaced
            };
            if hit {
                *e = values[if values.len() == 1 { 0 } else { i % c.max(1) }];
            }
        }
        if is_float {
            one(f64_as(x.dtype(), x.shape().to_vec(), v)?)
        } else {
            let ints = x.to_i64_vec()?;
            let out = ints
                .iter()
                .zip(&v)
                .map(|(&orig, &new)| {
                    if orig as f64 == replaced {
                        new as i64
                    } else {
                        orig
                    }
                })
                .collect();
            one(cast_tensor(
                &Tensor::from_vec(x.shape().to_vec(), out)?,
                x.dtype(),
                false,
            )?)
        }
    }))
}

// --------------------------------------------------------- linear models

/// scores[n, t] = sum_c x[n, c] * coef[t * C + c] + intercept[t]
fn linear_scores(x: &[f64], n: usize, c: usize, coef: &[f64], icpt: &[f64], t: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * t);
    for r in 0..n {
        let row = &x[r * c..(r + 1) * c];
        for k in 0..t {
            let w = &coef[k * c..(k + 1) * c];
            let s: f64 = row.iter().zip(w).map(|(a, b)| a * b).sum();
            out.push(s + icpt.get(k).copied().unwrap_or(0.0));
        }
    }
    out
}

fn check_coefs(coef: &[f64], t: usize, c: usize) -> OpResult<()> {
    if t.checked_mul(c) != Some(coef.len()) {
        return Err(op_err!(
            "{} coefficients do not fit {t} targets of {c} features",
            coef.len()
        ));
    }
    Ok(())
}

fn build_linear_regressor(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let coef = floats_attr(ctx, "coefficients")?;
    let icpt = floats_attr(ctx, "intercepts")?;
    let targets = usize::try_from(ctx.node.attr_int("targets")?.unwrap_or(1))
        .map_err(|_| op_err!("targets must not be negative"))?;
    let post = Post::from_attr(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c) = rows_cols(x);
        check_coefs(&coef, targets, c)?;
        let total = n
            .checked_mul(targets)
            .ok_or_else(|| op_err!("output is too large"))?;
        ctx.check_alloc(total, 8)?;
        let mut s = linear_scores(&numeric_f64(x)?, n, c, &coef, &icpt, targets);
        for row in s.chunks_mut(targets.max(1)) {
            post.apply(row);
        }
        one(f32_tensor(vec![n, targets], &s)?)
    }))
}

fn build_linear_classifier(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let coef = floats_attr(ctx, "coefficients")?;
    let icpt = floats_attr(ctx, "intercepts")?;
    let labels = Labels::from_attrs(ctx, "classlabels_ints", "classlabels_strings")?;
    let post = Post::from_attr(ctx)?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c) = rows_cols(x);
        if c == 0 || coef.len() % c != 0 {
            return Err(op_err!(
                "{} coefficients are not a multiple of {c} features",
                coef.len()
            ));
        }
        let e = coef.len() / c;
        let mut s = linear_scores(&numeric_f64(x)?, n, c, &coef, &icpt, e);
        // one score with two classes: scores for both, negated for class 0
        let e = if e == 1 && labels.len() == 2 {
            s = s.iter().flat_map(|&v| [-v, v]).collect();
            2
        } else {
            e
        };
        let mut idx = Vec::with_capacity(n);
        for row in s.chunks_mut(e.max(1)) {
            post.apply(row);
            idx.push(argmax(row));
        }
        let label = if e > 1 {
            if labels.len() == 0 {
                Tensor::from_vec(vec![n], idx.iter().map(|&i| i as i64).collect())?
            } else {
                labels.pick(&idx)?
            }
        } else {
            let th = if post == Post::None { 0.0 } else { 0.5 };
            let pos: Vec<bool> = s.iter().map(|&v| v >= th).collect();
            match &labels {
                Labels::Ints(v) if !v.is_empty() => Tensor::from_vec(
                    vec![n],
                    pos.iter().map(|&p| if p { v[0] } else { 0 }).collect(),
                )?,
                Labels::Strs(v) => Tensor::from_vec(
                    vec![n],
                    pos.iter()
                        .map(|&p| if p { v[0].clone() } else { String::new() })
                        .collect(),
                )?,
                _ => Tensor::from_vec(vec![n], pos.iter().map(|&p| i64::from(p)).collect())?,
            }
        };
        Ok(vec![
            Value::Tensor(label),
            Value::Tensor(f32_tensor(vec![n, e], &s)?),
        ])
    }))
}

// ------------------------------------------------------------------ ZipMap

fn build_zipmap(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let labels = Labels::from_attrs(ctx, "classlabels_int64s", "classlabels_strings")?;
    if labels.len() == 0 {
        return Err(op_err!(
            "one of classlabels_int64s or classlabels_strings is required"
        ));
    }
    let keys = labels.as_tensor()?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c) = rows_cols(x);
        if c != keys.len() || x.rank() > 2 {
            return Err(op_err!(
                "input of shape {:?} does not have {} columns, one per label",
                x.shape(),
                keys.len()
            ));
        }
        ctx.check_alloc(x.len(), 8)?;
        let v = numeric_f64(x)?;
        let items = (0..n)
            .map(|r| {
                let row: Vec<f32> = v[r * c..(r + 1) * c].iter().map(|&x| x as f32).collect();
                Ok(Value::Map(MapValue {
                    keys: keys.clone(),
                    values: Box::new(Value::Tensor(Tensor::from_vec(vec![c], row)?)),
                }))
            })
            .collect::<OpResult<Vec<Value>>>()?;
        Ok(vec![Value::Sequence {
            elem_dtype: None,
            items,
        }])
    }))
}

// --------------------------------------------------------- DictVectorizer

fn build_dict_vectorizer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let ints = ints_attr(ctx, "int64_vocabulary")?;
    let strs = strings_attr(ctx, "string_vocabulary")?;
    let vocab: Vec<Key> = if !strs.is_empty() {
        strs.into_iter().map(Key::Str).collect()
    } else {
        ints.into_iter().map(Key::Int).collect()
    };
    if vocab.is_empty() {
        return Err(op_err!(
            "one of int64_vocabulary or string_vocabulary is required"
        ));
    }
    let v = vocab.len();
    let index = KeyIndex::new(vocab);
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let maps: Vec<&MapValue> = match inputs.first().copied().flatten() {
            Some(Value::Map(m)) => vec![m],
            Some(Value::Sequence { items, .. }) => items
                .iter()
                .map(|i| match i {
                    Value::Map(m) => Ok(m),
                    other => Err(op_err!("expected a map but got {}", other.kind())),
                })
                .collect::<OpResult<_>>()?,
            Some(other) => return Err(op_err!("input should be a map but is {}", other.kind())),
            None => return Err(op_err!("required input 0 is missing")),
        };
        let total = maps
            .len()
            .checked_mul(v)
            .ok_or_else(|| op_err!("output is too large"))?;
        ctx.check_alloc(total, 8)?;
        let mut dtype = None;
        // one table of every map's values, then a zero; each output cell
        // picks its key's value or the zero
        let mut parts: Vec<&Data> = Vec::with_capacity(maps.len() + 1);
        let mut picks: Vec<usize> = Vec::with_capacity(total);
        let mut offset = 0usize;
        let mut row_src = vec![usize::MAX; v];
        for m in &maps {
            let vals = m
                .values
                .as_tensor()
                .ok_or_else(|| op_err!("map values should be a tensor"))?;
            let cols = index.lookup(&m.keys, false)?;
            if cols.len() != vals.len() {
                return Err(op_err!(
                    "map has {} keys but {} values",
                    cols.len(),
                    vals.len()
                ));
            }
            if *dtype.get_or_insert(vals.dtype()) != vals.dtype() {
                return Err(op_err!("maps hold values of different types"));
            }
            row_src.iter_mut().for_each(|s| *s = usize::MAX);
            for (i, c) in cols.iter().enumerate() {
                if let Some(&col) = c.as_ref() {
                    row_src[col] = offset + i;
                }
            }
            picks.extend_from_slice(&row_src);
            parts.push(vals.data());
            offset += vals.len();
        }
        let dtype = dtype.unwrap_or(DType::Float);
        let zero = Tensor::zeros(dtype, vec![1])?;
        parts.push(zero.data());
        let table = Tensor::new(dtype, vec![offset + 1], concat_data(&parts)?)?;
        let data = table
            .gather_flat(
                vec![maps.len(), v],
                picks
                    .iter()
                    .map(|&i| if i == usize::MAX { offset } else { i }),
            )?
            .into_data();
        one(Tensor::new(dtype, vec![maps.len(), v], data)?)
    }))
}

// ------------------------------------------------------- FeatureVectorizer

fn build_feature_vectorizer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let dims = ints_attr(ctx, "inputdimensions")?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| op_err!("inputdimensions holds negative {d}")))
        .collect::<OpResult<Vec<usize>>>()?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        if inputs.len() != dims.len() {
            return Err(op_err!(
                "{} inputs but inputdimensions has {} entries",
                inputs.len(),
                dims.len()
            ));
        }
        let width = dims
            .iter()
            .try_fold(0usize, |a, &d| a.checked_add(d))
            .ok_or_else(|| op_err!("inputdimensions {dims:?} add up to too much"))?;
        let mut n = None;
        let mut cols = Vec::with_capacity(inputs.len());
        for i in 0..inputs.len() {
            let t = tensor_in(inputs, i)?;
            let (r, c) = rows_cols(t);
            if *n.get_or_insert(r) != r {
                return Err(op_err!("input {i} has {r} rows but input 0 has {n:?}"));
            }
            cols.push((c, numeric_f64(t)?));
        }
        let n = n.unwrap_or(1);
        let total = n
            .checked_mul(width)
            .ok_or_else(|| op_err!("output is too large"))?;
        ctx.check_alloc(total, 4)?;
        let mut out = Vec::with_capacity(total);
        for r in 0..n {
            for ((c, v), &d) in cols.iter().zip(&dims) {
                for j in 0..d {
                    out.push(if j < *c { v[r * c + j] } else { 0.0 });
                }
            }
        }
        one(f32_tensor(vec![n, width], &out)?)
    }))
}

// ------------------------------------------------------------ tree ensembles

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Clone, Copy, Debug)]
enum Next {
    Node(usize),
    Leaf(usize),
}

#[derive(Clone, Debug)]
struct Branch {
    feature: usize,
    cmp: Cmp,
    value: f64,
    set: Vec<f64>,
    missing_true: bool,
    t: Next,
    f: Next,
}

impl Branch {
    fn goes_true(&self, x: f64) -> bool {
        if x.is_nan() && self.missing_true {
            return true;
        }
        match self.cmp {
            Cmp::Leq => x <= self.value,
            Cmp::Lt => x < self.value,
            Cmp::Gte => x >= self.value,
            Cmp::Gt => x > self.value,
            Cmp::Eq => x == self.value,
            Cmp::Neq => x != self.value,
            Cmp::Member => self.set.contains(&x),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Agg {
    Sum,
    Average,
    Min,
    Max,
}

/// Trees made of branches and leaves; each leaf adds weights to targets.
#[derive(Debug)]
struct Forest {
    branches: Vec<Branch>,
    roots: Vec<Next>,
    leaves: Vec<Vec<(usize, f64)>>,
    n_targets: usize,
    agg: Agg,
    base: Vec<f64>,
    /// The smallest row width the branches can read.
    min_cols: usize,
}

impl Forest {
    fn finish(mut self) -> OpResult<Forest> {
        for b in &self.branches {
            for nx in [b.t, b.f] {
                let ok = match nx {
                    Next::Node(i) => i < self.branches.len(),
                    Next::Leaf(i) => i < self.leaves.len(),
                };
                if !ok {
                    return Err(op_err!("a tree refers to a node that does not exist"));
                }
            }
        }
        for &r in &self.roots {
            if let Next::Node(i) = r {
                if i >= self.branches.len() {
                    return Err(op_err!("a tree root does not exist"));
                }
            }
        }
        for l in &self.leaves {
            for &(t, _) in l {
                if t >= self.n_targets {
                    return Err(op_err!(
                        "target id {t} is out of range for {} targets",
                        self.n_targets
                    ));
                }
            }
        }
        if !self.base.is_empty() && self.base.len() != self.n_targets {
            return Err(op_err!(
                "{} base values for {} targets",
                self.base.len(),
                self.n_targets
            ));
        }
        self.min_cols = self
            .branches
            .iter()
            .map(|b| b.feature + 1)
            .max()
            .unwrap_or(0);
        Ok(self)
    }

    fn leaf(&self, root: Next, x: &[f64]) -> OpResult<usize> {
        let mut cur = root;
        for _ in 0..=self.branches.len() {
            match cur {
                Next::Leaf(l) => return Ok(l),
                Next::Node(i) => {
                    let b = self
                        .branches
                        .get(i)
                        .ok_or_else(|| op_err!("node {i} does not exist"))?;
                    let v = x.get(b.feature).copied().unwrap_or(f64::NAN);
                    cur = if b.goes_true(v) { b.t } else { b.f };
                }
            }
        }
        Err(op_err!("a tree has a cycle"))
    }

    /// Raw aggregated scores [N, n_targets] (base values added).
    fn scores(&self, ctx: &RunCtx, x: &Tensor) -> OpResult<(usize, Vec<f64>)> {
        let (n, c) = rows_cols(x);
        if c < self.min_cols {
            return Err(op_err!(
                "input has {c} features but the trees read feature {}",
                self.min_cols - 1
            ));
        }
        let total = n
            .checked_mul(self.n_targets)
            .ok_or_else(|| op_err!("output is too large"))?;
        ctx.check_alloc(total, 8)?;
        ctx.check_alloc(self.n_targets, 8)?;
        let v = numeric_f64(x)?;
        let mut out = vec![0.0; total];
        let mut seen = vec![false; self.n_targets];
        for r in 0..n {
            let row = &v[r * c..(r + 1) * c];
            let acc = &mut out[r * self.n_targets..(r + 1) * self.n_targets];
            seen.iter_mut().for_each(|s| *s = false);
            for &root in &self.roots {
                let l = self.leaf(root, row)?;
                for &(t, w) in &self.leaves[l] {
                    let a = &mut acc[t];
                    match self.agg {
                        Agg::Sum | Agg::Average => *a += w,
                        Agg::Min => *a = if seen[t] { a.min(w) } else { w },
                        Agg::Max => *a = if seen[t] { a.max(w) } else { w },
                    }
                    seen[t] = true;
                }
            }
            if self.agg == Agg::Average && !self.roots.is_empty() {
                let k = self.roots.len() as f64;
                acc.iter_mut().for_each(|a| *a /= k);
            }
            for (a, b) in acc.iter_mut().zip(&self.base) {
                *a += b;
            }
        }
        Ok((n, out))
    }
}

fn parse_agg(s: &str) -> OpResult<Agg> {
    Ok(match s {
        "SUM" => Agg::Sum,
        "AVERAGE" => Agg::Average,
        "MIN" => Agg::Min,
        "MAX" => Agg::Max,
        other => return Err(op_err!("unknown aggregate_function '{other}'")),
    })
}

fn to_usize(v: i64, what: &str) -> OpResult<usize> {
    usize::try_from(v).map_err(|_| op_err!("{what} {v} is negative"))
}

/// Reads the node arrays of TreeEnsembleRegressor/Classifier, with leaf
/// weights given as (tree id, node id, target id, weight) lists; `base`
/// holds the values added to each target's score.
fn legacy_forest(
    ctx: &BuildCtx,
    prefix: &str,
    n_targets: usize,
    agg: Agg,
    base: Vec<f64>,
) -> OpResult<Forest> {
    let tree_ids = ints_attr(ctx, "nodes_treeids")?;
    let node_ids = ints_attr(ctx, "nodes_nodeids")?;
    let features = ints_attr(ctx, "nodes_featureids")?;
    let modes = strings_attr(ctx, "nodes_modes")?;
    let values = floats_or_tensor(ctx, "nodes_values")?;
    let trues = ints_attr(ctx, "nodes_truenodeids")?;
    let falses = ints_attr(ctx, "nodes_falsenodeids")?;
    let missing = ints_attr(ctx, "nodes_missing_value_tracks_true")?;
    let n = tree_ids.len();
    for (name, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", features.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", trues.len()),
        ("nodes_falsenodeids", falses.len()),
    ] {
        if len != n {
            return Err(op_err!(
                "{name} has {len} entries but nodes_treeids has {n}"
            ));
        }
    }
    // node position by (tree, node id); which are leaves; their numbering
    let mut pos: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
    let mut slot = Vec::with_capacity(n);
    let (mut nb, mut nl) = (0, 0);
    for i in 0..n {
        pos.insert((tree_ids[i], node_ids[i]), i);
        if modes[i] == "LEAF" {
            slot.push(Next::Leaf(nl));
            nl += 1;
        } else {
            slot.push(Next::Node(nb));
            nb += 1;
        }
    }
    let child = |tree: i64, id: i64| -> OpResult<Next> {
        pos.get(&(tree, id))
            .map(|&p| slot[p])
            .ok_or_else(|| op_err!("tree {tree} has no node {id}"))
    };
    let mut branches = Vec::with_capacity(nb);
    for i in 0..n {
        let cmp = match modes[i].as_str() {
            "LEAF" => continue,
            "BRANCH_LEQ" => Cmp::Leq,
            "BRANCH_LT" => Cmp::Lt,
            "BRANCH_GTE" => Cmp::Gte,
            "BRANCH_GT" => Cmp::Gt,
            "BRANCH_EQ" => Cmp::Eq,
            "BRANCH_NEQ" => Cmp::Neq,
            other => return Err(op_err!("unknown node mode '{other}'")),
        };
        branches.push(Branch {
            feature: to_usize(features[i], "feature id")?,
            cmp,
            value: values.get(i).copied().unwrap_or(0.0),
            set: vec![],
            missing_true: missing.get(i).copied().unwrap_or(0) != 0,
            t: child(tree_ids[i], trues[i])?,
            f: child(tree_ids[i], falses[i])?,
        });
    }
    // the first node of each tree is its root; trees in id order
    let mut roots: Vec<(i64, Next)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        if seen.insert(tree_ids[i]) {
            roots.push((tree_ids[i], slot[i]));
        }
    }
    roots.sort_by_key(|(t, _)| *t);
    let w_trees = ints_attr(ctx, &format!("{prefix}_treeids"))?;
    let w_nodes = ints_attr(ctx, &format!("{prefix}_nodeids"))?;
    let w_ids = ints_attr(ctx, &format!("{prefix}_ids"))?;
    let w = floats_or_tensor(ctx, &format!("{prefix}_weights"))?;
    if [w_nodes.len(), w_ids.len(), w.len()]
        .iter()
        .any(|&l| l != w_trees.len())
    {
        return Err(op_err!("the {prefix}_* attributes have different lengths"));
    }
    let mut leaves = vec![Vec::new(); nl];
    for i in 0..w_trees.len() {
        match child(w_trees[i], w_nodes[i])? {
            Next::Leaf(l) => leaves[l].push((to_usize(w_ids[i], "target id")?, w[i])),
            Next::Node(_) => {
                return Err(op_err!(
                    "weight for tree {} node {} which is not a leaf",
                    w_trees[i],
                    w_nodes[i]
                ))
            }
        }
    }
    Forest {
        branches,
        roots: roots.into_iter().map(|(_, r)| r).collect(),
        leaves,
        n_targets,
        agg,
        base,
        min_cols: 0,
    }
    .finish()
}

fn build_tree_regressor(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let n_targets = to_usize(ctx.node.attr_int("n_targets")?.unwrap_or(1), "n_targets")?;
    let agg = parse_agg(&string_attr(ctx, "aggregate_function", "SUM")?)?;
    let base = floats_or_tensor(ctx, "base_values")?;
    let forest = legacy_forest(ctx, "target", n_targets, agg, base)?;
    let post = Post::from_attr(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let (n, mut s) = forest.scores(ctx, tensor_in(inputs, 0)?)?;
        for row in s.chunks_mut(n_targets.max(1)) {
            post.apply(row);
        }
        one(f32_tensor(vec![n, n_targets], &s)?)
    }))
}

fn build_tree_classifier(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let labels = Labels::from_attrs(ctx, "classlabels_int64s", "classlabels_strings")?;
    let n_classes = labels.len();
    if n_classes == 0 {
        return Err(op_err!("class labels are required"));
    }
    let class_ids = ints_attr(ctx, "class_ids")?;
    // all weights for one class: a binary classifier scoring that class
    let binary = !class_ids.is_empty() && class_ids.iter().all(|&c| c == class_ids[0]);
    let mut base = floats_or_tensor(ctx, "base_values")?;
    if binary && n_classes == 2 && base.len() == 1 {
        // One base value for two classes (skl2onnx's binary gradient
        // boosting: the prior log-odds): added to class 0's score, as
        // onnxruntime does.
        base.push(0.0);
    }
    let forest = legacy_forest(ctx, "class", n_classes, Agg::Sum, base)?;
    let bin_col = class_ids.first().map_or(0, |&c| c as usize);
    let post = Post::from_attr(ctx)?;
    let width = if binary { n_classes.max(2) } else { n_classes };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let (n, s) = forest.scores(ctx, tensor_in(inputs, 0)?)?;
        let mut scores = Vec::with_capacity(n * width);
        let mut idx = Vec::with_capacity(n);
        for raw in s.chunks(n_classes) {
            let mut row = vec![0.0; width];
            row[..n_classes].copy_from_slice(raw);
            if binary {
                let v = raw.get(bin_col).copied().unwrap_or(0.0);
                row[1] = v;
                row[0] = if matches!(post, Post::None | Post::Probit) {
                    1.0 - v
                } else {
                    -v
                };
            }
            post.apply(&mut row);
            let best = argmax(&row);
            idx.push(best);
            scores.extend_from_slice(&row);
        }
        let label = match &labels {
            // a single label 1: index 1 means class 1, else 0
            Labels::Ints(v) if v.len() == 1 => Tensor::from_vec(
                vec![n],
                idx.iter().map(|&i| if i == 1 { v[0] } else { 0 }).collect(),
            )?,
            _ => labels.pick(&idx)?,
        };
        Ok(vec![
            Value::Tensor(label),
            Value::Tensor(f32_tensor(vec![n, width], &scores)?),
        ])
    }))
}

/// TreeEnsemble (opset 5): nodes and leaves in separate arrays.
fn build_tree_ensemble(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let node = ctx.node;
    let req_ints = |name: &str| -> OpResult<Vec<i64>> {
        node.attr_ints(name)?
            .ok_or_else(|| op_err!("missing required attribute '{name}'"))
    };
    let req_tensor = |name: &str| -> OpResult<Vec<f64>> {
        Ok(node
            .attr_tensor(name)?
            .ok_or_else(|| op_err!("missing required attribute '{name}'"))?
            .to_f64_vec()?)
    };
    let features = req_ints("nodes_featureids")?;
    let trues = req_ints("nodes_truenodeids")?;
    let falses = req_ints("nodes_falsenodeids")?;
    let true_leaf = req_ints("nodes_trueleafs")?;
    let false_leaf = req_ints("nodes_falseleafs")?;
    let splits = req_tensor("nodes_splits")?;
    let modes = match node.attr_tensor("nodes_modes")? {
        Some(t) => t.to_i64_vec()?,
        None => return Err(op_err!("missing required attribute 'nodes_modes'")),
    };
    let targets = req_ints("leaf_targetids")?;
    let weights = req_tensor("leaf_weights")?;
    let roots = req_ints("tree_roots")?;
    let missing = match node.attr_tensor("nodes_missing_value_tracks_true")? {
        Some(t) => t.to_i64_vec()?,
        None => ints_attr(ctx, "nodes_missing_value_tracks_true")?,
    };
    let members = match node.attr_tensor("membership_values")? {
        Some(t) => t.to_f64_vec()?,
        None => vec![],
    };
    let n_targets = to_usize(node.attr_int("n_targets")?.unwrap_or(1), "n_targets")?;
    let agg = match node.attr_int("aggregate_function")?.unwrap_or(1) {
        0 => Agg::Average,
        1 => Agg::Sum,
        2 => Agg::Min,
        3 => Agg::Max,
        other => return Err(op_err!("unknown aggregate_function {other}")),
    };
    let post = Post::from_code(node.attr_int("post_transform")?.unwrap_or(0))?;
    let n = features.len();
    for (name, len) in [
        ("nodes_truenodeids", trues.len()),
        ("nodes_falsenodeids", falses.len()),
        ("nodes_trueleafs", true_leaf.len()),
        ("nodes_falseleafs", false_leaf.len()),
        ("nodes_splits", splits.len()),
        ("nodes_modes", modes.len()),
    ] {
        if len != n {
            return Err(op_err!(
                "{name} has {len} entries but nodes_featureids has {n}"
            ));
        }
    }
    if targets.len() != weights.len() {
        return Err(op_err!(
            "leaf_targetids has {} entries but leaf_weights has {}",
            targets.len(),
            weights.len()
        ));
    }
    let next = |id: i64, leaf: bool| -> OpResult<Next> {
        let i = to_usize(id, "node id")?;
        Ok(if leaf { Next::Leaf(i) } else { Next::Node(i) })
    };
    // membership sets are consecutive runs in membership_values ended by NaN
    let mut sets = members.split(|v| v.is_nan());
    let mut branches = Vec::with_capacity(n);
    for i in 0..n {
        let cmp = match modes[i] {
            0 => Cmp::Leq,
            1 => Cmp::Lt,
            2 => Cmp::Gte,
            3 => Cmp::Gt,
            4 => Cmp::Eq,
            5 => Cmp::Neq,
            6 => Cmp::Member,
            other => return Err(op_err!("unknown node mode {other}")),
        };
        let set = if cmp == Cmp::Member {
            sets.next()
                .ok_or_else(|| op_err!("membership_values has too few sets"))?
                .to_vec()
        } else {
            vec![]
        };
        branches.push(Branch {
            feature: to_usize(features[i], "feature id")?,
            cmp,
            value: splits[i],
            set,
            missing_true: missing.get(i).copied().unwrap_or(0) != 0,
            t: next(trues[i], true_leaf[i] != 0)?,
            f: next(falses[i], false_leaf[i] != 0)?,
        });
    }
    let roots = roots
        .iter()
        .map(|&r| {
            let i = to_usize(r, "tree root")?;
            let b = branches
                .get(i)
                .ok_or_else(|| op_err!("tree root {i} does not exist"))?;
            // a root whose both branches are the same leaf is that leaf
            Ok(match (b.t, b.f) {
                (Next::Leaf(a), Next::Leaf(c)) if a == c => Next::Leaf(a),
                _ => Next::Node(i),
            })
        })
        .collect::<OpResult<Vec<Next>>>()?;
    let leaves = targets
        .iter()
        .zip(&weights)
        .map(|(&t, &w)| Ok(vec![(to_usize(t, "target id")?, w)]))
        .collect::<OpResult<Vec<_>>>()?;
    let forest = Forest {
        branches,
        roots,
        leaves,
        n_targets,
        agg,
        base: vec![],
        min_cols: 0,
    }
    .finish()?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, mut s) = forest.scores(ctx, x)?;
        for row in s.chunks_mut(n_targets.max(1)) {
            post.apply(row);
        }
        one(f64_as(x.dtype(), vec![n, n_targets], s)?)
    }))
}

// ------------------------------------------------------------------- SVMs

#[derive(Clone, Copy, Debug, PartialEq)]
enum SvmKernel {
    Linear,
    Poly,
    Rbf,
    Sigmoid,
}

#[derive(Clone, Debug)]
struct SvmCommon {
    kernel: SvmKernel,
    gamma: f64,
    coef0: f64,
    degree: i32,
}

impl SvmCommon {
    fn from_attrs(ctx: &BuildCtx) -> OpResult<SvmCommon> {
        let kernel = match string_attr(ctx, "kernel_type", "LINEAR")?.as_str() {
            "LINEAR" => SvmKernel::Linear,
            "POLY" => SvmKernel::Poly,
            "RBF" => SvmKernel::Rbf,
            "SIGMOID" => SvmKernel::Sigmoid,
            other => return Err(op_err!("unknown kernel_type '{other}'")),
        };
        let p = floats_attr(ctx, "kernel_params")?;
        Ok(SvmCommon {
            kernel,
            gamma: p.first().copied().unwrap_or(0.0),
            coef0: p.get(1).copied().unwrap_or(0.0),
            degree: p.get(2).copied().unwrap_or(0.0) as i32,
        })
    }

    fn dot(&self, a: &[f64], b: &[f64], kernel: SvmKernel) -> f64 {
        let dot = || a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        match kernel {
            SvmKernel::Linear => dot(),
            SvmKernel::Poly => (dot() * self.gamma + self.coef0).powi(self.degree),
            SvmKernel::Sigmoid => (dot() * self.gamma + self.coef0).tanh(),
            SvmKernel::Rbf => {
                let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                (-self.gamma * d).exp()
            }
        }
    }
}

/// Checks `x` has `c` columns and returns (rows, values).
fn svm_input(x: &Tensor, c: usize) -> OpResult<(usize, Vec<f64>)> {
    let (n, cols) = rows_cols(x);
    if cols != c {
        return Err(op_err!(
            "input has {cols} features but the model expects {c}"
        ));
    }
    Ok((n, numeric_f64(x)?))
}

fn build_svm_regressor(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let svm = SvmCommon::from_attrs(ctx)?;
    let coef = floats_attr(ctx, "coefficients")?;
    let rho = floats_attr(ctx, "rho")?.first().copied().unwrap_or(0.0);
    let n_sup = to_usize(ctx.node.attr_int("n_supports")?.unwrap_or(0), "n_supports")?;
    let one_class = ctx.node.attr_int("one_class")?.unwrap_or(0) != 0;
    let sv = floats_attr(ctx, "support_vectors")?;
    let post = Post::from_attr(ctx)?;
    let c = if n_sup > 0 {
        if sv.len() % n_sup != 0 || coef.len() < n_sup {
            return Err(op_err!(
                "{} support vector values and {} coefficients do not fit {n_sup} supports",
                sv.len(),
                coef.len()
            ));
        }
        sv.len() / n_sup
    } else {
        coef.len()
    };
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let (n, v) = svm_input(tensor_in(inputs, 0)?, c)?;
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            let x = &v[r * c..(r + 1) * c];
            let mut s = if n_sup > 0 {
                sv.chunks(c.max(1))
                    .zip(&coef)
                    .map(|(s, w)| w * svm.dot(x, s, svm.kernel))
                    .sum::<f64>()
            } else {
                svm.dot(x, &coef, SvmKernel::Linear)
            } + rho;
            if one_class {
                s = if s > 0.0 { 1.0 } else { -1.0 };
            }
            let mut row = [s];
            post.apply(&mut row);
            out.push(row[0]);
        }
        one(f32_tensor(vec![n, 1], &out)?)
    }))
}

/// Pairwise coupling of class probabilities (libsvm's multiclass_probability).
fn multiclass_probability(k: usize, r: &[f64]) -> Vec<f64> {
    let at = |i: usize, j: usize| r[i * k + j];
    let mut q = vec![0.0; k * k];
    let mut p = vec![1.0 / k as f64; k];
    let mut qp = vec![0.0; k];
    for t in 0..k {
        let mut d = 0.0;
        for j in 0..k {
            if j != t {
                d += at(j, t) * at(j, t);
            }
        }
        q[t * k + t] = d;
        for j in 0..k {
            if j != t {
                q[t * k + j] = -at(j, t) * at(t, j);
            }
        }
    }
    let eps = 0.005 / k as f64;
    for _ in 0..k.max(100) {
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = (0..k).map(|j| q[t * k + j] * p[j]).sum();
            pqp += p[t] * qp[t];
        }
        let max_err = (0..k).map(|t| (qp[t] - pqp).abs()).fold(0.0, f64::max);
        if max_err < eps {
            break;
        }
        for t in 0..k {
            let qtt = q[t * k + t];
            if qtt == 0.0 {
                continue;
            }
            let diff = (-qp[t] + pqp) / qtt;
            p[t] += diff;
            pqp = (pqp + diff * (diff * qtt + 2.0 * qp[t])) / ((1.0 + diff) * (1.0 + diff));
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

struct SvmClassifier {
    svm: SvmCommon,
    labels: Labels,
    classes: usize,
    /// (first vector, count) per class; empty for a linear model
    per_class: Vec<(usize, usize)>,
    n_vectors: usize,
    features: usize,
    coef: Vec<f64>,
    sv: Vec<f64>,
    rho: Vec<f64>,
    prob_a: Vec<f64>,
    prob_b: Vec<f64>,
    all_positive: bool,
    post: Post,
}

impl SvmClassifier {
    fn from_attrs(ctx: &BuildCtx) -> OpResult<SvmClassifier> {
        let labels = Labels::from_attrs(ctx, "classlabels_ints", "classlabels_strings")?;
        let classes = labels.len().max(1);
        let coef = floats_attr(ctx, "coefficients")?;
        let sv = floats_attr(ctx, "support_vectors")?;
        let rho = floats_attr(ctx, "rho")?;
        if rho.is_empty() {
            return Err(op_err!("attribute 'rho' is required"));
        }
        let mut per_class = vec![];
        let mut n_vectors = 0usize;
        for v in ints_attr(ctx, "vectors_per_class")? {
            let v = to_usize(v, "vectors_per_class")?;
            per_class.push((n_vectors, v));
            n_vectors = n_vectors
                .checked_add(v)
                .ok_or_else(|| op_err!("vectors_per_class is too large"))?;
        }
        let features = if n_vectors > 0 {
            if per_class.len() != classes {
                return Err(op_err!(
                    "vectors_per_class has {} entries for {classes} classes",
                    per_class.len()
                ));
            }
            if sv.len() % n_vectors != 0
                || coef.len() != n_vectors * (classes - 1)
                || rho.len() < classes * (classes - 1) / 2
            {
                return Err(op_err!(
                    "support vectors, coefficients or rho do not fit {n_vectors} vectors of {classes} classes"
                ));
            }
            sv.len() / n_vectors
        } else {
            if coef.len() % classes != 0 {
                return Err(op_err!(
                    "{} coefficients do not fit {classes} classes",
                    coef.len()
                ));
            }
            coef.len() / classes
        };
        let prob_a = floats_attr(ctx, "prob_a")?;
        let prob_b = floats_attr(ctx, "prob_b")?;
        let pairs = classes * (classes - 1) / 2;
        if !prob_a.is_empty() && n_vectors > 0 && (prob_a.len() < pairs || prob_b.len() < pairs) {
            return Err(op_err!("prob_a and prob_b need {pairs} values"));
        }
        Ok(SvmClassifier {
            svm: SvmCommon::from_attrs(ctx)?,
            all_positive: coef.iter().all(|&c| c >= 0.0),
            labels,
            classes,
            per_class,
            n_vectors,
            features,
            coef,
            sv,
            rho,
            prob_a,
            prob_b,
            post: Post::from_attr(ctx)?,
        })
    }

    /// (votes, raw scores) for one row.
    fn raw(&self, x: &[f64], kernels: &mut Vec<f64>) -> (Vec<f64>, Vec<f64>) {
        let k = self.classes;
        let c = self.features;
        if self.n_vectors == 0 {
            let scores = (0..k)
                .map(|j| {
                    self.rho[0]
                        + self
                            .svm
                            .dot(x, &self.coef[j * c..(j + 1) * c], SvmKernel::Linear)
                })
                .collect();
            return (vec![], scores);
        }
        kernels.clear();
        kernels.extend(
            self.sv
                .chunks(c.max(1))
                .map(|s| self.svm.dot(x, s, self.svm.kernel)),
        );
        let nv = self.n_vectors;
        let mut votes = vec![0.0; k];
        let mut scores = Vec::with_capacity(k * (k - 1) / 2);
        let mut e = 0;
        for i in 0..k {
            let (si, ci) = self.per_class[i];
            for j in i + 1..k {
                let (sj, cj) = self.per_class[j];
                let d = |row: usize, start: usize, cnt: usize| -> f64 {
                    (start..start + cnt)
                        .map(|v| self.coef[row * nv + v] * kernels[v])
                        .sum()
                };
                let s = self.rho[e] + d(j - 1, si, ci) + d(i, sj, cj);
                scores.push(s);
                if s > 0.0 {
                    votes[i] += 1.0;
                } else {
                    votes[j] += 1.0;
                }
                e += 1;
            }
        }
        (votes, scores)
    }

    fn probabilities(&self, scores: &[f64]) -> Vec<f64> {
        let k = self.classes;
        let mut r = vec![0.0; k * k];
        let mut idx = 0;
        for i in 0..k {
            for j in i + 1..k {
                let v = 1.0 - logistic(scores[idx] * self.prob_a[idx] + self.prob_b[idx]);
                let v = v.clamp(1e-7, 1.0 - 1e-7);
                r[i * k + j] = v;
                r[j * k + i] = 1.0 - v;
                idx += 1;
            }
        }
        multiclass_probability(k, &r)
    }

    /// One row's label (Ok(class index) or Err(literal label value)) and
    /// its output scores.
    fn row(&self, x: &[f64], kernels: &mut Vec<f64>) -> (Result<usize, i64>, Vec<f64>) {
        let (votes, mut scores) = self.raw(x, kernels);
        let has_proba = !self.prob_a.is_empty() && self.n_vectors > 0;
        if has_proba {
            scores = self.probabilities(&scores);
        }
        let (max_class, max_weight) = if votes.is_empty() {
            let m = argmax(&scores);
            (m, scores.get(m).copied().unwrap_or(0.0))
        } else {
            let m = argmax(&votes);
            (m, votes[m])
        };
        let mut extra = -1;
        let label = if self.rho.len() == 1 {
            if self.labels.len() == 2 {
                extra = 2;
                if !has_proba && self.all_positive && max_weight >= 0.5 {
                    Ok(1)
                } else {
                    Ok(max_class)
                }
            } else {
                Err(i64::from(max_weight > 0.0))
            }
        } else {
            Ok(max_class)
        };
        let out = match scores.len() {
            1 => {
                let s = scores[0];
                if self.post == Post::Probit {
                    vec![probit(s)]
                } else if extra == 2 {
                    let mut row = vec![-s, s];
                    self.post.apply(&mut row);
                    row
                } else {
                    vec![s]
                }
            }
            _ => {
                self.post.apply(&mut scores);
                scores
            }
        };
        (label, out)
    }

    fn run(&self, x: &Tensor) -> OpResult<Vec<Value>> {
        let (n, v) = svm_input(x, self.features)?;
        let c = self.features;
        let mut kernels = Vec::with_capacity(self.n_vectors);
        let mut labels_idx: Vec<Result<usize, i64>> = Vec::with_capacity(n);
        let mut all_scores = Vec::new();
        let mut width = 0;
        for r in 0..n {
            let (label, out) = self.row(&v[r * c..(r + 1) * c], &mut kernels);
            labels_idx.push(label);
            width = out.len();
            all_scores.extend(out);
        }
        if n == 0 {
            // an empty batch still has the score columns a row would have
            width = self.row(&vec![0.0; c], &mut kernels).1.len();
        }
        let label = match &self.labels {
            Labels::Strs(s) => Tensor::from_vec(
                vec![n],
                labels_idx
                    .iter()
                    .map(|l| {
                        let i = match *l {
                            Ok(i) => i,
                            Err(v) => v as usize,
                        };
                        s.get(i)
                            .cloned()
                            .ok_or_else(|| op_err!("class index {i} has no label"))
                    })
                    .collect::<OpResult<Vec<String>>>()?,
            )?,
            Labels::Ints(v) => Tensor::from_vec(
                vec![n],
                labels_idx
                    .iter()
                    .map(|l| match *l {
                        Ok(i) => v.get(i).copied().unwrap_or(i as i64),
                        Err(lit) => lit,
                    })
                    .collect(),
            )?,
        };
        Ok(vec![
            Value::Tensor(label),
            Value::Tensor(f32_tensor(vec![n, width], &all_scores)?),
        ])
    }
}

fn build_svm_classifier(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let m = SvmClassifier::from_attrs(ctx)?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        m.run(tensor_in(inputs, 0)?)
    }))
}

// ----------------------------------------------------------------- CastMap

#[derive(Clone, Copy, Debug, PartialEq)]
enum CastTo {
    Float,
    Str,
    Int,
}

fn build_cast_map(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let to = match string_attr(ctx, "cast_to", "TO_FLOAT")?.as_str() {
        "TO_FLOAT" => CastTo::Float,
        "TO_STRING" => CastTo::Str,
        "TO_INT64" => CastTo::Int,
        other => return Err(op_err!("unknown cast_to '{other}'")),
    };
    let sparse = match string_attr(ctx, "map_form", "DENSE")?.as_str() {
        "DENSE" => false,
        "SPARSE" => true,
        other => return Err(op_err!("unknown map_form '{other}'")),
    };
    let max_map = ctx.node.attr_int("max_map")?.unwrap_or(1);
    let max_map = usize::try_from(max_map)
        .ok()
        .filter(|&m| !sparse || m > 0)
        .ok_or_else(|| op_err!("max_map must be positive for a sparse map, not {max_map}"))?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let m = match inputs.first().copied().flatten() {
            Some(Value::Map(m)) => m,
            Some(other) => return Err(op_err!("input should be a map but is {}", other.kind())),
            None => return Err(op_err!("required input 0 is missing")),
        };
        let keys = m.keys.to_i64_vec()?;
        let vals = m
            .values
            .as_tensor()
            .ok_or_else(|| op_err!("map values should be a tensor"))?;
        if keys.len() != vals.len() {
            return Err(op_err!(
                "map has {} keys but {} values",
                keys.len(),
                vals.len()
            ));
        }
        // each value converted to the output type, as f64 or as text
        let as_num = |i: usize| -> OpResult<f64> {
            match vals.data() {
                Data::Str(v) => v[i]
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| op_err!("map value '{}' is not a number", v[i])),
                _ => Err(op_err!("map values are not text")),
            }
        };
        let nums = if matches!(vals.data(), Data::Str(_)) {
            None
        } else {
            Some(vals.to_f64_vec()?)
        };
        let num = |i: usize| -> OpResult<f64> {
            match &nums {
                Some(v) => Ok(v[i]),
                None => as_num(i),
            }
        };
        let text = |i: usize| -> String {
            match (vals.data(), &nums) {
                (Data::Str(v), _) => v[i].clone(),
                (_, Some(v)) => format!("{:.6}", v[i]),
                _ => String::new(),
            }
        };
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        // output position -> map entry
        let slots: Vec<Option<usize>> = if sparse {
            ctx.check_alloc(max_map, 8)?;
            if let Some(&i) = order.first() {
                if keys[i] < 0 {
                    return Err(op_err!("map key {} is negative", keys[i]));
                }
            }
            let mut s = vec![None; max_map];
            for &i in &order {
                if let Some(slot) = usize::try_from(keys[i]).ok().and_then(|k| s.get_mut(k)) {
                    *slot = Some(i);
                }
            }
            s
        } else {
            order.into_iter().map(Some).collect()
        };
        let shape = vec![1, slots.len()];
        let t = match to {
            CastTo::Float => Tensor::from_vec(
                shape,
                slots
                    .iter()
                    .map(|s| s.map_or(Ok(0.0), |i| num(i).map(|v| v as f32)))
                    .collect::<OpResult<Vec<f32>>>()?,
            )?,
            CastTo::Int => Tensor::from_vec(
                shape,
                slots
                    .iter()
                    .map(|s| s.map_or(Ok(0), |i| num(i).map(|v| v as i64)))
                    .collect::<OpResult<Vec<i64>>>()?,
            )?,
            CastTo::Str => Tensor::from_vec(
                shape,
                slots
                    .iter()
                    .map(|s| s.map_or_else(|| "0.f".to_string(), text))
                    .collect(),
            )?,
        };
        one(t)
    }))
}

pub fn register(r: &mut Registry) {
    r.add(ML, "ArrayFeatureExtractor", build_afe);
    r.add(ML, "Binarizer", build_binarizer);
    r.add(ML, "CastMap", build_cast_map);
    r.add(ML, "CategoryMapper", build_category_mapper);
    r.add(ML, "DictVectorizer", build_dict_vectorizer);
    r.add(ML, "FeatureVectorizer", build_feature_vectorizer);
    r.add(ML, "Imputer", build_imputer);
    r.add(ML, "LabelEncoder", build_label_encoder);
    r.add(ML, "LinearClassifier", build_linear_classifier);
    r.add(ML, "LinearRegressor", build_linear_regressor);
    r.add(ML, "Normalizer", build_normalizer);
    r.add(ML, "OneHotEncoder", build_one_hot_encoder);
    r.add(ML, "Scaler", build_scaler);
    r.add(ML, "SVMClassifier", build_svm_classifier);
    r.add(ML, "SVMRegressor", build_svm_regressor);
    r.add(ML, "TreeEnsemble", build_tree_ensemble);
    r.add(ML, "TreeEnsembleClassifier", build_tree_classifier);
    r.add(ML, "TreeEnsembleRegressor", build_tree_regressor);
    r.add(ML, "ZipMap", build_zipmap);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ir::{Attr, Graph, Model, Node, ValueInfo};
    use crate::{Session, SessionOptions};

    /// Runs one ai.onnx.ml node of `opset` on `inputs`.
    fn run_op(
        op: &str,
        opset: i64,
        attrs: Vec<(&str, Attr)>,
        inputs: Vec<Value>,
        n_out: usize,
    ) -> crate::Result<Vec<Value>> {
        let in_names: Vec<String> = (0..inputs.len()).map(|i| format!("x{i}")).collect();
        let out_names: Vec<String> = (0..n_out).map(|i| format!("y{i}")).collect();
        let info = |n: &String| ValueInfo {
            name: n.clone(),
            ty: None,
        };
        let node = Node {
            name: "n".into(),
            op_type: op.into(),
            domain: ML.into(),
            inputs: in_names.clone(),
            outputs: out_names.clone(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let mut opsets = BTreeMap::new();
        opsets.insert(String::new(), 21);
        opsets.insert(ML.to_string(), opset);
        let model = Model {
            ir_version: 10,
            opsets,
            graph: Graph {
                nodes: vec![node],
                inputs: in_names.iter().map(info).collect(),
                outputs: out_names.iter().map(info).collect(),
                ..Graph::default()
            },
            ..Model::default()
        };
        let s = Session::from_model(model, SessionOptions::default())?;
        s.run(in_names.into_iter().zip(inputs).collect())
    }

    fn tf(shape: &[usize], v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap())
    }

    fn ti(shape: &[usize], v: &[i64]) -> Value {
        Value::Tensor(Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap())
    }

    fn ts(v: &[&str]) -> Value {
        Value::Tensor(
            Tensor::from_vec(vec![v.len()], v.iter().map(|s| s.to_string()).collect()).unwrap(),
        )
    }

    fn floats(v: &[f32]) -> Attr {
        Attr::Floats(v.to_vec())
    }

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    fn strs(v: &[&str]) -> Attr {
        Attr::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    fn f32s(v: &Value) -> Vec<f32> {
        v.as_tensor().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    fn i64s(v: &Value) -> Vec<i64> {
        v.as_tensor().unwrap().to_i64_vec().unwrap()
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_tensor()
            .unwrap()
            .as_slice::<String>()
            .unwrap()
            .to_vec()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn label_encoder_all_forms() {
        // opset 2: strings -> int64 with a default
        let a = vec![
            ("keys_strings", strs(&["a", "b"])),
            ("values_int64s", ints(&[7, 8])),
            ("default_int64", Attr::Int(-5)),
        ];
        let y = run_op("LabelEncoder", 2, a, vec![ts(&["b", "z", "a"])], 1).unwrap();
        assert_eq!(i64s(&y[0]), vec![8, -5, 7]);
        // float keys match NaN; the default default is "_Unused"
        let a = vec![
            ("keys_floats", floats(&[f32::NAN, 1.5])),
            ("values_strings", strs(&["nan", "x"])),
        ];
        let y = run_op(
            "LabelEncoder",
            2,
            a,
            vec![tf(&[3], &[1.5, f32::NAN, 2.0])],
            1,
        )
        .unwrap();
        assert_eq!(strings(&y[0]), vec!["x", "nan", "_Unused"]);
        // opset 4 tensors: int64 keys -> double values
        let a = vec![
            (
                "keys_tensor",
                Attr::Tensor(Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap()),
            ),
            (
                "values_tensor",
                Attr::Tensor(Tensor::from_vec(vec![2], vec![0.5f64, 0.25]).unwrap()),
            ),
        ];
        let y = run_op("LabelEncoder", 4, a, vec![ti(&[3], &[2, 3, 1])], 1).unwrap();
        let t = y[0].as_tensor().unwrap();
        assert_eq!(t.as_slice::<f64>().unwrap(), &[0.25, -0.0, 0.5]);
        // opset 1: classes_strings both ways
        let a = vec![("classes_strings", strs(&["p", "q"]))];
        let y = run_op("LabelEncoder", 1, a.clone(), vec![ts(&["q", "r"])], 1).unwrap();
        assert_eq!(i64s(&y[0]), vec![1, -1]);
        let y = run_op("LabelEncoder", 1, a, vec![ti(&[2], &[0, 4])], 1).unwrap();
        assert_eq!(strings(&y[0]), vec!["p", "_Unused"]);
    }

    #[test]
    fn preprocessing() {
        let x = tf(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let y = run_op(
            "ArrayFeatureExtractor",
            1,
            vec![],
            vec![x.clone(), ti(&[2], &[2, 0])],
            1,
        )
        .unwrap();
        assert_eq!(y[0].as_tensor().unwrap().shape(), &[2, 2]);
        assert_eq!(f32s(&y[0]), vec![3., 1., 6., 4.]);
        let bad = run_op(
            "ArrayFeatureExtractor",
            1,
            vec![],
            vec![x.clone(), ti(&[1], &[3])],
            1,
        );
        assert!(bad.unwrap_err().to_string().contains("out of range"));

        let y = run_op(
            "Binarizer",
            1,
            vec![("threshold", Attr::Float(2.5))],
            vec![x.clone()],
            1,
        )
        .unwrap();
        assert_eq!(f32s(&y[0]), vec![0., 0., 1., 1., 1., 1.]);

        let a = vec![("offset", floats(&[1., 2., 3.])), ("scale", floats(&[2.]))];
        let y = run_op("Scaler", 1, a, vec![x.clone()], 1).unwrap();
        assert_eq!(f32s(&y[0]), vec![0., 0., 0., 6., 6., 6.]);

        let y = run_op(
            "Normalizer",
            1,
            vec![("norm", Attr::String("L1".into()))],
            vec![x],
            1,
        )
        .unwrap();
        close(
            &f32s(&y[0]),
            &[1. / 6., 2. / 6., 0.5, 4. / 15., 5. / 15., 6. / 15.],
        );
        let y = run_op(
            "Normalizer",
            1,
            vec![("norm", Attr::String("L2".into()))],
            vec![tf(&[2], &[3., 4.])],
            1,
        )
        .unwrap();
        close(&f32s(&y[0]), &[0.6, 0.8]);

        let a = vec![
            ("imputed_value_floats", floats(&[10., 20.])),
            ("replaced_value_float", Attr::Float(f32::NAN)),
        ];
        let y = run_op(
            "Imputer",
            1,
            a,
            vec![tf(&[2, 2], &[f32::NAN, 1., 2., f32::NAN])],
            1,
        )
        .unwrap();
        assert_eq!(f32s(&y[0]), vec![10., 1., 2., 20.]);
        let a = vec![
            ("imputed_value_int64s", ints(&[9])),
            ("replaced_value_int64", Attr::Int(-1)),
        ];
        let y = run_op("Imputer", 1, a, vec![ti(&[1, 3], &[-1, 5, -1])], 1).unwrap();
        assert_eq!(i64s(&y[0]), vec![9, 5, 9]);
    }

    #[test]
    fn linear_models() {
        let x = tf(&[2, 2], &[1., 2., 3., 4.]);
        let a = vec![
            ("coefficients", floats(&[1., 1., 1., -1.])),
            ("intercepts", floats(&[0.5, 0.])),
            ("targets", Attr::Int(2)),
        ];
        let y = run_op("LinearRegressor", 1, a, vec![x.clone()], 1).unwrap();
        assert_eq!(f32s(&y[0]), vec![3.5, -1., 7.5, -1.]);

        // one coefficient row, two classes: scores [-s, s]
        let a = vec![
            ("coefficients", floats(&[1., -1.])),
            ("intercepts", floats(&[0.5])),
            ("classlabels_strings", strs(&["neg", "pos"])),
        ];
        let y = run_op(
            "LinearClassifier",
            1,
            a,
            vec![tf(&[2, 2], &[3., 1., 0., 2.])],
            2,
        )
        .unwrap();
        assert_eq!(strings(&y[0]), vec!["pos", "neg"]);
        assert_eq!(f32s(&y[1]), vec![-2.5, 2.5, 1.5, -1.5]);

        // three classes with softmax
        let a = vec![
            ("coefficients", floats(&[1., 0., 0., 1., 0., 0.])),
            ("classlabels_ints", ints(&[10, 20, 30])),
            ("post_transform", Attr::String("SOFTMAX".into())),
        ];
        let y = run_op("LinearClassifier", 1, a, vec![x], 2).unwrap();
        assert_eq!(i64s(&y[0]), vec![20, 20]);
        let e = [1f32.exp(), 2f32.exp(), 1.];
        let s: f32 = e.iter().sum();
        close(&f32s(&y[1])[..3], &[e[0] / s, e[1] / s, e[2] / s]);
    }

    #[test]
    fn encoders() {
        let a = vec![("cats_strings", strs(&["a", "b", "c"]))];
        let y = run_op("OneHotEncoder", 1, a.clone(), vec![ts(&["c", "x"])], 1).unwrap();
        assert_eq!(y[0].as_tensor().unwrap().shape(), &[2, 3]);
        assert_eq!(f32s(&y[0]), vec![0., 0., 1., 0., 0., 0.]);
        let mut strict = a;
        strict.push(("zeros", Attr::Int(0)));
        assert!(run_op("OneHotEncoder", 1, strict, vec![ts(&["x"])], 1).is_err());
        let a = vec![("cats_int64s", ints(&[4, 2]))];
        let y = run_op("OneHotEncoder", 1, a, vec![tf(&[2], &[2., 4.])], 1).unwrap();
        assert_eq!(f32s(&y[0]), vec![0., 1., 1., 0.]);

        let a = vec![
            ("cats_strings", strs(&["x", "y"])),
            ("cats_int64s", ints(&[5, 6])),
            ("default_string", Attr::String("?".into())),
        ];
        let y = run_op("CategoryMapper", 1, a.clone(), vec![ts(&["y", "q"])], 1).unwrap();
        assert_eq!(i64s(&y[0]), vec![6, -1]);
        let y = run_op("CategoryMapper", 1, a, vec![ti(&[2], &[5, 7])], 1).unwrap();
        assert_eq!(strings(&y[0]), vec!["x", "?"]);
    }

    #[test]
    fn maps_and_vectors() {
        let a = vec![("classlabels_strings", strs(&["a", "b"]))];
        let y = run_op("ZipMap", 1, a, vec![tf(&[2, 2], &[0.25, 0.75, 1., 0.])], 1).unwrap();
        let Value::Sequence { items, .. } = &y[0] else {
            panic!("not a sequence")
        };
        assert_eq!(items.len(), 2);
        let Value::Map(m) = &items[1] else {
            panic!("not a map")
        };
        assert_eq!(m.keys.as_slice::<String>().unwrap(), &["a", "b"]);
        assert_eq!(f32s(&m.values), vec![1., 0.]);

        let map = Value::Map(MapValue {
            keys: Tensor::from_vec(vec![2], vec!["c".to_string(), "a".to_string()]).unwrap(),
            values: Box::new(ti(&[2], &[3, 1])),
        });
        let a = vec![("string_vocabulary", strs(&["a", "b", "c"]))];
        let y = run_op("DictVectorizer", 1, a.clone(), vec![map.clone()], 1).unwrap();
        assert_eq!(y[0].as_tensor().unwrap().shape(), &[1, 3]);
        assert_eq!(i64s(&y[0]), vec![1, 0, 3]);
        let other = Value::Map(MapValue {
            keys: Tensor::from_vec(vec![1], vec!["b".to_string()]).unwrap(),
            values: Box::new(ti(&[1], &[9])),
        });
        let seq = Value::Sequence {
            elem_dtype: None,
            items: vec![map, other],
        };
        let y = run_op("DictVectorizer", 1, a, vec![seq], 1).unwrap();
        assert_eq!(y[0].as_tensor().unwrap().shape(), &[2, 3]);
        assert_eq!(i64s(&y[0]), vec![1, 0, 3, 0, 9, 0]);

        let a = vec![("inputdimensions", ints(&[1, 3]))];
        let ins = vec![ti(&[2, 1], &[1, 2]), tf(&[2, 2], &[3., 4., 5., 6.])];
        let y = run_op("FeatureVectorizer", 1, a, ins, 1).unwrap();
        assert_eq!(f32s(&y[0]), vec![1., 3., 4., 0., 2., 5., 6., 0.]);
    }

    /// One stump per tree: x[0] <= 1 goes to node 1, else node 2.
    fn stump_attrs(trees: i64) -> Vec<(&'static str, Attr)> {
        let mut t = vec![];
        for i in 0..trees {
            t.extend([i, i, i]);
        }
        let n = trees as usize;
        vec![
            ("nodes_treeids", ints(&t)),
            ("nodes_nodeids", ints(&[0, 1, 2].repeat(n))),
            ("nodes_featureids", ints(&[0, 0, 0].repeat(n))),
            (
                "nodes_modes",
                strs(&["BRANCH_LEQ", "LEAF", "LEAF"].repeat(n)),
            ),
            ("nodes_values", floats(&[1., 0., 0.].repeat(n))),
            ("nodes_truenodeids", ints(&[1, 0, 0].repeat(n))),
            ("nodes_falsenodeids", ints(&[2, 0, 0].repeat(n))),
            (
                "nodes_missing_value_tracks_true",
                ints(&[1, 0, 0].repeat(n)),
            ),
        ]
    }

    #[test]
    fn tree_regressor_and_classifier() {
        let mut a = stump_attrs(2);
        a.extend([
            ("target_treeids", ints(&[0, 0, 1, 1])),
            ("target_nodeids", ints(&[1, 2, 1, 2])),
            ("target_ids", ints(&[0, 0, 0, 0])),
            ("target_weights", floats(&[1., 2., 10., 20.])),
            ("base_values", floats(&[100.])),
            ("aggregate_function", Attr::String("AVERAGE".into())),
        ]);
        let y = run_op(
            "TreeEnsembleRegressor",
            3,
            a,
            vec![tf(&[3, 1], &[0., 5., f32::NAN])],
            1,
        )
        .unwrap();
        // averages: (1+10)/2, (2+20)/2, NaN tracks true
        assert_eq!(f32s(&y[0]), vec![105.5, 111., 105.5]);

        let mut a = stump_attrs(1);
        a.extend([
            ("class_treeids", ints(&[0, 0, 0, 0])),
            ("class_nodeids", ints(&[1, 1, 2, 2])),
            ("class_ids", ints(&[0, 1, 0, 1])),
            ("class_weights", floats(&[0.8, 0.2, 0.3, 0.7])),
            ("classlabels_strings", strs(&["no", "yes"])),
        ]);
        let y = run_op(
            "TreeEnsembleClassifier",
            3,
            a,
            vec![tf(&[2, 1], &[0., 2.])],
            2,
        )
        .unwrap();
        assert_eq!(strings(&y[0]), vec!["no", "yes"]);
        close(&f32s(&y[1]), &[0.8, 0.2, 0.3, 0.7]);

        // binary: weights for one class only; class 0 gets 1 - score
        let mut a = stump_attrs(1);
        a.extend([
            ("class_treeids", ints(&[0, 0])),
            ("class_nodeids", ints(&[1, 2])),
            ("class_ids", ints(&[1, 1])),
            ("class_weights", floats(&[0.25, 0.75])),
            ("classlabels_int64s", ints(&[0, 1])),
        ]);
        let y = run_op(
            "TreeEnsembleClassifier",
            1,
            a,
            vec![tf(&[2, 1], &[0., 2.])],
            2,
        )
        .unwrap();
        assert_eq!(i64s(&y[0]), vec![0, 1]);
        close(&f32s(&y[1]), &[0.75, 0.25, 0.25, 0.75]);

        // binary with signed weights, one base value and LOGISTIC (what
        // skl2onnx writes for binary gradient boosting): score v = weight +
        // base, probabilities [1 - sigmoid(v), sigmoid(v)], label 1 when v > 0
        let mut a = stump_attrs(1);
        a.extend([
            ("class_treeids", ints(&[0, 0])),
            ("class_nodeids", ints(&[1, 2])),
            ("class_ids", ints(&[0, 0])),
            ("class_weights", floats(&[-0.5, 0.3])),
            ("base_values", floats(&[0.1])),
            ("classlabels_int64s", ints(&[0, 1])),
            ("post_transform", Attr::String("LOGISTIC".into())),
        ]);
        let y = run_op(
            "TreeEnsembleClassifier",
            3,
            a,
            vec![tf(&[2, 1], &[0., 2.])],
            2,
        )
        .unwrap();
        assert_eq!(i64s(&y[0]), vec![0, 1]);
        // sigmoid(0.4) = 0.598687660112452
        close(
            &f32s(&y[1]),
            &[0.598_687_7, 0.401_312_3, 0.401_312_3, 0.598_687_7],
        );
    }

    #[test]
    fn tree_ensemble_v5() {
        // root: x[1] < 2 -> leaf 0 else node 1; node 1: x[0] in {1, 3} -> leaf 1 else leaf 2
        let a = vec![
            ("nodes_featureids", ints(&[1, 0])),
            (
                "nodes_modes",
                Attr::Tensor(Tensor::from_vec(vec![2], vec![1u8, 6]).unwrap()),
            ),
            (
                "nodes_splits",
                Attr::Tensor(Tensor::from_vec(vec![2], vec![2f32, 0.]).unwrap()),
            ),
            ("nodes_truenodeids", ints(&[0, 1])),
            ("nodes_trueleafs", ints(&[1, 1])),
            ("nodes_falsenodeids", ints(&[1, 2])),
            ("nodes_falseleafs", ints(&[0, 1])),
            (
                "membership_values",
                Attr::Tensor(Tensor::from_vec(vec![3], vec![1f32, 3., f32::NAN]).unwrap()),
            ),
            ("leaf_targetids", ints(&[0, 1, 1])),
            (
                "leaf_weights",
                Attr::Tensor(Tensor::from_vec(vec![3], vec![5f32, 6., 7.]).unwrap()),
            ),
            ("tree_roots", ints(&[0])),
            ("n_targets", Attr::Int(2)),
        ];
        let x = tf(&[3, 2], &[0., 1., 3., 2., 2., 2.]);
        let y = run_op("TreeEnsemble", 5, a.clone(), vec![x], 1).unwrap();
        assert_eq!(f32s(&y[0]), vec![5., 0., 0., 6., 0., 7.]);
        // a feature past the input's width is an error, not a panic
        let err = run_op("TreeEnsemble", 5, a, vec![tf(&[1, 1], &[0.])], 1).unwrap_err();
        assert!(err.to_string().contains("features"));
    }

    #[test]
    fn svm_regressor_and_classifiers() {
        // values from onnx.reference
        let a = vec![
            ("n_supports", Attr::Int(2)),
            ("support_vectors", floats(&[0., 0., 1., 1.])),
            ("coefficients", floats(&[1., -1.])),
            ("kernel_params", floats(&[0.5, 0., 0.])),
            ("kernel_type", Attr::String("RBF".into())),
            ("rho", floats(&[0.1])),
        ];
        let y = run_op(
            "SVMRegressor",
            1,
            a,
            vec![tf(&[2, 2], &[0., 1., 0., 0.])],
            1,
        )
        .unwrap();
        close(&f32s(&y[0]), &[0.1, 1.1 - (-1f32).exp()]);

        // two classes, one support vector each: scores [-s, s]
        let a = vec![
            ("coefficients", floats(&[1., -1.])),
            ("rho", floats(&[0.])),
            ("classlabels_ints", ints(&[3, 4])),
            ("vectors_per_class", ints(&[1, 1])),
            ("support_vectors", floats(&[1., 0., 0., 1.])),
            ("post_transform", Attr::String("LOGISTIC".into())),
        ];
        let x = tf(&[2, 2], &[2., 1., 0., 3.]);
        let y = run_op("SVMClassifier", 1, a, vec![x.clone()], 2).unwrap();
        assert_eq!(i64s(&y[0]), vec![3, 4]);
        close(
            &f32s(&y[1]),
            &[0.2689414, 0.7310586, 0.95257413, 0.04742587],
        );

        // three classes, one-vs-one votes, with and without probabilities
        let base = vec![
            ("coefficients", floats(&[1., -1., 0.5, 1., -0.5, -1.])),
            ("rho", floats(&[0., 0.1, -0.1])),
            ("classlabels_ints", ints(&[0, 1, 2])),
            ("vectors_per_class", ints(&[1, 1, 1])),
            ("support_vectors", floats(&[1., 0., 0., 1., 1., 1.])),
        ];
        let mut a = base.clone();
        a.extend([
            ("kernel_type", Attr::String("POLY".into())),
            ("kernel_params", floats(&[0.5, 1., 2.])),
        ]);
        let y = run_op("SVMClassifier", 1, a, vec![x.clone()], 2).unwrap();
        assert_eq!(i64s(&y[0]), vec![0, 0]);
        close(&f32s(&y[1]), &[1.75, 7.225, -7.475, -5.25, 4.225, -9.475]);
        let mut a = base;
        a.extend([
            ("kernel_type", Attr::String("RBF".into())),
            ("kernel_params", floats(&[0.5, 0., 0.])),
            ("prob_a", floats(&[-1., -2., -1.5])),
            ("prob_b", floats(&[0.1, 0., -0.1])),
        ]);
        // an empty batch keeps one probability column per class
        let y = run_op("SVMClassifier", 1, a.clone(), vec![tf(&[0, 2], &[])], 2).unwrap();
        assert_eq!(y[0].as_tensor().unwrap().shape(), &[0]);
        assert_eq!(y[1].as_tensor().unwrap().shape(), &[0, 3]);
        let y = run_op("SVMClassifier", 1, a, vec![x], 2).unwrap();
        assert_eq!(i64s(&y[0]), vec![0, 0]);
        // libsvm/ONNX Runtime pairwise coupling (onnx.reference's version
        // computes the off-diagonal of Q with a dot product and differs)
        let want = [
            0.53053206, 0.25144312, 0.21802483, 0.34098285, 0.3290658, 0.32995135,
        ];
        for (g, w) in f32s(&y[1]).iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }

    #[test]
    fn cast_map_dense_and_sparse() {
        let map = Value::Map(MapValue {
            keys: Tensor::from_vec(vec![3], vec![4i64, 0, 2]).unwrap(),
            values: Box::new(tf(&[3], &[1.5, 2.0, -3.25])),
        });
        let y = run_op("CastMap", 1, vec![], vec![map.clone()], 1).unwrap();
        assert_eq!(y[0].as_tensor().unwrap().shape(), &[1, 3]);
        assert_eq!(f32s(&y[0]), vec![2.0, -3.25, 1.5]);
        let a = vec![
            ("map_form", Attr::String("SPARSE".into())),
            ("max_map", Attr::Int(4)),
            ("cast_to", Attr::String("TO_INT64".into())),
        ];
        let y = run_op("CastMap", 1, a, vec![map.clone()], 1).unwrap();
        assert_eq!(i64s(&y[0]), vec![2, 0, -3, 0]);
        let a = vec![("cast_to", Attr::String("TO_STRING".into()))];
        let y = run_op("CastMap", 1, a, vec![map], 1).unwrap();
        assert_eq!(strings(&y[0]), vec!["2.000000", "-3.250000", "1.500000"]);
        let words = Value::Map(MapValue {
            keys: Tensor::from_vec(vec![1], vec![0i64]).unwrap(),
            values: Box::new(ts(&["x"])),
        });
        assert!(run_op("CastMap", 1, vec![], vec![words], 1).is_err());
    }
}
