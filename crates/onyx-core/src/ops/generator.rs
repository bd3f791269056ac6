//! Operators that make tensors from attributes or shapes: Constant,
//! ConstantOfShape, Range, EyeLike, and the random generators (RandomUniform,
//! RandomNormal, their *Like forms, Bernoulli, Multinomial).
//!
//! The random operators use a small self-contained PRNG (splitmix64). With a
//! `seed` attribute a kernel repeats the same stream on every run; without
//! one each run draws a fresh seed. Their outputs cannot match another
//! runtime's numbers, only the distribution, shape and element type.

use std::sync::atomic::{AtomicU64, Ordering};

use onyx_tensor::{DType, Data, Tensor, Value};

use super::cast::cast_tensor;
use super::{one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

fn dtype_of(code: i64, what: &str) -> OpResult<DType> {
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("attribute '{what}' names unknown element type {code}"))
}

/// The tensor a Constant node holds, from whichever attribute it uses.
fn constant_value(ctx: &BuildCtx) -> OpResult<Tensor> {
    let n = ctx.node;
    let mut found: Vec<Tensor> = Vec::new();
    if let Some(t) = n.attr_tensor("value")? {
        found.push(t);
    }
    if let Some(t) = n.attr_tensor("sparse_value")? {
        found.push(t);
    }
    if let Some(x) = n.attr_float("value_float")? {
        found.push(Tensor::scalar(x));
    }
    if let Some(v) = n.attr_floats("value_floats")? {
        found.push(Tensor::from_vec(vec![v.len()], v)?);
    }
    if let Some(x) = n.attr_int("value_int")? {
        found.push(Tensor::scalar(x));
    }
    if let Some(v) = n.attr_ints("value_ints")? {
        found.push(Tensor::from_vec(vec![v.len()], v)?);
    }
    if let Some(s) = n.attr_string("value_string")? {
        found.push(Tensor::scalar(s));
    }
    if let Some(v) = n.attr_strings("value_strings")? {
        found.push(Tensor::from_vec(vec![v.len()], v)?);
    }
    let count = found.len();
    match found.pop() {
        Some(t) if count == 1 => Ok(t),
        Some(_) => Err(op_err!(
            "Constant needs exactly one value attribute but has {count}"
        )),
        None => Err(op_err!("Constant has no value attribute")),
    }
}

fn build_constant(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let value = Value::Tensor(constant_value(ctx)?);
    Ok(Box::new(move |_: &RunCtx, _: &[Option<&Value>]| {
        Ok(vec![value.clone()])
    }))
}

/// A shape read from an int64 input, as usize dims; negative dims are an error.
fn shape_from_input(inputs: &[Option<&Value>], i: usize) -> OpResult<Vec<usize>> {
    let t = tensor_in(inputs, i)?;
    if t.rank() > 1 {
        return Err(op_err!(
            "the shape input should be 1-D but has shape {:?}",
            t.shape()
        ));
    }
    t.to_i64_vec()?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| op_err!("shape dimension {d} is negative")))
        .collect()
}

fn checked_numel(ctx: &RunCtx, shape: &[usize], dtype: DType) -> OpResult<usize> {
    let n = super::shape::checked_numel(shape)?;
    ctx.check_alloc(n, dtype.size_in_memory().max(1))?;
    Ok(n)
}

fn build_constant_of_shape(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let value = match ctx.node.attr_tensor("value")? {
        Some(t) if t.len() == 1 => t,
        Some(t) => {
            return Err(op_err!(
                "attribute 'value' should hold one element but holds {}",
                t.len()
            ))
        }
        None => Tensor::scalar(0f32),
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let shape = shape_from_input(inputs, 0)?;
        let n = checked_numel(ctx, &shape, value.dtype())?;
        one(value.gather_flat(shape, std::iter::repeat_n(0, n))?)
    }))
}

fn scalar_of(t: &Tensor, name: &str) -> OpResult<()> {
    if t.len() != 1 {
        return Err(op_err!(
            "input '{name}' should be a scalar but has shape {:?}",
            t.shape()
        ));
    }
    Ok(())
}

/// The number of elements of `range(start, limit, delta)`.
fn range_len(start: f64, limit: f64, delta: f64) -> OpResult<usize> {
    if delta == 0.0 || delta.is_nan() {
        return Err(op_err!("Range delta must be a non-zero number"));
    }
    let n = ((limit - start) / delta).ceil();
    if n.is_nan() || n.is_infinite() {
        return Err(op_err!(
            "Range({start}, {limit}, {delta}) has no finite length"
        ));
    }
    if n <= 0.0 {
        return Ok(0);
    }
    if n >= usize::MAX as f64 {
        return Err(op_err!("Range({start}, {limit}, {delta}) is too long"));
    }
    Ok(n as usize)
}

/// The int range exactly, in i128 so no step can overflow.
fn int_range(start: i128, limit: i128, delta: i128) -> OpResult<(usize, Vec<i128>)> {
    if delta == 0 {
        return Err(op_err!("Range delta must be non-zero"));
    }
    let span = limit - start;
    // ceil(span / delta)
    let q = span / delta;
    let n = if span % delta != 0 && ((span < 0) == (delta < 0)) {
        q + 1
    } else {
        q
    };
    let n = usize::try_from(n.max(0)).map_err(|_| op_err!("Range is too long"))?;
    Ok((n, vec![start, delta]))
}

fn run_range(ctx: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let start = tensor_in(inputs, 0)?;
    let limit = tensor_in(inputs, 1)?;
    let delta = tensor_in(inputs, 2)?;
    scalar_of(start, "start")?;
    scalar_of(limit, "limit")?;
    scalar_of(delta, "delta")?;
    let dtype = start.dtype();
    if limit.dtype() != dtype || delta.dtype() != dtype {
        return Err(op_err!(
            "Range inputs have different element types {}, {} and {}",
            dtype,
            limit.dtype(),
            delta.dtype()
        ));
    }
    if dtype.is_float() {
        let s = start.to_f64_vec()?[0];
        let l = limit.to_f64_vec()?[0];
        let d = delta.to_f64_vec()?[0];
        let n = range_len(s, l, d)?;
        ctx.check_alloc(n, dtype.size_in_memory())?;
        let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
        let t = Tensor::from_vec(vec![n], v)?;
        return one(cast_tensor(&t, dtype, false)?);
    }
    let wide = |t: &Tensor| -> OpResult<i128> {
        Ok(match t.data() {
            Data::U64(v) => i128::from(v[0]),
            _ => i128::from(t.to_i64_vec()?[0]),
        })
    };
    let (n, sd) = int_range(wide(start)?, wide(limit)?, wide(delta)?)?;
    ctx.check_alloc(n, dtype.size_in_memory())?;
    let (s, d) = (sd[0], sd[1]);
    let t = match dtype {
        DType::Int8 => {
            Tensor::from_vec(vec![n], (0..n).map(|i| (s + i as i128 * d) as i8).collect())?
        }
        DType::Int16 => Tensor::from_vec(
            vec![n],
            (0..n).map(|i| (s + i as i128 * d) as i16).collect(),
        )?,
        DType::Int32 => Tensor::from_vec(
            vec![n],
            (0..n).map(|i| (s + i as i128 * d) as i32).collect(),
        )?,
        DType::Int64 => Tensor::from_vec(
            vec![n],
            (0..n).map(|i| (s + i as i128 * d) as i64).collect(),
        )?,
        DType::Uint8 => {
            Tensor::from_vec(vec![n], (0..n).map(|i| (s + i as i128 * d) as u8).collect())?
        }
        DType::Uint16 => Tensor::from_vec(
            vec![n],
            (0..n).map(|i| (s + i as i128 * d) as u16).collect(),
        )?,
        DType::Uint32 => Tensor::from_vec(
            vec![n],
            (0..n).map(|i| (s + i as i128 * d) as u32).collect(),
        )?,
        DType::Uint64 => Tensor::from_vec(
            vec![n],
            (0..n).map(|i| (s + i as i128 * d) as u64).collect(),
        )?,
        other => return Err(op_err!("Range does not support element type {other}")),
    };
    one(t)
}

fn build_range(_ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(run_range))
}

fn build_eye_like(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let dtype = ctx
        .node
        .attr_int("dtype")?
        .map(|c| dtype_of(c, "dtype"))
        .transpose()?;
    let k = ctx.node.attr_int("k")?.unwrap_or(0);
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (rows, cols) = match x.shape() {
            [r, c] => (*r, *c),
            s => return Err(op_err!("EyeLike needs a 2-D input but got shape {s:?}")),
        };
        let to = dtype.unwrap_or(x.dtype());
        let n = checked_numel(ctx, &[rows, cols], to)?;
        let mut v = vec![0f64; n];
        for r in 0..rows {
            let c = r as i128 + i128::from(k);
            if c >= 0 && (c as usize) < cols {
                v[r * cols + c as usize] = 1.0;
            }
        }
        let t = Tensor::from_vec(vec![rows, cols], v)?;
        one(cast_tensor(&t, to, true)?)
    }))
}

/// splitmix64: small, fast and good enough for sampling.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Where a kernel's random stream starts: fixed by `seed`, else fresh per run.
struct SeedSource {
    fixed: Option<u64>,
    counter: AtomicU64,
}

impl SeedSource {
    fn from_attr(ctx: &BuildCtx) -> OpResult<SeedSource> {
        let fixed = ctx.node.attr_float("seed")?.map(|s| u64::from(s.to_bits()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x1234_5678);
        Ok(SeedSource {
            fixed,
            counter: AtomicU64::new(now),
        })
    }

    fn rng(&self) -> Rng {
        match self.fixed {
            Some(s) => Rng(s ^ 0x5EED_5EED_5EED_5EED),
            None => Rng(self
                .counter
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)),
        }
    }
}

#[derive(Clone, Copy)]
enum Dist {
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, scale: f64 },
}

fn read_dist(ctx: &BuildCtx, normal: bool) -> OpResult<Dist> {
    let n = ctx.node;
    Ok(if normal {
        Dist::Normal {
            mean: f64::from(n.attr_float("mean")?.unwrap_or(0.0)),
            scale: f64::from(n.attr_float("scale")?.unwrap_or(1.0)),
        }
    } else {
        Dist::Uniform {
            low: f64::from(n.attr_float("low")?.unwrap_or(0.0)),
            high: f64::from(n.attr_float("high")?.unwrap_or(1.0)),
        }
    })
}

fn sample(
    ctx: &RunCtx,
    seeds: &SeedSource,
    dist: Dist,
    shape: Vec<usize>,
    to: DType,
) -> OpResult<Tensor> {
    if !matches!(
        to,
        DType::Float | DType::Double | DType::Float16 | DType::BFloat16
    ) {
        return Err(op_err!(
            "random values of element type {to} are not supported"
        ));
    }
    let n = checked_numel(ctx, &shape, to)?;
    let mut rng = seeds.rng();
    let v: Vec<f64> = (0..n)
        .map(|_| match dist {
            Dist::Uniform { low, high } => low + (high - low) * rng.uniform(),
            Dist::Normal { mean, scale } => mean + scale * rng.normal(),
        })
        .collect();
    cast_tensor(&Tensor::from_vec(shape, v)?, to, false)
}

fn build_random(ctx: &BuildCtx, normal: bool) -> OpResult<Box<dyn Kernel>> {
    let dist = read_dist(ctx, normal)?;
    let to = dtype_of(ctx.node.attr_int("dtype")?.unwrap_or(1), "dtype")?;
    let shape: Vec<usize> = ctx
        .node
        .attr_ints("shape")?
        .ok_or_else(|| op_err!("attribute 'shape' is required"))?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| op_err!("shape dimension {d} is negative")))
        .collect::<OpResult<_>>()?;
    let seeds = SeedSource::from_attr(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, _: &[Option<&Value>]| {
        one(sample(ctx, &seeds, dist, shape.clone(), to)?)
    }))
}

fn build_random_like(ctx: &BuildCtx, normal: bool) -> OpResult<Box<dyn Kernel>> {
    let dist = read_dist(ctx, normal)?;
    let to = ctx
        .node
        .attr_int("dtype")?
        .map(|c| dtype_of(c, "dtype"))
        .transpose()?;
    let seeds = SeedSource::from_attr(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let to = to.unwrap_or(x.dtype());
        one(sample(ctx, &seeds, dist, x.shape().to_vec(), to)?)
    }))
}

fn build_bernoulli(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let to = ctx
        .node
        .attr_int("dtype")?
        .map(|c| dtype_of(c, "dtype"))
        .transpose()?;
    let seeds = SeedSource::from_attr(ctx)?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        if !x.dtype().is_float() {
            return Err(op_err!(
                "Bernoulli needs float probabilities, got {}",
                x.dtype()
            ));
        }
        let p = x.to_f64_vec()?;
        let mut rng = seeds.rng();
        let v: Vec<f64> = p
            .iter()
            .map(|&p| if rng.uniform() < p { 1.0 } else { 0.0 })
            .collect();
        let t = Tensor::from_vec(x.shape().to_vec(), v)?;
        one(cast_tensor(&t, to.unwrap_or(x.dtype()), true)?)
    }))
}

fn build_multinomial(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let to = dtype_of(ctx.node.attr_int("dtype")?.unwrap_or(6), "dtype")?;
    if !matches!(to, DType::Int32 | DType::Int64) {
        return Err(op_err!(
            "Multinomial output must be int32 or int64, not {to}"
        ));
    }
    let samples = ctx.node.attr_int("sample_size")?.unwrap_or(1);
    let samples =
        usize::try_from(samples).map_err(|_| op_err!("sample_size {samples} is negative"))?;
    let seeds = SeedSource::from_attr(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (batch, classes) = match x.shape() {
            [b, c] => (*b, *c),
            s => return Err(op_err!("Multinomial needs a 2-D input but got shape {s:?}")),
        };
        if !x.dtype().is_float() {
            return Err(op_err!("Multinomial needs float logits, got {}", x.dtype()));
        }
        if classes == 0 && batch > 0 && samples > 0 {
            return Err(op_err!("Multinomial needs at least one class"));
        }
        let n = checked_numel(ctx, &[batch, samples], to)?;
        let logits = x.to_f64_vec()?;
        let mut rng = seeds.rng();
        let mut out = Vec::with_capacity(n);
        let mut cdf = vec![0f64; classes];
        for b in 0..batch {
            let row = &logits[b * classes..(b + 1) * classes];
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut acc = 0.0;
            for (c, &l) in row.iter().enumerate() {
                acc += (l - max).exp();
                cdf[c] = acc;
            }
            for _ in 0..samples {
                let r = rng.uniform() * acc;
                let k = cdf
                    .partition_point(|&v| v <= r)
                    .min(classes.saturating_sub(1));
                out.push(k as i64);
            }
        }
        let t = Tensor::from_vec(vec![batch, samples], out)?;
        one(cast_tensor(&t, to, true)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "Constant", build_constant);
    r.add("", "ConstantOfShape", build_constant_of_shape);
    r.add("", "Range", build_range);
    r.add("", "EyeLike", build_eye_like);
    r.add("", "RandomUniform", |c| build_random(c, false));
    r.add("", "RandomNormal", |c| build_random(c, true));
    r.add("", "RandomUniformLike", |c| build_random_like(c, false));
    r.add("", "RandomNormalLike", |c| build_random_like(c, true));
    r.add("", "Bernoulli", build_bernoulli);
    r.add("", "Multinomial", build_multinomial);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_range_lengths() {
        assert_eq!(int_range(0, 10, 3).unwrap().0, 4); // 0 3 6 9
        assert_eq!(int_range(10, 4, -3).unwrap().0, 2); // 10 7
        assert_eq!(int_range(0, 10, -1).unwrap().0, 0);
        assert!(int_range(0, 10, 0).is_err());
        assert_eq!(range_len(1.0, 2.0, 0.3).unwrap(), 4); // 1 1.3 1.6 1.9
        assert!(range_len(0.0, 1.0, 0.0).is_err());
    }

    /// Bernoulli cannot match ONNX's expected outputs bit for bit (they come
    /// from numpy's generator), so its distribution is checked instead.
    #[test]
    fn bernoulli_draws_follow_the_probabilities() {
        let node = crate::ir::Node {
            name: String::new(),
            op_type: "Bernoulli".into(),
            domain: String::new(),
            inputs: vec!["p".into()],
            outputs: vec!["y".into()],
            attrs: [("seed".to_string(), crate::ir::Attr::Float(3.0))].into(),
        };
        let opsets = Default::default();
        let planner = crate::plan::Planner {
            opsets: &opsets,
            registry: Registry::global(),
        };
        let kernel = build_bernoulli(&BuildCtx {
            node: &node,
            opset: 15,
            planner: &planner,
            const_inputs: &[],
            stood_in: Default::default(),
        })
        .unwrap();
        let n = 20_000;
        let p: Vec<f32> = (0..3 * n).map(|i| [0.0, 0.3, 1.0][i / n]).collect();
        let p = Value::Tensor(Tensor::from_vec(vec![3 * n], p).unwrap());
        let limits = crate::Limits::default();
        let draw = || {
            kernel
                .run(&RunCtx::detached(&limits), &[Some(&p)])
                .unwrap()
                .remove(0)
        };
        let y = draw();
        let v = y.as_tensor().unwrap().as_slice::<f32>().unwrap().to_vec();
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.0));
        assert!(v[..n].iter().all(|&x| x == 0.0), "p = 0 never draws 1");
        assert!(v[2 * n..].iter().all(|&x| x == 1.0), "p = 1 always draws 1");
        let mean = v[n..2 * n].iter().sum::<f32>() / n as f32;
        assert!((mean - 0.3).abs() < 0.015, "mean {mean} for p = 0.3");
        // a fixed seed repeats
        assert_eq!(draw(), y);
    }

    #[test]
    fn rng_is_in_range_and_repeatable() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        for _ in 0..100 {
            let x = a.uniform();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.uniform());
        }
        let mean: f64 = (0..10000).map(|_| a.normal()).sum::<f64>() / 10000.0;
        assert!(mean.abs() < 0.05);
    }

    #[test]
    fn generators_in_a_model() {
        use std::collections::BTreeMap;

        use crate::ir::{Attr, Graph, Model, Node, ValueInfo};
        use crate::{Limits, Session, SessionOptions};

        let node = |op: &str, ins: &[&str], outs: &[&str], attrs: Vec<(&str, Attr)>| Node {
            name: String::new(),
            op_type: op.into(),
            domain: String::new(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: outs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            ty: None,
        };
        let graph = Graph {
            nodes: vec![
                node("Range", &["a", "b", "d"], &["r"], vec![]),
                node(
                    "ConstantOfShape",
                    &["shape"],
                    &["c"],
                    vec![(
                        "value",
                        Attr::Tensor(Tensor::from_vec(vec![1], vec![7i32]).unwrap()),
                    )],
                ),
                node("EyeLike", &["c"], &["eye"], vec![("k", Attr::Int(1))]),
                node(
                    "RandomUniform",
                    &[],
                    &["u"],
                    vec![
                        ("shape", Attr::Ints(vec![3, 2])),
                        ("low", Attr::Float(2.0)),
                        ("high", Attr::Float(3.0)),
                        ("seed", Attr::Float(1.0)),
                    ],
                ),
            ],
            inputs: vec![vi("a"), vi("b"), vi("d"), vi("shape")],
            outputs: vec![vi("r"), vi("c"), vi("eye"), vi("u")],
            ..Graph::default()
        };
        let model = Model {
            opsets: BTreeMap::from([(String::new(), 17)]),
            graph,
            ..Model::default()
        };
        let feeds = |shape: Vec<i64>| -> Vec<(String, Value)> {
            vec![
                ("a".into(), Tensor::scalar(10i64).into()),
                ("b".into(), Tensor::scalar(3i64).into()),
                ("d".into(), Tensor::scalar(-3i64).into()),
                (
                    "shape".into(),
                    Tensor::from_vec(vec![shape.len()], shape).unwrap().into(),
                ),
            ]
        };
        let s = Session::from_model(model.clone(), SessionOptions::default()).unwrap();
        let out = s.run(feeds(vec![2, 3])).unwrap();
        let t = |v: &Value| v.as_tensor().unwrap().clone();
        assert_eq!(t(&out[0]).to_i64_vec().unwrap(), vec![10, 7, 4]);
        assert_eq!(t(&out[1]).as_slice::<i32>().unwrap(), &[7; 6]);
        assert_eq!(t(&out[2]).as_slice::<i32>().unwrap(), &[0, 1, 0, 0, 0, 1]);
        let u = t(&out[3]);
        assert_eq!(u.shape(), &[3, 2]);
        assert!(u
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .all(|x| (2.0..=3.0).contains(x)));
        // a shape over the memory limit is refused before anything is allocated
        let small = SessionOptions {
            limits: Limits {
                max_tensor_elements: 100,
                ..Limits::default()
            },
            ..SessionOptions::default()
        };
        let s = Session::from_model(model, small).unwrap();
        assert!(s.run(feeds(vec![1 << 20, 1 << 20])).is_err());
        assert!(s.run(feeds(vec![-1])).is_err());
    }
}
